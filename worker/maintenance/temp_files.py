"""Deleting old files under the temp root, and nothing outside it.

The root is ``TEMP_DIR``; a caller may narrow the sweep to a directory under it, given relative
to the root or as an absolute path inside it. Anything outside the root (``/``, ``../..``, another
absolute path, a path through a symlink) is refused before a single file is touched, and so is a
root that is itself a symlink or belongs to another user (someone could have created
``/tmp/agent_service`` first, pointing at files they want gone).

The walk never follows a symlink, even one swapped in while it runs: it goes down with
``os.fwalk`` (each directory opened relative to its parent and checked to be the directory it
listed) and deletes with ``dir_fd``-relative calls, so no path is resolved again from the top. A
link is a file like any other here; removing it never touches its target. Directories are only
removed once empty and old themselves (so one a job just created survives); the root stays. An
error on one entry is counted and logged, and the sweep goes on.
"""

import logging
import os
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

logger = logging.getLogger("agent_service.maintenance.temp_files")


class TempDirOutsideRootError(ValueError):
    """The requested directory is not inside the configured temp root."""


class UnsafeTempRootError(ValueError):
    """``TEMP_DIR`` is a symlink, or is not a directory of the worker's own user."""


@dataclass(slots=True)
class TempSweep:
    root: str
    deleted_files: int = 0
    deleted_dirs: int = 0
    freed_bytes: int = 0
    kept_files: int = 0
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return {
            "root": self.root,
            "deleted_files": self.deleted_files,
            "deleted_dirs": self.deleted_dirs,
            "freed_bytes": self.freed_bytes,
            "kept_files": self.kept_files,
            "errors": len(self.errors),
        }


def _normal(path: Path) -> Path:
    return Path(os.path.normpath(path.absolute()))


def check_root(root: Path) -> Path:
    """``root``, normalised, if it is safe to sweep (it need not exist yet)."""
    normal = _normal(root)
    try:
        info = os.lstat(normal)
    except FileNotFoundError:
        return normal
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
        raise UnsafeTempRootError(f"TEMP_DIR {str(normal)!r} is a symlink or not a directory")
    if info.st_uid != os.geteuid():
        raise UnsafeTempRootError(f"TEMP_DIR {str(normal)!r} belongs to another user")
    return normal


def resolve_sweep_dir(root: Path, requested: str | None) -> Path:
    """The directory to sweep: the root itself, or ``requested`` if it lies inside the root and
    is reached without passing through a symlink."""
    base = check_root(root)
    if requested is None:
        return base
    if not isinstance(requested, str) or not requested.strip() or "\x00" in requested:
        raise TempDirOutsideRootError("temp_dir must be a non-empty path string")
    candidate = Path(requested)
    target = _normal(candidate if candidate.is_absolute() else base / candidate)
    if target != base and base not in target.parents:
        raise TempDirOutsideRootError(
            f"temp_dir {requested!r} is outside the temp root {str(base)!r}; "
            "only directories under TEMP_DIR may be cleaned"
        )
    step = base
    for part in target.relative_to(base).parts:
        step = step / part
        if step.is_symlink():
            raise TempDirOutsideRootError(
                f"temp_dir {requested!r} goes through a symlink ({str(step)!r}); "
                "only directories under TEMP_DIR may be cleaned"
            )
    return target


def sweep_old_files(root: Path, *, requested: str | None, max_age_hours: float) -> TempSweep:
    """Delete files under the sweep directory last modified more than ``max_age_hours`` ago."""
    if isinstance(max_age_hours, bool) or not isinstance(max_age_hours, int | float):
        raise TypeError("max_age_hours must be a number")
    if not max_age_hours > 0:
        raise ValueError("max_age_hours must be above 0")
    target = resolve_sweep_dir(root, requested)
    sweep = TempSweep(root=str(target))
    if not target.is_dir():
        return sweep
    cutoff = time.time() - max_age_hours * 3600
    old_dirs: set[str] = set()
    on_error = _walk_error(sweep)
    for current, dirnames, filenames, dir_fd in os.fwalk(target, onerror=on_error):
        if current != str(target) and os.fstat(dir_fd).st_mtime < cutoff:
            old_dirs.add(current)  # old before this sweep touched it
        # Links to directories are listed in dirnames; fwalk does not enter them.
        links = [name for name in dirnames if _is_link(name, dir_fd)]
        for name in (*filenames, *links):
            _delete_if_old(sweep, name, dir_fd=dir_fd, where=current, cutoff=cutoff)
    for current, dirnames, _, dir_fd in os.fwalk(target, topdown=False, onerror=on_error):
        for name in dirnames:
            if os.path.join(current, name) not in old_dirs:
                continue
            try:
                os.rmdir(name, dir_fd=dir_fd)
                sweep.deleted_dirs += 1
            except OSError:  # not empty (or gone): directories are left unless empty
                pass
    return sweep


def _is_link(name: str, dir_fd: int) -> bool:
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except OSError:
        return False


def _delete_if_old(sweep: TempSweep, name: str, *, dir_fd: int, where: str, cutoff: float) -> None:
    try:
        info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        if info.st_mtime >= cutoff:
            sweep.kept_files += 1
            return
        os.unlink(name, dir_fd=dir_fd)  # a symlink is unlinked itself; its target is never touched
    except FileNotFoundError:
        return
    except OSError as exc:
        _note(sweep, os.path.join(where, name), exc)
        return
    sweep.deleted_files += 1
    if stat.S_ISREG(info.st_mode):
        sweep.freed_bytes += info.st_size


def _note(sweep: TempSweep, path: str, exc: OSError) -> None:
    sweep.errors.append(path)
    logger.warning("temp_cleanup_error path=%s error=%r", path, exc)


def _walk_error(sweep: TempSweep) -> Callable[[OSError], None]:
    def on_error(exc: OSError) -> None:
        _note(sweep, exc.filename or "?", exc)

    return on_error
