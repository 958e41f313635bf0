"""Waveformer: the published fixture reproduced, strict loading of the published format with clear errors,
exact parameter counts, registry entries, the tanh output and shape errors (the contract every architecture
keeps is in test_contract.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import soundfile as sf
import torch
from tiny import tiny, tiny_config

from tse_cli.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from tse_cli.classes import FSD_CLASSES
from tse_cli.models import create
from tse_cli.models.waveformer import Waveformer, load_published, read_published_config


@pytest.fixture(scope="module")
def official(fixtures: Path) -> Path:
    return fixtures / "waveformer_official_tiny"


def _query(targets: list[str]) -> torch.Tensor:
    query = torch.zeros(1, len(FSD_CLASSES))
    query[0, [FSD_CLASSES.index(t) for t in targets]] = 1.0
    return query


def test_reproduces_published_output(official: Path) -> None:
    model = load_published(official / "checkpoint.pt", official / "config.json")
    meta = json.loads((official / "meta.json").read_text())
    mixture, rate = sf.read(official / "mixture.wav", dtype="float32")
    expected, _ = sf.read(official / "expected.wav", dtype="float32")
    assert rate == model.sample_rate == meta["sample_rate"] and list(FSD_CLASSES) == meta["classes"]
    assert not model.training and model.arch == "waveformer" and model.config["enc_dim"] == 64
    assert sum(p.numel() for p in model.parameters()) == meta["params"]
    with torch.no_grad():
        out = model(torch.from_numpy(mixture)[None, None], _query(meta["targets"]))
    assert out.shape == (1, 1, len(expected))
    assert (out[0, 0] - torch.from_numpy(expected)).abs().max() < 1e-5


def test_published_keys_load_strictly_and_pe_matches(official: Path) -> None:
    state = torch.load(official / "checkpoint.pt", weights_only=True)["model_state_dict"]
    model = create("waveformer", **read_published_config(official / "config.json"))
    assert list(model.state_dict()) == list(state)  # same names, same order
    # the sinusoidal table we build equals the published one (it is a buffer in the checkpoint)
    assert torch.equal(model.mask_gen.decoder.pos_enc.pe, state["mask_gen.decoder.pos_enc.pe"])
    model.load_state_dict(state, strict=True)


def test_converted_checkpoint_round_trip(official: Path, tmp_path: Path) -> None:
    model = load_published(official / "checkpoint.pt", official / "config.json")
    reloaded = load_checkpoint(save_checkpoint(model, tmp_path / "ckpt"))
    assert reloaded.arch == model.arch and reloaded.config == model.config
    x, q = torch.randn(1, 1, 3000), _query(["Cough", "Bark"])
    with torch.no_grad():
        assert torch.equal(model(x, q), reloaded(x, q))


def _write(tmp_path: Path, state: dict | object, params: dict | None = None, name: str = "c") -> tuple[Path, Path]:
    ckpt, config = tmp_path / f"{name}.pt", tmp_path / f"{name}.json"
    torch.save(state, ckpt)
    config.write_text(json.dumps({"model": "src.training.dcc_tf", "model_params": params}))
    return ckpt, config


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda s, p: s.pop("out_conv.0.weight"), "missing: out_conv.0.weight"),
        (lambda s, p: s.update(extra=torch.zeros(1)), "unexpected: extra"),
        (lambda s, p: p.update(dec_dim=16), "wrong shape"),
        (lambda s, p: p.pop("L"), "missing L"),
        (lambda s, p: p.update(heads=8), "unknown heads"),
        (lambda s, p: p.update(use_pos_enc="maybe"), "use_pos_enc must be true or false"),
        (lambda s, p: p.update(enc_dim="64"), "enc_dim must be a positive integer"),
        (lambda s, p: p.update(lookahead=False), "lookahead must be true"),
    ],
)
def test_published_loader_errors(official: Path, tmp_path: Path, change, message: str) -> None:
    state = torch.load(official / "checkpoint.pt", weights_only=True)["model_state_dict"]
    params = json.loads((official / "config.json").read_text())["model_params"]
    change(state, params)
    ckpt, config = _write(tmp_path, {"model_state_dict": state}, params)
    with pytest.raises(CheckpointError, match=message) as err:
        load_published(ckpt, config)
    assert "\n" not in str(err.value)


def test_published_loader_file_errors(official: Path, tmp_path: Path) -> None:
    config = official / "config.json"
    with pytest.raises(CheckpointError, match="no such file"):
        load_published(tmp_path / "absent.pt", config)
    (tmp_path / "junk.pt").write_bytes(b"not a pickle at all")
    with pytest.raises(CheckpointError, match="junk.pt: not a readable torch checkpoint"):
        load_published(tmp_path / "junk.pt", config)
    torch.save({"model_state_dict": {"x": Path("/")}}, tmp_path / "object.pt")  # weights_only refuses objects
    with pytest.raises(CheckpointError, match="object.pt: not a readable torch checkpoint"):
        load_published(tmp_path / "object.pt", config)
    torch.save({"epoch": 3}, tmp_path / "nostate.pt")
    with pytest.raises(CheckpointError, match="no model_state_dict"):
        load_published(tmp_path / "nostate.pt", config)
    (tmp_path / "other.json").write_text(json.dumps({"model": "src.training.other", "model_params": {}}))
    with pytest.raises(CheckpointError, match="not a Waveformer config"):
        load_published(official / "checkpoint.pt", tmp_path / "other.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(CheckpointError, match="bad.json: not valid JSON"):
        load_published(official / "checkpoint.pt", tmp_path / "bad.json")


def test_published_large_config_gets_registry_name(tmp_path: Path) -> None:
    params = {
        "label_len": 41,
        "L": 32,
        "enc_dim": 512,
        "num_enc_layers": 10,
        "dec_dim": 256,
        "num_dec_layers": 1,
        "dec_buf_len": 13,
        "dec_chunk_size": 13,
        "out_buf_len": 4,
        "use_pos_enc": "true",
    }
    state = create("waveformer-large").state_dict()
    ckpt, config = _write(tmp_path, {"epoch": 1, "model_state_dict": state}, params)
    model = load_published(ckpt, config)
    assert model.arch == "waveformer-large" and model.config == {**params, "use_pos_enc": True}
    assert torch.equal(model.out_conv[0].weight, state["out_conv.0.weight"])
    params["use_pos_enc"] = "False"
    ckpt, config = _write(tmp_path, {"model_state_dict": state}, params, name="nopos")
    model = load_published(ckpt, config)
    assert model.arch == "waveformer" and model.config["use_pos_enc"] is False


@pytest.mark.parametrize(("name", "params"), [("waveformer-large", 3_878_144), ("waveformer-small", 3_285_888)])
def test_parameter_counts(name: str, params: int) -> None:
    with torch.device("meta"):
        model = create(name)
    assert isinstance(model, Waveformer) and model.arch == name
    assert sum(p.numel() for p in model.parameters()) == params
    assert model.sample_rate == 44100 and model.clue_kind == "class" and model.latency_samples == 14 * 32


def test_registry_overrides_and_errors() -> None:
    config = tiny_config("waveformer-small")
    model = create("waveformer-small", **config)
    assert model.arch == "waveformer-small" and model.config == config
    assert len(model.mask_gen.encoder.dcc_layers) == config["num_enc_layers"]
    assert model.mask_gen.decoder.dim == config["dec_dim"]
    with pytest.raises(ValueError, match="unknown architecture"):
        create("waveformer-huge")


@pytest.mark.parametrize("name", ["waveformer-large", "wavemamba-large"])
def test_output_is_a_tanh(name: str) -> None:
    """Both models on the DCC chassis end in tanh: estimates never leave [-1, 1], whatever the input level."""
    torch.manual_seed(0)
    out = tiny(name)(100 * torch.randn(2, 1, 13 * 32 * 2 + 5), torch.eye(41)[:2])
    assert out.abs().max() <= 1


def test_forward_rejects_bad_shapes() -> None:
    model = tiny("waveformer-large")
    with pytest.raises(ValueError, match=r"mixture must be \(batch, 1, samples\)"):
        model(torch.zeros(1, 2, 100), torch.zeros(1, 41))
    with pytest.raises(ValueError, match=r"query must be \(batch, 41\)"):
        model(torch.zeros(2, 1, 100), torch.zeros(1, 41))
