"""WaveMamba: Waveformer with one causal CrossMamba block as decoder: parameter counts, names shared with
Waveformer, the block wired as published (query from the label branch, value from the mixture), registry."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tse_cli.checkpoint import load_checkpoint, save_checkpoint
from tse_cli.models import create
from tse_cli.models.crossmamba import CrossMambaBlock
from tse_cli.models.wavemamba import WaveMamba

TINY = {"enc_dim": 32, "dec_dim": 16, "num_enc_layers": 2}


@pytest.mark.parametrize(("name", "params"), [("wavemamba-large", 3_656_704), ("wavemamba-small", 3_236_608)])
def test_parameter_counts(name: str, params: int) -> None:
    with torch.device("meta"):
        model = create(name)
    assert isinstance(model, WaveMamba) and model.arch == name
    assert sum(p.numel() for p in model.parameters()) == params
    assert model.sample_rate == 44100 and model.clue_kind == "class" and model.latency_samples == 64


def test_same_names_as_waveformer_except_the_decoder() -> None:
    with torch.device("meta"):
        mamba, former = create("wavemamba-large"), create("waveformer-large")
    mamba_keys = {k for k in mamba.state_dict() if not k.startswith("mask_gen.decoder.")}
    former_keys = {k for k in former.state_dict() if not k.startswith("mask_gen.decoder.")}
    assert mamba_keys == former_keys
    decoder = mamba.mask_gen.decoder
    assert isinstance(decoder, CrossMambaBlock) and decoder.mixer.d_model == 256
    assert (decoder.mixer.d_state, decoder.mixer.d_conv, decoder.mixer.expand) == (16, 4, 2)
    assert {"mask_gen.decoder.mixer.in_proj_q.weight", "mask_gen.decoder.norm_query.weight"} <= set(mamba.state_dict())


def test_decoder_is_crossmamba_on_the_projections() -> None:
    """The decoder output equals the block run by hand on (proj_e2d_l(l), proj_e2d_e(e))."""
    torch.manual_seed(0)
    model = create("wavemamba-small", **TINY).eval()
    seen = {}
    model.mask_gen.decoder.register_forward_hook(lambda m, args, out: seen.update(args=args, out=out))
    x, query = torch.randn(1, 1, 700), torch.eye(41)[3:4]
    with torch.no_grad():
        model(x, query)
        frames = model.analyze(torch.nn.functional.pad(x[:, 0], (32, -700 % 32 + 32)))
        e = model.mask_gen.encoder(frames)
        l = model.label_embedding(query)[:, None] * e  # noqa: E741
        q, v = model.mask_gen.proj_e2d_l(l), model.mask_gen.proj_e2d_e(e)
        expected = CrossMambaBlock.forward(model.mask_gen.decoder, q, v)
    assert torch.equal(seen["args"][0], q) and torch.equal(seen["args"][1], v)
    assert torch.allclose(seen["out"], expected)


def test_registry_and_checkpoint_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = create("wavemamba-large", **TINY, d_state=8)
    assert model.config == {**TINY, "d_state": 8} and model.mask_gen.decoder.mixer.d_state == 8
    reloaded = load_checkpoint(save_checkpoint(model, tmp_path / "wm"))
    assert isinstance(reloaded, WaveMamba) and reloaded.config == model.config
    x, query = torch.randn(2, 1, 1000), torch.eye(41)[:2]
    with torch.no_grad():
        assert torch.equal(model.eval()(x, query), reloaded(x, query))


@pytest.mark.parametrize("samples", [1, 33, 777])
def test_forward_shapes_and_gradients(samples: int) -> None:
    torch.manual_seed(0)
    model = create("wavemamba-small", **TINY)
    x = torch.randn(2, 1, samples, requires_grad=True)
    out = model(x, torch.eye(41)[:2])
    assert out.shape == (2, 1, samples) and out.abs().max() <= 1
    out.square().sum().backward()
    assert x.grad is not None and all(p.grad is not None for p in model.parameters())
