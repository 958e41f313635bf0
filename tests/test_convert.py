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


def serve_published(official: Path, fake_hub: FakeHub, registry: Path) -> Path:
    """A registry `tiny-waveformer` of the fixture's published files, served by the fake hub: the checkpoint at
    a plain URL, the config in a Hub repo."""
    ckpt = fake_hub.add_url("wf/default_ckpt.pt", (official / "checkpoint.pt").read_bytes())
    config = fake_hub.add_hub_file("authors/waveformer", "default_config.json", (official / "config.json").read_bytes())
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
    return registry


def test_registry_entry_converts_once_and_works_offline(
    official: Path, hub_env, fake_hub: FakeHub, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    monkeypatch.setenv("TSE_REGISTRY", str(serve_published(official, fake_hub, tmp_path / "reg.toml")))
    from tse_cli.model_info import describe

    assert "parameters" not in describe("tiny-waveformer"), "no size before its config is here"
    model = weights.load_model("tiny-waveformer")
    assert max_error(model, official) < 1e-5
    sized = describe("tiny-waveformer")  # now from the downloaded config, as the published file says
    assert sized["parameters"] == json.loads((official / "meta.json").read_text())["params"]
    assert sized["config"]["enc_dim"] == 64 and sized["architecture"] == "waveformer"
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


# ---- the authors' experiments (experiments.zip): best epoch as their eval.py picks it ----

SI_SNRI = [1.0, 3.0, 2.5, 3.0, 2.0]  # epochs 0..4: the first of the two best is epoch 1


def numpy1_pickle(path: Path) -> None:
    """Rename numpy 2's scalar reconstructor to numpy 1's in a torch file's pickle, as the authors' files (saved
    in 2022 with numpy 1) name it; the zip's members are rewritten unchanged otherwise."""
    import io
    import zipfile

    with zipfile.ZipFile(path) as original:
        members = [(info.filename, original.read(info)) for info in original.infolist()]
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as rewritten:
        for name, data in members:
            if name.endswith("data.pkl"):
                assert b"numpy._core.multiarray\nscalar" in data
                data = data.replace(b"numpy._core.multiarray\nscalar", b"numpy.core.multiarray\nscalar")
            rewritten.writestr(name, data)
    path.write_bytes(buffer.getvalue())


def epoch_state(official: Path, epoch: int) -> dict[str, torch.Tensor]:
    """The fixture's weights, shifted by a different amount per epoch so that each epoch's file is recognisable."""
    state = torch.load(official / "checkpoint.pt", weights_only=True)["model_state_dict"]
    return {
        k: v + 0.01 * epoch if v.is_floating_point() and k != "mask_gen.decoder.pos_enc.pe" else v
        for k, v in state.items()
    }


def write_experiment(folder: Path, official: Path, scores: list[float] = SI_SNRI, config: bool = True) -> None:
    """An experiment folder in the authors' layout: `<N>.pt` per epoch (their save_checkpoint's dict, metrics as
    numpy float64 lists of the epochs so far) and, with `config`, their config.json (base_metric included)."""
    folder.mkdir(parents=True)
    published = json.loads((official / "config.json").read_text())
    if config:
        (folder / "config.json").write_text(
            json.dumps(published | {"base_metric": "scale_invariant_signal_noise_ratio"})
        )
    for epoch in range(len(scores)):
        metrics = {
            "snr": [np.float64(s + 0.5) for s in scores[: epoch + 1]],
            "scale_invariant_signal_noise_ratio": [np.float64(s) for s in scores[: epoch + 1]],
        }
        checkpoint = {
            "epoch": epoch,
            "model_state_dict": epoch_state(official, epoch),
            "optim_state_dict": None,
            "lr_sched_state_dict": None,
            "train_metrics": metrics,
            "val_metrics": metrics,
        }
        torch.save(checkpoint, folder / f"{epoch}.pt")
        numpy1_pickle(folder / f"{epoch}.pt")


def converted_epoch(out: Path, official: Path) -> int:
    """Which epoch's weights the checkpoint directory `out` holds."""
    state = load_checkpoint(out).state_dict()
    for epoch in range(len(SI_SNRI)):
        expected = epoch_state(official, epoch)
        if all(torch.equal(state[k], v) for k, v in expected.items()):
            return epoch
    raise AssertionError("the converted weights are no epoch's")


def test_convert_experiment_folder_picks_the_best_epoch(official: Path, tmp_path: Path):
    experiment = tmp_path / "dcc_tf_ckpt_E64_4_D32_1"
    write_experiment(experiment, official)
    out = tmp_path / "wf"
    result = runner.invoke(app, ["convert", "waveformer", str(experiment), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert converted_epoch(out, official) == 1
    assert "epoch 1" in result.output and "3.00" in result.output
    origin = json.loads((out / "config.json").read_text())["converted_from"]
    assert origin["experiment"] == experiment.name and origin["epoch"] == 1 and origin["epochs"] == 5
    assert origin["val_scale_invariant_signal_noise_ratio"] == 3.0

    asked = runner.invoke(app, ["convert", "waveformer", str(experiment), "--epoch", "3", "-o", str(tmp_path / "e3")])
    assert asked.exit_code == 0, asked.output
    assert converted_epoch(tmp_path / "e3", official) == 3


def test_convert_experiments_zip_and_folder_of_several(official: Path, tmp_path: Path):
    import zipfile

    root = tmp_path / "experiments"
    write_experiment(root / "run_a", official)
    write_experiment(root / "run_b", official, scores=[0.5, 0.7, 4.0, 1.0, 0.1])
    archive = tmp_path / "experiments.zip"
    with zipfile.ZipFile(archive, "w") as z:  # as their experiments.zip: <exp>/<N>.pt (+ config.json)
        for file in sorted(root.rglob("*.*")):
            z.write(file, file.relative_to(root).as_posix())

    for source in (root, archive):
        several = runner.invoke(app, ["convert", "waveformer", str(source), "-o", str(tmp_path / "x")])
        assert several.exit_code == 1
        assert several.output.strip().splitlines() == [
            f"error: {source}: 2 experiments; choose one with --experiment (run_a, run_b)"
        ]
        out = tmp_path / f"b_{source.suffix or 'dir'}"
        chosen = runner.invoke(app, ["convert", "waveformer", str(source), "--experiment", "run_b", "-o", str(out)])
        assert chosen.exit_code == 0, chosen.output
        assert converted_epoch(out, official) == 2
    assert not list(tmp_path.glob("x*")), "nothing written for a refused conversion"


def test_convert_experiment_problems_are_one_line(official: Path, tmp_path: Path):
    bare = tmp_path / "bare"
    write_experiment(bare, official, config=False)
    (bare / "1.pt").unlink()  # the best epoch's file is gone
    cases = {
        "no config": (["convert", "waveformer", str(bare)], "has no config.json; pass --config"),
        "best missing": (
            ["convert", "waveformer", str(bare), "--config", str(official / "config.json")],
            "has no 1.pt (epochs 0..4 present)",
        ),
        "no experiment": (["convert", "waveformer", str(tmp_path / "empty")], "no experiment in it"),
        "unknown name": (["convert", "waveformer", str(bare), "--experiment", "nope"], "no experiment 'nope'"),
    }
    (tmp_path / "empty").mkdir()
    for label, (args, message) in cases.items():
        out = tmp_path / label.replace(" ", "_")
        result = runner.invoke(app, [*args, "-o", str(out)])
        assert result.exit_code == 1, (label, result.output)
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], (label, result.output)
        assert not out.exists(), label
    ok = runner.invoke(
        app,
        [
            "convert",
            "waveformer",
            str(bare),
            "--config",
            str(official / "config.json"),
            "--epoch",
            "2",
            "-o",
            str(tmp_path / "ok"),
        ],
    )
    assert ok.exit_code == 0, ok.output
    assert converted_epoch(tmp_path / "ok", official) == 2
