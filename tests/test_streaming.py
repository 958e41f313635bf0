"""Streaming on the DCC chassis: the context buffer; decoder buffers and frame sizes other than the tiny config's
streamed (test_contract.py streams every causal architecture at its tiny config), long chunks in blocks, bounded
state, the documented latency, stream errors, and the published Waveformer fixture streamed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import soundfile as sf
import torch
from tiny import tiny

from tse_cli.classes import FSD_CLASSES
from tse_cli.models.products import linear
from tse_cli.models.streaming import ContextBuffer
from tse_cli.models.waveformer import load_published

DEEP = {"num_enc_layers": 3}  # on top of the tiny config: three dilations, so three context buffer sizes
MODELS = ["waveformer-large", "wavemamba-large"]


@pytest.mark.parametrize("context", [0, 1, 5, 40])
def test_context_buffer_returns_context_then_chunk(context: int) -> None:
    g = torch.Generator().manual_seed(context)
    buffer = ContextBuffer(2, 3, context, device=torch.device("cpu"), dtype=torch.float64)
    history = torch.zeros(2, context, 3, dtype=torch.float64)
    for _ in range(60):
        n = int(torch.randint(0, 3 * context + 200, (1,), generator=g)) if torch.rand(1, generator=g) < 0.2 else 1
        x = torch.randn(2, n, 3, generator=g, dtype=torch.float64)
        history = torch.cat((history, x), dim=1)
        assert torch.equal(buffer.extend(x), history[:, history.shape[1] - context - n :])
    assert buffer.buffer.shape[1] == 2 * context + 64  # never grew


def _chunk_sizes(total: int, seed: int) -> list[int]:
    """Single samples, a 0-sample chunk, random sizes and one big chunk, covering `total` samples."""
    g = torch.Generator().manual_seed(seed)
    sizes = [1] * 70 + [0]
    while sum(sizes) < total - 3000:
        sizes.append(int(torch.randint(1, 700, (1,), generator=g)))
    return sizes + [5000]


def _stream(model, x: torch.Tensor, query: torch.Tensor, sizes: list[int]) -> torch.Tensor:
    streamer, outs, start = model.streamer(query), [], 0
    for n in sizes:
        out = streamer.feed(x[..., start : start + n])
        assert out.shape[:2] == (x.shape[0], 1) and out.shape[-1] % model.L == 0
        outs.append(out)
        start += n
    outs.append(streamer.flush())
    return torch.cat(outs, dim=-1)


@pytest.mark.parametrize(
    ("name", "extra"),
    [  # decoder buffers and frame sizes other than the tiny config's (which test_contract.py streams)
        ("waveformer-small", {"num_dec_layers": 2, "dec_buf_len": 5, "dec_chunk_size": 7, "out_buf_len": 2}),
        ("wavemamba-small", {"L": 16, "d_state": 4, "out_buf_len": 1}),
    ],
)
@pytest.mark.parametrize("seed", [0, 1])
def test_stream_equals_offline(name: str, extra: dict, seed: int) -> None:
    torch.manual_seed(seed)
    model = tiny(name, **DEEP, **extra).eval()
    x = torch.randn(2, 1, 6001 + 37 * seed) * 0.5
    query = torch.zeros(2, 41)
    query[0, 3] = query[1, [5, 9]] = 1.0
    with torch.no_grad():
        offline = model(x, query)
    streamed = _stream(model, x, query, _chunk_sizes(x.shape[-1], seed))
    assert streamed.shape == offline.shape and offline.abs().max() > 1e-3
    assert (streamed - offline).abs().max() < 1e-5


@pytest.mark.parametrize("name", MODELS)
def test_long_chunks_go_in_blocks(name: str) -> None:
    torch.manual_seed(0)
    model = tiny(name, **DEEP).eval()
    x, query = torch.randn(1, 1, 5003), torch.eye(41)[2:3]
    streamer = model.streamer(query)
    streamer.BLOCK = 333  # one feed of 5003 samples runs as 16 blocks
    streamed = torch.cat([streamer.feed(x), streamer.flush()], dim=-1)
    with torch.no_grad():
        assert (streamed - model(x, query)).abs().max() < 1e-5


@pytest.mark.parametrize("name", MODELS)
def test_latency_is_exact(name: str) -> None:
    """Fed sample by sample, output sample s arrives by the feed of input s + latency - 1, and not always earlier."""
    model = tiny(name, **DEEP).eval()
    streamer, emitted, worst = model.streamer(torch.eye(41)[:1]), 0, 0
    for n in range(1, 40 * model.L):
        emitted += streamer.feed(torch.randn(1, 1, 1)).shape[-1]
        worst = max(worst, n - emitted)
    assert worst == model.latency_samples - 1


def _state_elements(streamer) -> int:
    tensors = [streamer.partial, streamer.pending]
    tensors += [b.buffer for b in (streamer.samples, *streamer.encoder_state, *streamer.out_state)]
    decoder = streamer.decoder_state
    tensors += [b.buffer for b in decoder] if isinstance(decoder, list) else list(decoder)
    return sum(t.numel() for t in tensors if t is not None)


@pytest.mark.parametrize("name", MODELS)
def test_state_is_bounded(name: str) -> None:
    model = tiny(name, **DEEP).eval()
    streamer, sizes = model.streamer(torch.eye(41)[:1]), []
    for i in range(40):
        streamer.feed(torch.randn(1, 1, 416))
        if i in (10, 39):
            sizes.append(_state_elements(streamer))
    assert sizes[0] == sizes[1]


def test_streamer_errors() -> None:
    model = tiny("wavemamba-small", **DEEP).eval()
    with pytest.raises(ValueError, match=r"query must be \(batch, 41\)"):
        model.streamer(torch.zeros(1, 40))
    streamer = model.streamer(torch.eye(41)[:2])
    with pytest.raises(ValueError, match=r"chunk must be \(2, 1, samples\)"):
        streamer.feed(torch.zeros(1, 1, 10))
    streamer.flush()
    with pytest.raises(RuntimeError, match="flushed"):
        streamer.feed(torch.zeros(2, 1, 10))
    with pytest.raises(RuntimeError, match="already flushed"):
        streamer.flush()


def test_published_fixture_streamed(fixtures: Path) -> None:
    """The published tiny Waveformer, streamed in the published 416-sample hops, gives the published output."""
    official = fixtures / "waveformer_official_tiny"
    model = load_published(official / "checkpoint.pt", official / "config.json")
    meta = json.loads((official / "meta.json").read_text())
    query = torch.zeros(1, 41)
    query[0, [FSD_CLASSES.index(t) for t in meta["targets"]]] = 1.0
    mixture, _ = sf.read(official / "mixture.wav", dtype="float32")
    expected, _ = sf.read(official / "expected.wav", dtype="float32")
    x = torch.from_numpy(mixture)[None, None]
    streamed = _stream(model, x, query, [416] * (x.shape[-1] // 416 + 1))
    assert (streamed[0, 0] - torch.from_numpy(expected)).abs().max() < 1e-5


def test_linear_cache_follows_weight_updates() -> None:
    """`linear` caches transposed weights without autograd; every kind of weight change is seen."""
    torch.manual_seed(0)
    layer, x = torch.nn.Linear(8, 5), torch.randn(3, 4, 8)
    with torch.no_grad():
        torch.testing.assert_close(linear(x, layer.weight, layer.bias), layer(x), rtol=0, atol=1e-6)
        layer.weight.mul_(2)  # in place (an optimizer step)
        torch.testing.assert_close(linear(x, layer.weight, layer.bias), layer(x), rtol=0, atol=1e-6)
    layer.load_state_dict({"weight": torch.randn(5, 8), "bias": torch.randn(5)})
    layer.weight.data = torch.randn(5, 8)  # new storage
    with torch.inference_mode():
        torch.testing.assert_close(linear(x, layer.weight, layer.bias), layer(x), rtol=0, atol=1e-6)
    out = linear(x, layer.weight, layer.bias)  # autograd: gradients reach the weight
    out.sum().backward()
    torch.testing.assert_close(layer.weight.grad, x.reshape(-1, 8).sum(0).expand(5, 8), rtol=0, atol=1e-5)
