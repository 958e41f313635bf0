"""Streaming allocates nothing per chunk in steady state but what docs/performance.md lists: the returned output,
LayerNorm's kernel (output, mean and rstd: 3 per call, its out= variant included) where the encoder runs
PyTorch's operations (without tse's CPU kernels, `tse_cli.models.kernels`), and for Waveformer the attention
of each decoded group. Counted with the profiler (`count_allocations`) on tiny models, whose products are too
small for oneDNN (larger ones allocate its output, see `tse_cli.models.products.linear`)."""

from __future__ import annotations

import pytest
import torch
from tiny import tiny

from tse_cli.models import kernels
from tse_cli.models.crossmamba import CrossMambaBlock
from tse_cli.models.streaming import Scratch, count_allocations, scratch

DEEP = {"num_enc_layers": 3}  # on top of the tiny config: three context buffer sizes
LAYER_NORM = 3  # allocations per F.layer_norm call: output, mean, rstd
# Waveformer, per decoded group and decoder layer: its 3 LayerNorms, F.linear (attention projections, feed-forward),
# nn.MultiheadAttention's head reshapes and scaled_dot_product_attention kernel, the 3 residual adds, the feed-forward
# ReLU; per group, the positional encodings added to the memory and to the first layer's query windows
DECODER_LAYER = {
    "aten::layer_norm": 3 * LAYER_NORM,
    "aten::linear": 8,
    "aten::scaled_dot_product_attention": 6,
    "aten::add": 3,
    "aten::contiguous": 2,
    "aten::relu": 1,
}
DECODER_GROUP = {"aten::add": 2}
WARM_UP, CHUNKS = 30, 26


def _encoder_layer_norms(model: torch.nn.Module) -> int:
    """LayerNorm allocations per chunk in the encoder: none through the CPU kernels, else 2 calls per layer."""
    return 0 if kernels.available() else 2 * len(model.mask_gen.encoder.dcc_layers) * LAYER_NORM


def _output_op() -> str:
    """The operator that allocates the returned output: tse_cli.models.dcc's fused_back (CPU kernels), else tanh."""
    return "aten::new_empty" if kernels.available() else "aten::tanh"


def _steady_state(name: str, chunk: int, **extra) -> tuple[torch.nn.Module, dict[str, int]]:
    """Allocations per operator while streaming CHUNKS chunks of `chunk` samples after WARM_UP of them."""
    torch.manual_seed(0)
    model = tiny(name, **DEEP, **extra).eval()
    streamer = model.streamer(torch.eye(41)[:1])
    pieces = (torch.randn(1, 1, chunk * (WARM_UP + CHUNKS)) * 0.3).split(chunk, dim=-1)
    for piece in pieces[:WARM_UP]:
        streamer.feed(piece)
    return model, count_allocations(lambda: [streamer.feed(piece) for piece in pieces[WARM_UP:]]).by_op


@pytest.mark.parametrize("name", ["wavemamba-large", "wavemamba-small"])
@pytest.mark.parametrize("chunk", [416, 32, 100])  # 100: frames cut across chunks, 3 or 4 frames per chunk
def test_wavemamba_steady_state_allocates_only_output_and_layernorm(name: str, chunk: int) -> None:
    model, by_op = _steady_state(name, chunk)
    expected = {"aten::layer_norm": CHUNKS * _encoder_layer_norms(model)}  # every chunk completes a frame
    assert by_op == {**{k: v for k, v in expected.items() if v}, _output_op(): CHUNKS}


@pytest.mark.parametrize("name", ["waveformer-large", "waveformer-small"])
@pytest.mark.parametrize("chunk", [416, 32])  # 416: one group per chunk; 32: one every 13 chunks
def test_waveformer_steady_state_allocates_only_output_layernorm_and_attention(name: str, chunk: int) -> None:
    model, by_op = _steady_state(name, chunk, num_dec_layers=2)
    decoder = model.mask_gen.decoder
    groups = CHUNKS * chunk // model.L // decoder.granularity  # decoded groups while counting
    expected = {
        op: groups * (n * len(decoder.tf_dec_layers) + DECODER_GROUP.get(op, 0)) for op, n in DECODER_LAYER.items()
    }
    expected["aten::layer_norm"] += CHUNKS * _encoder_layer_norms(model)
    expected[_output_op()] = groups  # an output whenever a group was decoded
    assert by_op == expected


def test_count_allocations_counts_kernel_allocations() -> None:
    x = torch.randn(1000)
    counted = count_allocations(lambda: (torch.add(x, x), torch.empty(0)))  # empty tensors take no memory
    assert counted == (1, 4000, {"aten::add": 1})
    assert count_allocations(lambda: x.add_(x)).count == 0
    assert count_allocations(lambda: torch.layer_norm(x, (1000,))).by_op == {"aten::layer_norm": LAYER_NORM}


def test_scratch_reuses_and_grows_its_slots() -> None:
    like = torch.zeros(2, 3)
    assert scratch(like) is None  # outside a streamer: allocate as usual
    memory = Scratch()
    with memory.active():
        a, b = scratch(like), scratch(like, (4,))
    with memory.active():
        assert scratch(like) is a and scratch(like, (4,)) is b  # same order, same tensors
        big = scratch(like, (3, 5))  # slot 2 is new; slot 0 below grows
    with memory.active():
        grown = scratch(like, (10,))
        assert grown.shape == (10,) and grown.data_ptr() != a.data_ptr()
        assert scratch(like, (2,)).data_ptr() == b.data_ptr()  # smaller: a view of the same storage
        assert scratch(like, (3, 5)) is big
        transposed = torch.zeros(3, 2).t()
        out = scratch(transposed)
        assert out.shape == (2, 3) and out.stride() == transposed.stride()  # the layout of a transposed view
    assert scratch(like) is None


def test_mamba_step_updates_its_state_in_place() -> None:
    torch.manual_seed(0)
    block = CrossMambaBlock(16, d_state=4)
    state = block.init_state(2)
    before = [t.data_ptr() for t in state]
    with torch.no_grad():
        out, new = block.step(torch.randn(2, 3, 16), torch.randn(2, 3, 16), state)
    assert new is state and [t.data_ptr() for t in new] == before and state.ssm.abs().sum() > 0
