"""Checkpoint directories: what config.json holds, atomic replacement, one-line errors for broken directories
(the round trip of every architecture is in test_contract.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from tiny import tiny, tiny_config

from tse_cli.checkpoint import CheckpointError, load_checkpoint, save_checkpoint


@pytest.fixture
def saved(tmp_path: Path) -> tuple[torch.nn.Module, Path]:
    torch.manual_seed(0)
    model = tiny("wavemamba-small").eval()
    return model, save_checkpoint(model, tmp_path / "ck")


def test_config_names_the_model_and_replacing_is_atomic(saved, tmp_path: Path):
    _, directory = saved
    config = json.loads((directory / "config.json").read_text())
    assert config["arch"] == "wavemamba-small" and config["config"] == tiny_config("wavemamba-small")
    assert (config["format"], config["sample_rate"], config["clue"], len(config["classes"])) == (
        "tse-checkpoint",
        44100,
        "class",
        41,
    )
    save_checkpoint(tiny("wavemamba-small"), directory)  # replace in place
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"], "no staging or old copies left behind"
    load_checkpoint(directory)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"{not json", "cannot read a JSON config"),
        (b"\xff\xfe\x00garbage", "cannot read a JSON config"),
        (b"[1, 2]", "not a tse checkpoint config"),
        (b'{"format": "other"}', "not a tse checkpoint config"),
    ],
)
def test_broken_config_is_one_line_error_naming_the_file(saved, content: bytes, message: str):
    _, directory = saved
    (directory / "config.json").write_bytes(content)
    with pytest.raises(CheckpointError, match=message) as err:
        load_checkpoint(directory)
    assert "config.json" in str(err.value) and "\n" not in str(err.value)


def test_missing_files(saved, tmp_path: Path):
    _, directory = saved
    (directory / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="model.safetensors is missing"):
        load_checkpoint(directory)
    with pytest.raises(CheckpointError, match="no config.json"):
        load_checkpoint(tmp_path)
