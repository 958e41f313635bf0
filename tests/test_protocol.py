"""The model protocol (`tse_cli.models.protocol`) and the registry metadata that stands in for it before loading."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from torch import nn

from tse_cli.models import ARCHITECTURES, architecture, create
from tse_cli.models.protocol import (
    CLUE_KINDS,
    CausalModel,
    ExtractionModel,
    WindowModel,
    check_options,
    model_kind,
)


@pytest.fixture(scope="module", params=sorted(ARCHITECTURES))
def built(request: pytest.FixtureRequest) -> tuple[str, nn.Module]:
    """Every architecture at its published size, on the meta device (no weights, no compute)."""
    with torch.device("meta"):
        return request.param, create(request.param)


def test_every_architecture_follows_the_protocol(built: tuple[str, nn.Module]) -> None:
    name, model = built
    assert isinstance(model, ExtractionModel)
    assert isinstance(model, CausalModel) != isinstance(model, WindowModel), f"{name}: exactly one kind"
    assert model.clue_kind in CLUE_KINDS
    assert (model.clue_rate is None) == (model.clue_kind == "class")
    if isinstance(model, CausalModel):
        assert model.inference_options == () and model.latency_samples > 0
    else:
        assert model.window_samples > 0


def test_registry_metadata_matches_the_class(built: tuple[str, nn.Module]) -> None:
    """What the CLI reads off the registry before loading is what the loaded model declares."""
    name, model = built
    entry = architecture(name)
    declared = (model.sample_rate, model.clue_kind, model.clue_rate, model.max_classes)
    assert (entry.sample_rate, entry.clue_kind, entry.clue_rate, entry.max_classes) == declared
    assert entry.causal == (model_kind(model) == "stream")
    assert type(model) is entry.load_class()


def test_registry_and_protocol_import_no_torch() -> None:
    """The CLI can read architecture metadata without importing a model module (or torch)."""
    code = (
        "import sys; import tse_cli.models, tse_cli.models.protocol; "
        "print([m for m in sys.modules if m == 'torch' or m.startswith('tse_cli.models.') "
        "and not m.endswith('protocol')])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_unknown_architecture_names_the_known_ones() -> None:
    with pytest.raises(ValueError, match="unknown architecture 'nope'; known: av-sepformer-large"):
        architecture("nope")


class _Plain(nn.Module):
    sample_rate = 16000
    clue_kind = "class"


def test_model_kind_and_options() -> None:
    with torch.device("meta"):
        wave, dpm = create("waveformer-small"), create("dpm-tse")
    assert model_kind(wave) == "stream" and model_kind(dpm) == "window"
    check_options(dpm, {"steps": 3, "eta": 0.0, "generator": None})
    with pytest.raises(ValueError, match=r"model dpm-tse takes no option\(s\): seed$"):
        check_options(dpm, {"steps": 3, "seed": 1})
    with pytest.raises(ValueError, match=r"model waveformer-small takes no option\(s\): steps"):
        check_options(wave, {"steps": 3})
    assert dpm.takes_progress and not wave.takes_progress
    with pytest.raises(ValueError, match="_Plain does not follow the model protocol: lacks clue_rate, max_classes"):
        model_kind(_Plain())
