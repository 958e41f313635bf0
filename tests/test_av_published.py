"""The published AV-SepFormer, reproduced from its published checkpoint format (the authors' tiny fixture).

`../shared/fixtures/avsepformer_official_tiny` holds lin9x/AV-Sepformer's `Cross_Sepformer` (N 16, 8 heads, FFN 32,
2 + 2 layers, 2 dual blocks; random weights, BatchNorm statistics set) as its training script saves it (a bare
state_dict), 2 s of a 16 kHz mixture, 50 lip-embedding frames, and the published model's eval-mode output in
float32 and float64. Converted with `tse convert av-sepformer` exactly as a user would, our model must compute the
same function: the README's 1e-5 in float32, and to rounding in float64 (a different algorithm shows at ~1e-8).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from tse_cli.checkpoint import load_checkpoint, read_config
from tse_cli.cli import app
from tse_cli.models.avsepformer import load_published

runner = CliRunner()


@pytest.fixture(scope="module")
def official(fixtures: Path) -> Path:
    return fixtures / "avsepformer_official_tiny"


@pytest.fixture(scope="module")
def io(official: Path) -> dict[str, torch.Tensor]:
    return load_file(official / "io.safetensors")


@pytest.fixture(scope="module")
def converted(official: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`tse convert av-sepformer checkpoint.pt -o DIR` through the real CLI."""
    out = tmp_path_factory.mktemp("av-published") / "ckpt"
    result = runner.invoke(app, ["convert", "av-sepformer", str(official / "checkpoint.pt"), "-o", str(out)])
    assert result.exit_code == 0, result.output
    return out


def run(model: torch.nn.Module, io: dict[str, torch.Tensor], dtype: torch.dtype) -> torch.Tensor:
    """The model on the fixture's mixture (1, 32000) and lip embeddings (1, 50, 512) -> (1, 32000)."""
    model = model.to(dtype)
    with torch.no_grad():
        return model(io["mixture"].to(dtype)[:, None], io["visual"].to(dtype))[:, 0]


def test_converted_checkpoint_is_the_published_model(official: Path, converted: Path, io: dict[str, torch.Tensor]):
    meta = json.loads((official / "meta.json").read_text())
    assert sorted(p.name for p in converted.iterdir()) == ["config.json", "model.safetensors"]
    config = read_config(converted)
    assert (config["sample_rate"], config["clue"]) == (16000, "visual")
    assert {k: config["config"][k] for k in ("d_model", "d_ffn", "intra_layers", "inter_layers", "blocks")} == {
        "d_model": 16,
        "d_ffn": 32,
        "intra_layers": 2,
        "inter_layers": 2,
        "blocks": 2,
    }
    model = load_checkpoint(converted)
    assert sum(p.numel() for p in model.parameters()) == meta["params"]
    assert len(model.state_dict()) == meta["state_dict_tensors"]
    assert io["visual"].shape[1] == 50  # fewer frames than the model's 52 chunks: it repeats the last one
    assert (run(model, io, torch.float32) - io["output"]).abs().max() < 1e-5
    assert (run(model, io, torch.float64) - io["output_float64"]).abs().max() < 1e-12


def test_library_reader_matches_the_cli(official: Path, converted: Path, io: dict[str, torch.Tensor]):
    published = run(load_published(official / "checkpoint.pt"), io, torch.float32)
    assert torch.equal(published, run(load_checkpoint(converted), io, torch.float32))


def test_cli_extract_reproduces_the_published_output(converted: Path, io: dict[str, torch.Tensor], tmp_path: Path):
    wav, npy, out = tmp_path / "mix.wav", tmp_path / "mix.npy", tmp_path / "out.wav"
    sf.write(wav, io["mixture"][0].numpy(), 16000, subtype="FLOAT")
    np.save(npy, io["visual"][0].numpy())
    result = runner.invoke(
        app, ["extract", "--checkpoint", str(converted), str(wav), "--visual", str(npy), "-o", str(out)]
    )
    assert result.exit_code == 0, result.output
    estimate, rate = sf.read(out, dtype="float32")
    assert rate == 16000
    assert np.abs(estimate - io["output"][0].numpy()).max() < 1e-5
