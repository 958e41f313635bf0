"""Checkpoint directories: what config.json holds, atomic replacement, one-line errors for broken directories
(the round trip of every architecture is in test_contract.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from tiny import tiny, tiny_config

from tse_cli.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from tse_cli.models import create


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


def _edit_config(directory: Path, **config) -> None:
    path = directory / "config.json"
    saved = json.loads(path.read_text())
    path.write_text(json.dumps({**saved, "config": {**saved["config"], **config}}))


def test_weights_of_other_shapes_are_one_line_naming_the_file(saved, tmp_path: Path):
    _, directory = saved
    save_checkpoint(tiny("wavemamba-small", enc_dim=48), tmp_path / "other")
    (directory / "model.safetensors").write_bytes((tmp_path / "other" / "model.safetensors").read_bytes())
    with pytest.raises(CheckpointError, match=r"model.safetensors: weights do not match wavemamba-small") as err:
        load_checkpoint(directory)
    assert "wrong shape: " in str(err.value) and "\n" not in str(err.value)
    _edit_config(tmp_path / "other", num_enc_layers=3)  # a layer the file does not have
    with pytest.raises(CheckpointError, match=r"missing: .*dcc_2"):
        load_checkpoint(tmp_path / "other")


@pytest.mark.parametrize("keep", [0, 7, 100, 0.5])
def test_a_cut_weights_file_is_one_line(saved, keep: float):
    _, directory = saved
    data = (directory / "model.safetensors").read_bytes()
    (directory / "model.safetensors").write_bytes(data[: int(len(data) * keep) if isinstance(keep, float) else keep])
    with pytest.raises(CheckpointError, match="not a complete safetensors file.*truncated or damaged") as err:
        load_checkpoint(directory)
    assert str(directory / "model.safetensors") in str(err.value) and "\n" not in str(err.value)


def test_absurd_sizes_are_refused_before_anything_is_allocated(saved):
    from tse_cli.models.budget import ModelSizeError

    _, directory = saved
    _edit_config(directory, enc_dim=2_000_000, dec_dim=8)  # trillions of parameters: terabytes
    with pytest.raises(CheckpointError, match=r"config.json: wavemamba-small with .* need [\d.]+ [TP]B, more th") as e:
        load_checkpoint(directory)
    assert "\n" not in str(e.value)
    with pytest.raises(ModelSizeError, match="more than 10,000 layers and modules"):
        create("av-sepformer-small", intra_layers=1_000_000)  # gives up after 10,000 modules, on shapes only
    with pytest.raises(ValueError, match="num_enc_layers must be 1 to 32"):
        create("waveformer-small", num_enc_layers=10_000_000)  # (its dilations 2^i would fill memory first)


def test_unknown_or_refused_arguments_are_one_line():
    with pytest.raises(ValueError, match=r"waveformer-small: unknown argument\(s\) bogus; known: .*enc_dim"):
        create("waveformer-small", bogus=1)
    with pytest.raises(ValueError, match="waveformer-small with enc_dim='wide'") as err:
        create("waveformer-small", enc_dim="wide")
    assert "\n" not in str(err.value)


def test_models_info_refuses_absurd_sizes_at_once(saved):
    from typer.testing import CliRunner

    from tse_cli.cli import app

    _, directory = saved
    _edit_config(directory, enc_dim=2_000_000, dec_dim=8)
    result = CliRunner().invoke(app, ["models", "info", str(directory)])
    assert result.exit_code == 1 and "check its sizes" in result.output and "config.json" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_the_size_check_does_not_import_torch_dynamo():
    """The shapes-only model that checks a checkpoint's sizes before loading it does no arithmetic on meta
    tensors (it would import torch._dynamo: about 3 s of every `tse extract` start); DPM-TSE is left out, since
    diffusers imports torch._dynamo itself."""
    import subprocess
    import sys

    archs = ["waveformer-large", "wavemamba-large", "av-sepformer-large", "av-sepmamba-large"]
    code = (
        "import sys\nfrom tse_cli.models import budget\n"
        f"for arch in {archs!r}:\n    budget.check_fits(arch, {{}})\n"
        "print(sorted(m for m in sys.modules if m.startswith('torch._dynamo'))[:1])"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
