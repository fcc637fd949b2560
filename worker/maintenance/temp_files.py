"""Deleting old files under the temp root, and nothing outside it.

The root is ``TEMP_DIR``; a caller may narrow the sweep to a directory under it, given relative
to the root or as an absolute path inside it. Anything that resolves outside the root (``/``,
``../..``, another absolute path, a symlink pointing out) is refused before a single file is
touched. The walk never follows symlinks: a link is a file like any other here, and removing it
never touches its target. Directories are only removed once empty (and old themselves, so a
directory a job just created survives); the root itself stays. An error on one entry is counted
and logged, and the sweep goes on.
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


def resolve_sweep_dir(root: Path, requested: str | None) -> Path:
    """The directory to sweep: ``root`` itself, or ``requested`` if it lies inside ``root``."""
    real_root = root.resolve()
    if requested is None:
        return real_root
    if not isinstance(requested, str) or not requested.strip() or "\x00" in requested:
        raise TempDirOutsideRootError("temp_dir must be a non-empty path string")
    candidate = Path(requested)
    target = (candidate if candidate.is_absolute() else real_root / candidate).resolve()
    if target != real_root and real_root not in target.parents:
        raise TempDirOutsideRootError(
            f"temp_dir {requested!r} is outside the temp root {str(real_root)!r}; "
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
    directories: list[tuple[str, float]] = []
    for current, dirnames, filenames in os.walk(target, onerror=_walk_error(sweep)):
        if current != str(target):
            try:
                directories.append((current, os.lstat(current).st_mtime))
            except OSError as exc:
                _note(sweep, current, exc)
        # Links to directories show up in dirnames; os.walk does not enter them.
        links = [name for name in dirnames if os.path.islink(os.path.join(current, name))]
        for name in (*filenames, *links):
            _delete_if_old(sweep, os.path.join(current, name), cutoff)
    for path, mtime in sorted(directories, key=lambda item: item[0].count(os.sep), reverse=True):
        if mtime >= cutoff:
            continue
        try:
            os.rmdir(path)
            sweep.deleted_dirs += 1
        except OSError:  # not empty (or already gone): directories are left unless empty
            pass
    return sweep


def _delete_if_old(sweep: TempSweep, path: str, cutoff: float) -> None:
    try:
        info = os.lstat(path)
        if info.st_mtime >= cutoff:
            sweep.kept_files += 1
            return
        os.unlink(path)  # a symlink is unlinked itself; its target is never touched
    except FileNotFoundError:
        return
    except OSError as exc:
        _note(sweep, path, exc)
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
