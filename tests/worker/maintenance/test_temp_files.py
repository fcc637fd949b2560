"""The temp sweep on a real filesystem: old files go, nothing outside the root is touched."""

import os
import time
from pathlib import Path

import pytest

from worker.maintenance.temp_files import (
    TempDirOutsideRootError,
    UnsafeTempRootError,
    resolve_sweep_dir,
    sweep_old_files,
)

DAY = 86_400


def _file(path: Path, *, age: float, content: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    when = time.time() - age
    os.utime(path, (when, when))
    return path


def _age(path: Path, age: float) -> None:
    when = time.time() - age
    os.utime(path, (when, when), follow_symlinks=False)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    path = tmp_path / "agent_service"
    path.mkdir()
    return path


def test_old_files_go_and_the_rest_stay(root: Path) -> None:
    old = _file(root / "a" / "old.bin", age=2 * DAY, content=b"12345")
    old_top = _file(root / "old-top.txt", age=25 * 3600, content=b"123")
    fresh = _file(root / "a" / "fresh.bin", age=3600)
    fresh_top = _file(root / "fresh-top.txt", age=60)

    sweep = sweep_old_files(root, requested=None, max_age_hours=24)

    assert not old.exists()
    assert not old_top.exists()
    assert fresh.exists()
    assert fresh_top.exists()
    assert (sweep.deleted_files, sweep.freed_bytes, sweep.kept_files) == (2, 8, 2)
    assert sweep.errors == []


def test_directories_are_left_unless_empty_and_old(root: Path) -> None:
    _file(root / "emptied" / "old.bin", age=2 * DAY)
    _age(root / "emptied", 2 * DAY)
    (root / "new-empty").mkdir()
    (root / "old-empty" / "nested").mkdir(parents=True)
    _age(root / "old-empty" / "nested", 2 * DAY)
    _age(root / "old-empty", 2 * DAY)
    _file(root / "busy" / "fresh.bin", age=60)
    _age(root / "busy", 2 * DAY)

    sweep = sweep_old_files(root, requested=None, max_age_hours=24)

    assert not (root / "emptied").exists()
    assert not (root / "old-empty").exists()
    assert (root / "new-empty").is_dir()
    assert (root / "busy" / "fresh.bin").exists()
    assert root.is_dir()
    assert sweep.deleted_dirs == 3


def test_a_subdirectory_can_be_swept_alone(root: Path) -> None:
    inside = _file(root / "jobs" / "old.bin", age=2 * DAY)
    elsewhere = _file(root / "other" / "old.bin", age=2 * DAY)

    sweep_old_files(root, requested="jobs", max_age_hours=24)
    sweep_old_files(root, requested=str(root / "jobs"), max_age_hours=24)

    assert not inside.exists()
    assert elsewhere.exists()


@pytest.mark.parametrize("requested", ["/", "../..", "..", "/etc", "jobs/../../x", ""])
def test_paths_outside_the_root_are_refused_before_anything_is_deleted(
    root: Path, requested: str
) -> None:
    old = _file(root / "old.bin", age=2 * DAY)

    with pytest.raises(TempDirOutsideRootError):
        sweep_old_files(root, requested=requested, max_age_hours=24)

    assert old.exists()


def test_a_symlinked_directory_pointing_outside_is_refused(root: Path, tmp_path: Path) -> None:
    outside = _file(tmp_path / "outside" / "precious.txt", age=10 * DAY)
    (root / "escape").symlink_to(outside.parent, target_is_directory=True)

    with pytest.raises(TempDirOutsideRootError):
        resolve_sweep_dir(root, "escape")
    sweep_old_files(root, requested=None, max_age_hours=24)

    assert outside.exists()


def test_symlinks_inside_the_root_are_never_followed(root: Path, tmp_path: Path) -> None:
    outside_file = _file(tmp_path / "outside" / "precious.txt", age=10 * DAY)
    outside_dir_file = _file(tmp_path / "outside-dir" / "also-precious.txt", age=10 * DAY)
    link = root / "link-to-file"
    link.symlink_to(outside_file)
    _age(link, 2 * DAY)
    dir_link = root / "link-to-dir"
    dir_link.symlink_to(outside_dir_file.parent, target_is_directory=True)
    _age(dir_link, 2 * DAY)

    sweep = sweep_old_files(root, requested=None, max_age_hours=24)

    assert outside_file.exists()
    assert outside_dir_file.exists()
    assert not link.is_symlink()  # the stale link itself is removed, its target kept
    assert not dir_link.is_symlink()
    assert sweep.deleted_files == 2


def test_an_error_on_one_file_does_not_stop_the_rest(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stuck = _file(root / "a" / "stuck.bin", age=2 * DAY)
    others = [_file(root / "a" / f"old-{i}.bin", age=2 * DAY) for i in range(3)]
    real_unlink = os.unlink

    def unlink(path: str, *, dir_fd: int | None = None) -> None:
        if path == stuck.name:  # as a file on a read-only mount, or held by another user
            raise PermissionError(13, "Permission denied", path)
        real_unlink(path, dir_fd=dir_fd)

    monkeypatch.setattr(os, "unlink", unlink)

    sweep = sweep_old_files(root, requested=None, max_age_hours=24)

    assert stuck.exists()
    assert not any(path.exists() for path in others)
    assert sweep.errors == [str(stuck)]
    assert sweep.deleted_files == 3


@pytest.mark.parametrize("bad", [0, -1, "24", True, None])
def test_max_age_must_be_a_positive_number(root: Path, bad: object) -> None:
    with pytest.raises((TypeError, ValueError)):
        sweep_old_files(root, requested=None, max_age_hours=bad)  # type: ignore[arg-type]


def test_a_root_that_is_a_symlink_is_refused(tmp_path: Path) -> None:
    precious = _file(tmp_path / "precious" / "archive.ndjson.gz", age=10 * DAY)
    root = tmp_path / "agent_service"
    root.symlink_to(precious.parent, target_is_directory=True)

    with pytest.raises(UnsafeTempRootError, match="symlink"):
        sweep_old_files(root, requested=None, max_age_hours=24)

    assert precious.exists()


def test_a_root_of_another_user_is_refused(root: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("only root can give a directory to another user")
    planted = _file(root / "old.bin", age=10 * DAY)
    os.chown(root, 65534, 65534)

    with pytest.raises(UnsafeTempRootError, match="another user"):
        sweep_old_files(root, requested=None, max_age_hours=24)

    assert planted.exists()


def test_a_requested_path_through_a_symlink_is_refused(root: Path, tmp_path: Path) -> None:
    outside = _file(tmp_path / "outside" / "sub" / "keep.txt", age=10 * DAY)
    (root / "link").symlink_to(outside.parent.parent, target_is_directory=True)

    with pytest.raises(TempDirOutsideRootError, match="symlink"):
        sweep_old_files(root, requested="link/sub", max_age_hours=24)

    assert outside.exists()


def test_a_directory_swapped_for_a_symlink_mid_sweep_is_not_followed(
    root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    outside = _file(tmp_path / "outside" / "keep.txt", age=10 * DAY)
    _file(root / "a" / "old.bin", age=10 * DAY)
    _file(root / "b" / "old.bin", age=10 * DAY)
    real_stat = os.stat
    swapped: list[bool] = []

    def stat_then_swap(path: object, *args: object, **kwargs: object) -> os.stat_result:
        # Once the walk has listed the root, replace "b" by a link to the outside.
        if not swapped and path == "old.bin":
            swapped.append(True)
            (root / "b" / "old.bin").unlink()
            (root / "b").rmdir()
            (root / "b").symlink_to(outside.parent, target_is_directory=True)
        return real_stat(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "stat", stat_then_swap)

    sweep_old_files(root, requested=None, max_age_hours=24)

    assert swapped
    assert outside.exists()
