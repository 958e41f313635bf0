"""`tse convert` and registry conversion of the published Waveformer format, on the authors' tiny fixture.

`../shared/fixtures/waveformer_official_tiny` holds a checkpoint and config in the published formats, a mixture
and the published model's output; the converted model must reproduce it (< 1e-5), whether converted by
`tse convert waveformer` or by `load_model` from a registry entry served by the local fake hub.
"""

from __future__ import annotations

import hashlib
import json
import pickle
from pathlib import Path

import hub_server
import numpy as np
import pytest
import soundfile as sf
import torch
from hub_server import FakeHub, go_offline
from typer.testing import CliRunner

from tse_cli import weights
from tse_cli.checkpoint import load_checkpoint
from tse_cli.classes import class_indices, multi_hot
from tse_cli.cli import app

runner = CliRunner()

fake_hub, hub_env = hub_server.fake_hub, hub_server.hub_env  # fixtures


@pytest.fixture(scope="module")
def official(fixtures: Path) -> Path:
    return fixtures / "waveformer_official_tiny"


def max_error(model: torch.nn.Module, official: Path) -> float:
    """Largest |model output - published output| on the fixture's mixture and query."""
    mixture, rate = sf.read(official / "mixture.wav", dtype="float32")
    expected, _ = sf.read(official / "expected.wav", dtype="float32")
    targets = json.loads((official / "meta.json").read_text())["targets"]
    query = torch.from_numpy(multi_hot(class_indices(targets))).float()[None]
    assert rate == model.sample_rate
    with torch.no_grad():
        out = model(torch.from_numpy(mixture)[None, None], query)[0, 0].numpy()
    return float(np.abs(out - expected).max())


def convert(official: Path, out: Path, *extra: str):
    args = ["convert", "waveformer", str(official / "checkpoint.pt"), "--config", str(official / "config.json")]
    return runner.invoke(app, [*args, "-o", str(out), *extra])


def test_cli_convert_reproduces_published_output(official: Path, tmp_path: Path):
    out = tmp_path / "ckpt"
    result = convert(official, out)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
    assert max_error(load_checkpoint(out), official) < 1e-5


def test_cli_convert_refuses_to_overwrite(official: Path, tmp_path: Path):
    out = tmp_path / "ckpt"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    refused = convert(official, out)
    assert refused.exit_code == 2 and "--overwrite" in refused.output
    assert (out / "keep.txt").read_text() == "mine"
    assert convert(official, out, "--overwrite").exit_code == 0
    assert (out / "config.json").is_file()


def test_cli_convert_bad_inputs_leave_nothing(official: Path, tmp_path: Path):
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"\x00not a checkpoint" * 10)
    cases = {
        "missing": ["convert", "waveformer", str(tmp_path / "nope.pt"), "--config", str(official / "config.json")],
        "corrupt": ["convert", "waveformer", str(corrupt), "--config", str(official / "config.json")],
        "bad config": ["convert", "waveformer", str(official / "checkpoint.pt"), "--config", str(corrupt)],
    }
    for label, args in cases.items():
        out = tmp_path / label.replace(" ", "_")
        result = runner.invoke(app, [*args, "-o", str(out)])
        assert result.exit_code == 1, (label, result.output)
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), (label, result.output)
        assert not out.exists(), label
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "no temporary folders left"


class _Exploit:
    def __reduce__(self):
        return (Path.touch, (Path(__file__).parent / "SHOULD_NOT_EXIST",))


def test_convert_never_runs_pickled_code(official: Path, tmp_path: Path):
    evil = tmp_path / "evil.pt"
    marker = Path(__file__).parent / "SHOULD_NOT_EXIST"
    with evil.open("wb") as f:
        pickle.dump({"model_state_dict": _Exploit()}, f, protocol=2)
    result = runner.invoke(
        app, ["convert", "waveformer", str(evil), "--config", str(official / "config.json"), "-o", str(tmp_path / "o")]
    )
    assert result.exit_code == 1
    assert not marker.exists(), "the checkpoint's pickled code ran"


# ---- through the registry and the fake hub ----


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_registry_entry_converts_once_and_works_offline(
    official: Path, hub_env, fake_hub: FakeHub, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    ckpt = fake_hub.add_url("wf/default_ckpt.pt", (official / "checkpoint.pt").read_bytes())
    config = fake_hub.add_hub_file("authors/waveformer", "default_config.json", (official / "config.json").read_bytes())
    registry = tmp_path / "reg.toml"
    registry.write_text(
        f"""[tiny-waveformer]
description = "the authors' tiny fixture"
architecture = "waveformer"
sample_rate = 44100
license = "MIT"
citation = "fixture"
format = "waveformer-published"
files.checkpoint_path = {{ source = "{ckpt}", sha256 = "{sha(official / "checkpoint.pt")}" }}
files.config_path = {{ source = "{config}", sha256 = "{sha(official / "config.json")}" }}
"""
    )
    monkeypatch.setenv("TSE_REGISTRY", str(registry))
    model = weights.load_model("tiny-waveformer")
    assert max_error(model, official) < 1e-5
    folder = weights.resolve("tiny-waveformer")
    assert hub_env["HF_HOME"] in str(folder) and (folder / "model.safetensors").is_file()
    stamp = (folder / "model.safetensors").stat().st_mtime_ns

    go_offline(monkeypatch)
    monkeypatch.setattr(weights, "convert_files", lambda *a, **k: pytest.fail("converted twice"))
    requests = len(fake_hub.requests)
    assert max_error(weights.load_model("tiny-waveformer"), official) < 1e-5
    assert (folder / "model.safetensors").stat().st_mtime_ns == stamp
    assert len(fake_hub.requests) == requests


def test_load_model_from_hub_repo_id(official: Path, hub_env, fake_hub: FakeHub, tmp_path: Path):
    out = tmp_path / "ckpt"
    assert convert(official, out).exit_code == 0
    for name in ("config.json", "model.safetensors"):
        fake_hub.add_hub_file("someone/tiny-waveformer", name, (out / name).read_bytes())
    model = weights.load_model("someone/tiny-waveformer@main")
    assert max_error(model, official) < 1e-5
    with pytest.raises(weights.WeightsError, match="not found.*not a registry name or a local directory"):
        weights.load_model("someone/absent")
