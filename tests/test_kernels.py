"""The inference speed paths against the PyTorch operations they replace: tse's CPU kernels
(`tse_cli.models.kernels`: depthwise conv + LayerNorm/ReLU or SiLU, LayerNorm + ReLU + residual, RMSNorm),
oneDNN's products in `linear`, and whole models (offline and streamed) with and without them."""

from __future__ import annotations

import contextlib
import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tse_cli.models import create, crossmamba, dcc, kernels, products
from tse_cli.models.crossmamba import CrossMambaBlock, MambaState
from tse_cli.models.products import linear
from tse_cli.models.streaming import causal_depthwise

if not kernels.available():
    pytest.skip(f"tse's CPU kernels do not build here: {kernels.build_error()}", allow_module_level=True)


def _randomised(module: nn.Module) -> nn.Module:
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    return module


@pytest.mark.parametrize("channels", [37, 512])
@pytest.mark.parametrize(("kernel", "dilation"), [(3, 1), (3, 8), (4, 1)])
@pytest.mark.parametrize("n", [1, 5, 100])
@pytest.mark.parametrize("with_past", [True, False])
@pytest.mark.parametrize("post", ["layer_norm_relu", "silu", "none"])
@torch.no_grad()
def test_depthwise_kernel_equals_torch(channels, kernel, dilation, n, with_past, post):
    """Every tap split between the new frames and the past (n below, at and above the context), partial vectors."""
    torch.manual_seed(channels + n)
    conv = _randomised(nn.Conv1d(channels, channels, kernel, groups=channels, dilation=dilation))
    norm = _randomised(nn.LayerNorm(channels))
    x = torch.randn(2, n, channels)
    past = torch.randn(2, (kernel - 1) * dilation, channels) if with_past else None
    got = kernels.depthwise(x, past, conv, dilation, post, norm)
    expected = causal_depthwise(x, past, conv.weight, conv.bias, dilation)
    if post == "layer_norm_relu":
        expected = F.layer_norm(expected, (channels,), norm.weight, norm.bias, norm.eps).relu()
    elif post == "silu":
        expected = F.silu(expected)
    torch.testing.assert_close(got, expected, rtol=0, atol=2e-6)
    # and the split taps equal the convolution itself over the concatenation
    full = torch.cat([past if with_past else torch.zeros(2, (kernel - 1) * dilation, channels), x], dim=1)
    conv_out = F.conv1d(full.transpose(1, 2), conv.weight, conv.bias, groups=channels, dilation=dilation)
    torch.testing.assert_close(causal_depthwise(x, past, conv.weight, conv.bias, dilation), conv_out.transpose(1, 2))


@pytest.mark.parametrize("channels", [37, 256, 512])
@pytest.mark.parametrize("residual", ["none", "separate", "in place"])
@torch.no_grad()
def test_layer_norm_relu_residual_kernel_equals_torch(channels, residual):
    torch.manual_seed(channels)
    norm = _randomised(nn.LayerNorm(channels))
    y, res = torch.randn(3, 7, channels) * 3 + 1, torch.randn(3, 7, channels)
    expected = F.layer_norm(y, (channels,), norm.weight, norm.bias, norm.eps).relu()
    if residual == "none":
        got = kernels.norm(y, norm)
    else:
        expected = expected + res
        got = kernels.norm(y, norm, residual=res, out=res if residual == "in place" else None)
        assert (got is res) == (residual == "in place")
    torch.testing.assert_close(got, expected, rtol=0, atol=2e-6)


@pytest.mark.parametrize("channels", [16, 37, 256])
@torch.no_grad()
def test_rms_norm_kernel_equals_torch(channels):
    norm = _randomised(nn.RMSNorm(channels, eps=1e-5))
    x = torch.randn(4, 9, channels) * 2
    torch.testing.assert_close(kernels.norm(x, norm), norm(x), rtol=0, atol=2e-6)


@torch.no_grad()
def test_threads_split_the_rows(monkeypatch):
    """Large calls share their rows (frames, output panels) among torch's intra-op threads: the same result as one
    thread."""
    conv, norm = _randomised(nn.Conv1d(40, 40, 3, groups=40, dilation=4)), _randomised(nn.LayerNorm(40))
    x, past, res = torch.randn(2, 50, 40), torch.randn(2, 8, 40), torch.randn(2, 50, 40)
    layer = nn.Linear(40, 70)

    def calls() -> list[torch.Tensor]:
        return [
            kernels.depthwise(x, past, conv, 4, "layer_norm_relu", norm).clone(),
            kernels.norm(x, norm, residual=res).clone(),
            kernels.linear(x[0, :30], layer.weight, layer.bias).clone(),
        ]

    one = calls()
    monkeypatch.setattr(kernels, "PARALLEL_ELEMENTS", 1)
    threads = torch.get_num_threads()
    torch.set_num_threads(3)
    try:
        split = calls()
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(split, one, strict=True):
        assert torch.equal(a, b)


def test_kernels_are_used_for_inference_only():
    x = torch.zeros(2, 3)
    assert not kernels.usable(x)  # autograd on: a layer's parameters need gradients whatever its input
    with torch.no_grad():
        assert kernels.usable(x) and kernels.usable(x.requires_grad_())
        assert not kernels.usable(x.double()) and not kernels.usable(x.bfloat16())
        assert not kernels.usable(torch.zeros(2, kernels.MAX_CHANNELS + 1))
    with torch.inference_mode():
        assert kernels.usable(x)


def test_kernels_can_be_turned_off(monkeypatch):
    monkeypatch.setenv(kernels.ENV_VAR, "0")
    kernels.library.cache_clear()
    try:
        assert not kernels.available() and "TSE_CPU_KERNELS=0" in kernels.build_error()
        assert not kernels.usable(torch.zeros(1))
    finally:
        monkeypatch.undo()
        kernels.library.cache_clear()
    assert kernels.available()


def _spy(monkeypatch: pytest.MonkeyPatch, name: str) -> list[tuple]:
    """Wrap `kernels.<name>` so that each call's positional arguments are recorded; returns the record."""
    calls, function = [], getattr(kernels, name)
    monkeypatch.setattr(kernels, name, lambda *args: calls.append(args) or function(*args))
    return calls


def _layer_by_layer(monkeypatch: pytest.MonkeyPatch) -> None:
    """No fused encoder call and no few-row product: the DCC encoder runs layer by layer, every product through
    MKL, oneDNN or the many-row kernel (`kernels.matmul`)."""
    monkeypatch.setattr(kernels, "LINEAR_ROWS", 0)
    monkeypatch.setattr(dcc.DilatedCausalEncoder, "fused_layers", lambda self, state: contextlib.nullcontext())


def _staged(monkeypatch: pytest.MonkeyPatch) -> None:
    """No whole-chunk kernel call (`dcc._ChunkPlan`): a WaveMamba streamer drives its stages itself, as Waveformer's
    does."""
    monkeypatch.setattr(dcc.CausalStreamer, "_fused", lambda self, chunk: None)


@pytest.mark.parametrize("rows", [4, 13, 300])
@torch.no_grad()
def test_onednn_products_equal_mkl(rows, monkeypatch):
    """Without the kernels, products of 1M multiply-adds and more run through oneDNN against a packed weight;
    smaller ones stay."""
    if products._ONEDNN is None:
        pytest.skip("torch without oneDNN")
    monkeypatch.setattr(kernels, "available", lambda: False)  # (with them: `kernels.matmul`, tested below)
    layer = nn.Linear(512, 512)
    x = torch.randn(rows, 512)
    torch.testing.assert_close(linear(x, layer.weight, layer.bias), F.linear(x, layer.weight, layer.bias))
    with torch.no_grad():
        layer.weight.mul_(2)  # the packed weight follows the weight
    torch.testing.assert_close(linear(x, layer.weight, layer.bias), F.linear(x, layer.weight, layer.bias))


@pytest.mark.parametrize("rows", [1, 2, 3, 4, 6, 7, 13, 14, 20, 32])
@pytest.mark.parametrize(("fan_in", "fan_out", "bias"), [(512, 512, True), (19, 37, True), (256, 16, False)])
@torch.no_grad()
def test_linear_kernel_equals_f_linear(rows, fan_in, fan_out, bias):
    """The few-row product (every tile size; output columns that do not fill a panel; no bias; k not a multiple of
    the partial sums) equals F.linear, also on a row-strided input and after the weight changes."""
    layer = nn.Linear(fan_in, fan_out, bias=bias)
    x = torch.randn(rows, 2 * fan_in)[:, ::2].contiguous()
    strided = torch.randn(rows, fan_in + 5)[:, :fan_in]  # rows apart by fan_in + 5 values
    for inputs in (x, strided):
        got = kernels.linear(inputs, layer.weight, layer.bias)
        assert got.shape == (rows, fan_out)
        torch.testing.assert_close(got, F.linear(inputs, layer.weight, layer.bias), rtol=1e-5, atol=1e-5)
    layer.weight.mul_(2)  # the packed panels follow the weight
    torch.testing.assert_close(linear(x, layer.weight, layer.bias), F.linear(x, layer.weight, layer.bias))
    with pytest.raises(ValueError, match="at most"):
        kernels.linear(torch.randn(kernels.LINEAR_ROWS + 1, fan_in), layer.weight, layer.bias)


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("rows", [33, 47, 49, 301])
@pytest.mark.parametrize(("fan_in", "fan_out", "bias"), [(512, 512, True), (19, 37, True), (1100, 70, False)])
@torch.no_grad()
def test_matmul_kernel_equals_f_linear(threads, rows, fan_in, fan_out, bias):
    """The many-row product (rows shared among threads in tiles, partial tiles and micro tiles, outputs that do not
    fill a wide panel, k in several blocks, no bias) equals F.linear, on contiguous, row-strided and overlapping
    rows, and `linear` takes it for 1M multiply-adds and more where it wins, following weight changes."""

    def check(got: torch.Tensor, x: torch.Tensor) -> None:
        """Within float32's bound for a sum of fan_in + 1 products in any order: (fan_in + 1) u sum |terms|."""
        bias = None if layer.bias is None else layer.bias.double()
        exact = F.linear(x.double(), layer.weight.double(), bias)
        size = F.linear(x.double().abs(), layer.weight.double().abs(), None if bias is None else bias.abs())
        assert ((got - exact).abs() <= (fan_in + 1) * 2**-24 * size).all()

    torch.manual_seed(rows + fan_in)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        layer = _randomised(nn.Linear(fan_in, fan_out, bias=bias))
        x = torch.randn(rows, fan_in)
        strided = torch.randn(rows, fan_in + 5)[:, :fan_in]
        overlapping = torch.randn(7 * rows + fan_in).as_strided((rows, fan_in), (7, 1))  # windows of a signal
        for inputs in (x, strided, overlapping):
            got = kernels.matmul(inputs, kernels.wide_panels(layer.weight), fan_out, layer.bias)
            assert got.shape == (rows, fan_out)
            check(got, inputs)
        big = torch.randn(max(kernels.LINEAR_ROWS + 1, -(-products.ONEDNN_MACS // (fan_in * fan_out))), fan_in)
        with pytest.MonkeyPatch.context() as patch:
            calls = _spy(patch, "matmul")
            layer.weight.mul_(2)  # the wide panels follow the weight
            got = linear(big, layer.weight, layer.bias)
        assert len(calls) == kernels.matmul_wins(fan_in, fan_out)
        check(got, big)
        with pytest.raises(ValueError, match="do not fit"):
            kernels.matmul(x[:, 1:], kernels.wide_panels(layer.weight), fan_out, layer.bias)
    finally:
        torch.set_num_threads(before)


def _outputs(model: nn.Module, x: torch.Tensor, query: torch.Tensor) -> list[torch.Tensor]:
    """Offline forward, and streams in 416-, 100- and 1-sample chunks."""
    with torch.inference_mode():
        outs = [model(x, query)]
        for chunk in (416, 100, 1):
            s = model.streamer(query)
            outs.append(torch.cat([*(s.feed(p) for p in x.split(chunk, -1)), s.flush()], dim=-1))
    return outs


@pytest.mark.parametrize("name", ["wavemamba-small", "waveformer-small"])
def test_models_with_the_speed_paths_equal_the_pytorch_operations(name, monkeypatch):
    """Every inference speed path on (kernels, the cpu scan, oneDNN) against all of them off: same outputs."""
    torch.manual_seed(0)
    model = _randomised(create(name, enc_dim=64, dec_dim=32, num_enc_layers=3)).eval()
    x, query = torch.randn(2, 1, 2000) * 0.3, torch.eye(41)[:2]
    monkeypatch.setattr(products, "ONEDNN_MACS", 1)  # every larger product through oneDNN (when torch has it)
    fast = _outputs(model, x, query)
    monkeypatch.setattr(kernels, "available", lambda: False)  # the kernels and the cpu scan
    monkeypatch.setattr(products, "_ONEDNN", None)
    plain = _outputs(model, x, query)
    for got, expected in zip(fast, plain, strict=True):
        assert (got - expected).abs().max() <= 1e-5


def test_many_row_products_in_a_full_size_model_equal_the_pytorch_operations(monkeypatch):
    """At full width (enc_dim 512) the encoder's 1x1 convs, out_proj and out_conv are products `kernels.matmul`
    wins: offline, in long streamed blocks, and in chunks of 33-64 frames that keep their products in a
    streamer's scratch memory (the encoder layer by layer), the same output as with every speed path off."""
    torch.manual_seed(0)
    model = create("wavemamba-large", num_enc_layers=2).eval()  # (its own init: random +-0.2 saturates it)
    x, query = torch.randn(1, 1, 9000) * 0.3, torch.eye(41)[:1]
    calls = _spy(monkeypatch, "matmul")
    with torch.inference_mode():
        fast = [model(x, query), _stream(model, x, query, [5000, 4000])]
        _layer_by_layer(monkeypatch)
        fast.append(_stream(model, x, query, [2000, 1100]))  # 62 and 34 frames: scratch memory
    rows = [args[0].shape[0] for args in calls]
    assert min(rows) <= 64 < max(rows)
    monkeypatch.setattr(kernels, "available", lambda: False)
    monkeypatch.setattr(products, "_ONEDNN", None)
    with torch.inference_mode():
        plain = model(x, query)
    for got in fast:
        assert (got - plain).abs().max() <= 1e-5


def _stream(model: nn.Module, x: torch.Tensor, query: torch.Tensor, sizes: list[int], change=None) -> torch.Tensor:
    """Stream x in chunks of `sizes` (cycled); `change(model)` runs after the third chunk when given."""
    streamer, pieces, at, i = model.streamer(query), [], 0, 0
    while at < x.shape[-1]:
        n = sizes[i % len(sizes)]
        pieces.append(streamer.feed(x[..., at : at + n]))
        at, i = at + n, i + 1
        if change is not None and i == 3:
            change(model)
    return torch.cat([*pieces, streamer.flush()], dim=-1)


@pytest.mark.parametrize("sizes", [[416], [32], [1, 96, 5], [416, 3000, 32, 2000]])
@pytest.mark.parametrize("batch", [1, 2])
@pytest.mark.parametrize(("enc_dim", "dec_dim"), [(64, 32), (40, 20)])
def test_fused_encoder_step_equals_the_layer_by_layer_step(sizes, batch, enc_dim, dec_dim, monkeypatch):
    """A streamed chunk and a long block (tiles of rows) each run the whole encoder in one call
    (`dcc.EncoderState.plan`), on the same context buffers: any mix of the two equals the layer-by-layer stream and
    the offline forward, also with channels that do not fill a wide panel."""
    _staged(monkeypatch)  # (WaveMamba's chunks would go through one kernel call: tested below)
    torch.manual_seed(0)
    model = _randomised(create("wavemamba-small", enc_dim=enc_dim, dec_dim=dec_dim, num_enc_layers=4)).eval()
    x, query = torch.randn(batch, 1, 6000) * 0.3, torch.eye(41)[:batch]
    calls = _spy(monkeypatch, "dcc_step")
    fused = _stream(model, x, query, sizes)
    rows = [args[1].shape[0] * args[1].shape[1] for args in calls]
    assert (max(rows, default=0) > 32) == (max(sizes) > 416)  # tiles (more than 32 rows) where a chunk is long
    _layer_by_layer(monkeypatch)
    plain = _stream(model, x, query, sizes)
    with torch.inference_mode():
        offline = model(x, query)
    assert (fused - plain).abs().max() <= 1e-5
    assert (fused - offline).abs().max() <= 1e-5


def test_fused_encoder_step_is_not_used_for_inference_tensor_weights():
    """Parameters made under inference_mode have no version counter: such a model streams layer by layer."""
    torch.manual_seed(0)
    with torch.inference_mode():
        model = _randomised(create("wavemamba-small", enc_dim=64, dec_dim=32, num_enc_layers=3)).eval()
        x, query = torch.randn(1, 1, 3000) * 0.3, torch.eye(41)[:1]
        offline = model(x, query)
    streamer = model.streamer(query)
    out = torch.cat([*(streamer.feed(p) for p in x.split(416, -1)), streamer.flush()], dim=-1)
    assert streamer.encoder_state.plan.layers is None
    assert (out - offline).abs().max() <= 1e-5


@pytest.mark.parametrize("how", ["in place", "replaced"])
def test_fused_encoder_step_follows_weight_changes(how, monkeypatch):
    """A weight changed in place or a parameter replaced between chunks is used from the next chunk on."""
    _staged(monkeypatch)  # (WaveMamba's chunks would go through one kernel call: tested below)
    torch.manual_seed(0)
    model = _randomised(create("wavemamba-small", enc_dim=64, dec_dim=32, num_enc_layers=3)).eval()
    x, query = torch.randn(1, 1, 3000) * 0.3, torch.eye(41)[:1]

    def change(m: nn.Module) -> None:
        conv = m.mask_gen.encoder.dcc_layers[1].layers["3"]
        with torch.no_grad():
            if how == "in place":
                conv.weight.mul_(-1.5)
            else:
                conv.weight = nn.Parameter(conv.weight * -1.5)

    def run(model: nn.Module) -> torch.Tensor:
        return _stream(copy.deepcopy(model), x, query, [416], change)

    fused = run(model)
    _layer_by_layer(monkeypatch)
    plain = run(model)
    monkeypatch.undo()
    assert (fused - plain).abs().max() <= 1e-5
    assert (fused - _stream(copy.deepcopy(model), x, query, [416])).abs().max() > 1e-2  # the change mattered


@pytest.mark.parametrize("frames", [[13], [1], [1, 4, 2], [13, 40, 1, 33]])
@pytest.mark.parametrize("batch", [1, 2])
def test_fused_cross_mamba_step_equals_the_operation_by_operation_step(frames, batch, monkeypatch):
    """A CrossMamba block's streamed step in one call (`crossmamba._StepPlan`: chunks of up to LINEAR_ROWS frames,
    the cpu scan) and operation by operation, mixed on the same states: equal streams and states."""
    torch.manual_seed(0)
    block = _randomised(CrossMambaBlock(24, d_state=5, d_conv=4, expand=3))  # d_inner 72: a partial vector
    query, value = torch.randn(batch, 60, 24), torch.randn(batch, 60, 24)

    def stream() -> tuple[torch.Tensor, MambaState]:
        state, outs, at, i = block.init_state(batch), [], 0, 0
        with torch.inference_mode():
            while at < value.shape[1]:
                n = frames[i % len(frames)]  # batch * n rows: both sides of LINEAR_ROWS
                outs.append(block.step(query[:, at : at + n], value[:, at : at + n], state)[0].clone())
                at, i = at + n, i + 1
        return torch.cat(outs, dim=1), state

    fused, fused_state = stream()
    assert block in crossmamba._STEP_PLANS and crossmamba._STEP_PLANS[block].block is not None
    monkeypatch.setattr(kernels, "LINEAR_ROWS", 0)
    plain, plain_state = stream()
    with torch.inference_mode():
        offline = block(query, value)
    assert (fused - plain).abs().max() <= 1e-5 and (fused - offline).abs().max() <= 1e-5
    for got, expected in zip(fused_state, plain_state, strict=True):
        assert (got - expected).abs().max() <= 1e-5


@pytest.mark.parametrize("case", ["in place", "replaced", "reference scan", "inference tensors"])
def test_fused_cross_mamba_step_follows_weights_and_backend(case, monkeypatch):
    """A weight changed in place or replaced between chunks is used from the next one; an explicit `reference`
    scan backend and inference-tensor parameters run operation by operation; all equal the plain step."""
    torch.manual_seed(0)
    with torch.inference_mode(case == "inference tensors"):
        block = _randomised(CrossMambaBlock(16, d_state=4))
    if case == "reference scan":
        block.mixer.scan_backend = "reference"
    query, value = torch.randn(1, 20, 16), torch.randn(1, 20, 16)

    def stream(block: nn.Module) -> torch.Tensor:
        state, outs = block.init_state(1), []
        for i, (q, v) in enumerate(zip(query.split(5, 1), value.split(5, 1), strict=True)):
            with torch.inference_mode():
                outs.append(block.step(q, v, state)[0].clone())
            if i == 1 and case in ("in place", "replaced"):
                with torch.no_grad():
                    if case == "in place":
                        block.mixer.out_proj.weight.mul_(-2)
                    else:
                        block.mixer.x_proj.weight = nn.Parameter(block.mixer.x_proj.weight * -2)
        return torch.cat(outs, dim=1)

    def fresh() -> nn.Module:  # (a deep copy of inference tensors is made of normal ones)
        return block if case == "inference tensors" else copy.deepcopy(block)

    copied = fresh()
    fused = stream(copied)
    plan = crossmamba._STEP_PLANS.get(copied)
    assert (plan is not None and plan.block is not None) == (case in ("in place", "replaced"))
    monkeypatch.setattr(kernels, "LINEAR_ROWS", 0)
    assert (fused - stream(fresh())).abs().max() <= 1e-5


@pytest.mark.parametrize("name", ["wavemamba-small", "waveformer-small"])
@pytest.mark.parametrize("batch", [1, 2])
def test_fused_front_and_back_equal_the_operation_by_operation_chunk(name, batch, monkeypatch):
    """in_conv + encoder + projections (`fused_front`) and mask + out_conv (`fused_back`) in one call each, mixed
    with chunks too long for them: the same stream as operation by operation, and as the offline forward."""
    _staged(monkeypatch)  # (WaveMamba's chunks would go through one kernel call: tested below)
    torch.manual_seed(0)
    model = _randomised(create(name, enc_dim=64, dec_dim=32, num_enc_layers=3)).eval()
    x, query = torch.randn(batch, 1, 8000) * 0.3, torch.eye(41)[:batch]
    sizes = [32, 2000, 1, 416, 5000, 7]
    fused = _stream(model, x, query, sizes)
    _layer_by_layer(monkeypatch)
    plain = _stream(model, x, query, sizes)
    with torch.inference_mode():
        offline = model(x, query)
    assert (fused - plain).abs().max() <= 1e-5 and (fused - offline).abs().max() <= 1e-5


@pytest.mark.parametrize("sizes", [[32], [128, 416], [1, 31, 64, 5, 27], [416, 416, 3000, 32, 8]])
@pytest.mark.parametrize("batch", [1, 2])
@pytest.mark.parametrize(("enc_dim", "dec_dim"), [(64, 32), (40, 20)])
def test_whole_chunk_kernel_equals_the_staged_stream(sizes, batch, enc_dim, dec_dim, monkeypatch):
    """WaveMamba's chunks of whole frames after whole frames (up to LINEAR_ROWS frames of all rows) run in one call
    (`kernels.dcc_chunk`), between partial frames and long blocks that the stages take, on the same buffers: the
    same stream as stage by stage (the same kernels: bit for bit) and as the offline forward. Waveformer's decoder
    has no fused step: its streamer never tries."""
    torch.manual_seed(0)
    model = _randomised(create("wavemamba-small", enc_dim=enc_dim, dec_dim=dec_dim, num_enc_layers=4)).eval()
    x, query = torch.randn(batch, 1, 6000) * 0.3, torch.eye(41)[:batch]
    calls = _spy(monkeypatch, "dcc_chunk")
    fused = _stream(model, x, query, sizes)
    assert calls and all(chunk.shape[-1] % 32 == 0 for _, chunk, _ in calls)
    _staged(monkeypatch)
    staged = _stream(model, x, query, sizes)
    with torch.inference_mode():
        offline = model(x, query)
    assert torch.equal(fused, staged)
    assert (fused - offline).abs().max() <= 1e-5
    assert create("waveformer-small", enc_dim=64, dec_dim=32, num_enc_layers=2).streamer(query).chunk_plan is False


@pytest.mark.parametrize("case", ["in place", "replaced", "reference scan", "inference tensors"])
def test_whole_chunk_kernel_follows_weights_and_backend(case, monkeypatch):
    """A weight changed in place or a parameter replaced between chunks is used from the next chunk on; an explicit
    `reference` scan backend (set mid-stream) and inference-tensor parameters leave the chunks to the stages; all
    equal the staged stream."""
    torch.manual_seed(0)
    with torch.inference_mode(case == "inference tensors"):
        model = _randomised(create("wavemamba-small", enc_dim=64, dec_dim=32, num_enc_layers=3)).eval()
    x, query = torch.randn(1, 1, 3328) * 0.3, torch.eye(41)[:1]  # 8 chunks of 416 samples

    def change(m: nn.Module) -> None:
        with torch.no_grad():
            if case == "in place":
                m.mask_gen.decoder.mixer.out_proj.weight.mul_(-1.5)
            elif case == "replaced":
                conv = m.mask_gen.encoder.dcc_layers[1].layers["3"]
                conv.weight = nn.Parameter(conv.weight * -1.5)
            elif case == "reference scan":
                crossmamba.set_scan_backend(m, "reference")

    def run() -> torch.Tensor:  # (a deep copy of inference tensors is made of normal ones)
        return _stream(model if case == "inference tensors" else copy.deepcopy(model), x, query, [416], change)

    calls = _spy(monkeypatch, "dcc_chunk")
    fused = run()
    # the first chunk's window starts before the input (the stages take it); then 7 chunks, 2 before the change
    assert len(calls) == {"in place": 7, "replaced": 7, "reference scan": 2, "inference tensors": 0}[case]
    _staged(monkeypatch)
    assert torch.equal(fused, run())


@pytest.mark.parametrize("name", ["wavemamba-small", "waveformer-small"])
@pytest.mark.parametrize("batch", [1, 2])
def test_block_kernels_equal_the_operations(name, batch, monkeypatch):
    """Blocks longer than a streamed chunk run the label and projections (`fused_project`) and the mask and
    out_conv's overlap-add (`fused_back`) as kernels between MKL/oneDNN products: the same stream as with those
    steps as PyTorch operations."""
    torch.manual_seed(0)
    model = _randomised(create(name, enc_dim=64, dec_dim=32, num_enc_layers=3)).eval()
    x, query = torch.randn(batch, 1, 12000) * 0.3, torch.eye(41)[:batch]
    sizes = [3000, 5000, 32, 4000]  # 93, 156, 1 and 125 frames
    calls = {function: _spy(monkeypatch, function) for function in ("dcc_label", "dcc_mask", "dcc_overlap")}
    fast = _stream(model, x, query, sizes)
    assert all(len(record) >= 3 for record in calls.values())
    monkeypatch.setattr(dcc.DCCExtractor, "fused_project", lambda *args: None)
    monkeypatch.setattr(dcc.DCCExtractor, "fused_back", lambda *args: None)
    plain = _stream(model, x, query, sizes)
    assert (fast - plain).abs().max() <= 1e-5
