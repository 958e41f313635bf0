"""A full disk is called "No space left on device", in one line, where `tse train` and `tse mix` write (tse
extract's are in test_extract_reliability.py), also where a library hides the errno in its text."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest
from safetensors import SafetensorError
from test_train import MODEL_ARGS, write_scene_set
from typer.testing import CliRunner

from tse_cli.cli import app
from tse_cli.errors import as_os_error, errno_of, os_reason


def test_the_errno_behind_a_library_error_is_named():
    safetensors_text = "Error while serializing: I/O error: No space left on device (os error 28)"
    assert errno_of(SafetensorError(safetensors_text)) == errno.ENOSPC
    assert errno_of(RuntimeError("IoError(Os { code: 13, kind: PermissionDenied })")) == errno.EACCES
    assert os_reason(SafetensorError(safetensors_text)) == "No space left on device"
    assert os_reason(ValueError("bad\nthing")) == "bad" and errno_of(ValueError("bad")) is None
    with pytest.raises(OSError) as err, as_os_error():
        raise SafetensorError(safetensors_text)
    assert err.value.errno == errno.ENOSPC
    with pytest.raises(ValueError), as_os_error():  # no errno: left as it is
        raise ValueError("not a disk problem")


def test_training_on_a_full_disk_says_so(tmp_path: Path, full_disk: Path):
    data = write_scene_set(tmp_path / "set", {"train": 4, "val": 1})
    args = ["train", "waveformer-small", "--data", str(data), "-o", str(full_disk / "run"), "--max-steps", "2"]
    args += [a for k, v in MODEL_ARGS.items() for a in ("-a", f"{k}={v}")] + ["--batch-size", "2", "-q"]
    result = CliRunner().invoke(app, [*args, "--num-workers", "0"])
    assert result.exit_code == 1, result.output
    (line,) = result.stderr.strip().splitlines()
    assert "cannot write the run (No space left on device)" in line and "Traceback" not in result.output
