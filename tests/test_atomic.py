"""Atomic writes (one temporary-name policy for every writer) and removal of stale temporaries."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tse_cli.atomic import (
    atomic_dir,
    atomic_file,
    create_temp,
    remove_stale,
    staging,
    temp_owner,
    write_bytes,
    write_json,
)


def dead_pid() -> int:
    """The pid of a process that has exited (so no process of this machine has it for now)."""
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, check=True)
    return int(child.stdout)


def test_temporary_names_are_recognisable_and_unique(tmp_path: Path) -> None:
    a, b = create_temp(tmp_path / "out.wav"), create_temp(tmp_path / "out.wav")
    assert a != b and a.is_file() and b.is_file()
    assert a.name.startswith(".out.wav.tse-") and a.suffix == ".part"
    assert temp_owner(a.name) == os.getpid()
    assert [temp_owner(n) for n in ("out.wav", ".out.wav.part", ".x.tse-12-0123abcd.tmp", ".x.tse-1-xyz.part")] == [
        None
    ] * 4
    long = create_temp(tmp_path / ("n" * 250 + ".wav"))  # the final name fits in 255 bytes, so must the temporary
    assert len(long.name.encode()) <= 255 and temp_owner(long.name) == os.getpid()


def test_atomic_file_replaces_only_on_success(tmp_path: Path) -> None:
    path = tmp_path / "x.json"
    write_json(path, {"a": 1})
    with pytest.raises(KeyboardInterrupt), atomic_file(path) as tmp:
        tmp.write_text("half")
        raise KeyboardInterrupt
    assert path.read_text() == '{\n "a": 1\n}\n'
    write_bytes(path, b"new")
    assert path.read_bytes() == b"new" and [p.name for p in tmp_path.iterdir()] == ["x.json"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "x.wav"
    write_bytes(path, b"old")
    with pytest.raises(TypeError):
        write_bytes(path, "not bytes")  # type: ignore[arg-type]
    assert path.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["x.wav"]


def test_staging_creates_temporaries_below_its_root_in_one_private_folder(tmp_path: Path) -> None:
    root, other = tmp_path / "set", tmp_path / "elsewhere"
    (root / "train").mkdir(parents=True)
    other.mkdir()
    with staging(root) as folder:
        assert folder.parent == root and temp_owner(folder.name) == os.getpid()
        assert create_temp(root / "train" / "a.wav").parent == folder
        assert create_temp(other / "b.wav").parent == other, "outside the root: beside the file"
        write_bytes(root / "train" / "a.wav", b"x")
        assert (root / "train" / "a.wav").read_bytes() == b"x" and list((root / "train").iterdir()) == [
            root / "train" / "a.wav"
        ]
    assert not folder.exists() and create_temp(root / "c.wav").parent == root, "beside again after the block"


def test_atomic_dir_swaps_whole_folders(tmp_path: Path) -> None:
    target = tmp_path / "ckpt"
    with atomic_dir(target) as staging:
        (staging / "a").write_text("1")
    with pytest.raises(RuntimeError), atomic_dir(target) as staging:
        (staging / "a").write_text("2")
        raise RuntimeError("killed")
    assert (target / "a").read_text() == "1"
    with atomic_dir(target) as staging:
        (staging / "b").write_text("3")
    assert sorted(p.name for p in target.iterdir()) == ["b"] and [p.name for p in tmp_path.iterdir()] == ["ckpt"]


def test_remove_stale_takes_only_dead_writers_temporaries(tmp_path: Path) -> None:
    dead = dead_pid()
    (tmp_path / "sub").mkdir()
    stale = [tmp_path / f".a.wav.tse-{dead}-0123abcd.part", tmp_path / f"sub/.b.flac.tse-{dead}-89abcdef.part"]
    for path in stale:
        path.write_bytes(b"partial")
    stale_dir = tmp_path / f".last.tse-{dead}-00000000.part"
    (stale_dir / "inner").mkdir(parents=True)
    (stale_dir / "inner" / f".c.tse-{dead}-11111111.part").write_bytes(b"")
    kept = [
        create_temp(tmp_path / "mine.wav"),  # this process is writing it
        tmp_path / f".live.wav.tse-{os.getppid()}-0123abcd.part",  # a running process's
        tmp_path / f".other.{dead}.part",  # not tse's naming
        tmp_path / "a.wav.part",
        tmp_path / "a.wav",
    ]
    for path in kept[1:]:
        path.write_bytes(b"keep")
    assert remove_stale(tmp_path) == sorted([stale[0], stale_dir])
    assert stale[1].exists(), "not recursive unless asked"
    assert remove_stale(tmp_path, recursive=True) == [stale[1]]
    assert all(p.exists() for p in kept) and remove_stale(tmp_path / "missing") == []
