"""Checkpoint directories: round trip, atomic replacement, one-line errors for broken directories."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tse_cli.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from tse_cli.models import create

TINY = {"enc_dim": 16, "dec_dim": 8, "num_enc_layers": 2}


@pytest.fixture
def saved(tmp_path: Path) -> tuple[torch.nn.Module, Path]:
    torch.manual_seed(0)
    model = create("wavemamba-small", **TINY).eval()
    return model, save_checkpoint(model, tmp_path / "ck")


def test_round_trip_is_exact_and_replaces_atomically(saved, tmp_path: Path):
    model, directory = saved
    config = json.loads((directory / "config.json").read_text())
    assert config["arch"] == "wavemamba-small" and config["config"] == TINY and config["sample_rate"] == 44100
    loaded = load_checkpoint(directory)
    mixture, query = torch.randn(1, 1, 640), torch.eye(41)[:1]
    with torch.no_grad():
        assert torch.equal(loaded(mixture, query), model(mixture, query))
    save_checkpoint(create("wavemamba-small", **TINY), directory)  # replace in place
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"], "no staging or old copies left behind"


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
