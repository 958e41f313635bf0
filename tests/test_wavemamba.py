"""WaveMamba: Waveformer with one causal CrossMamba block as decoder: parameter counts, names shared with
Waveformer, the block wired as published (query from the label branch, value from the mixture), registry."""

from __future__ import annotations

import pytest
import torch
from tiny import tiny, tiny_config

from tse_cli.models import create
from tse_cli.models.crossmamba import CrossMambaBlock
from tse_cli.models.wavemamba import WaveMamba


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
    model = tiny("wavemamba-small").eval()
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


def test_registry_overrides_reach_the_block() -> None:
    model = tiny("wavemamba-large", d_state=8)
    assert model.config == tiny_config("wavemamba-large", d_state=8) and model.mask_gen.decoder.mixer.d_state == 8
