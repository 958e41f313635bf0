"""AV-SepFormer / AV-SepMamba: sizes, published key names, positional tables, chunking, the bidirectional blocks,
the published reader (the contract every architecture keeps is in test_contract.py)."""

from __future__ import annotations

import pytest
import torch
from tiny import tiny

from tse_cli.checkpoint import CheckpointError
from tse_cli.models import create
from tse_cli.models.avsepformer import AVSepFormer, load_published
from tse_cli.models.avsepmamba import AVSepMamba
from tse_cli.models.dualpath import align_visual, overlap_add, segment


def former(**overrides) -> AVSepFormer:
    """A tiny AV-SepFormer with 16-frame chunks (many chunks from little audio)."""
    return tiny("av-sepformer-small", **{"chunk": 16, **overrides})


def mamba() -> AVSepMamba:
    return tiny("av-sepmamba-small", chunk=16)


def n_params(name: str) -> int:
    with torch.device("meta"):
        model = create(name)
    return sum(p.numel() for p in model.parameters())


def test_sepformer_sizes_are_the_published_ones():
    assert n_params("av-sepformer-large") == 29_631_622  # published code, Table I 29.63 M
    assert n_params("av-sepformer-small") == 13_317_446  # Table I 13.32 M


@pytest.mark.parametrize(("name", "table"), [("av-sepmamba-large", 30.36e6), ("av-sepmamba-small", 9.08e6)])
def test_sepmamba_sizes_match_table_one(name, table):
    assert abs(n_params(name) - table) / table < 0.01


def test_published_key_names_and_frozen_tables():
    with torch.device("meta"):
        model = create("av-sepformer-large")
    state = model.state_dict()
    for key in (
        "AudioEncoder.conv1d.weight",
        "AudioDecoder.weight",
        "Separator.norm.weight",
        "Separator.visual_conv.0.net.1.running_var",
        "Separator.visual_conv.4.net.5.weight",
        "Separator.visual_conv.5.bias",
        "Separator.dual_mdl.1.intra_mdl.mdl.layers.7.self_attn.in_proj_weight",
        "Separator.dual_mdl.1.inter_mdl.mdl.cross_attention_layer.self_attn.out_proj.bias",
        "Separator.dual_mdl.0.inter_mdl.mdl.transformer_layers.6.linear2.weight",
        "Separator.dual_mdl.0.pos2d.penc.inv_freq",
        "Separator.dual_mdl.0.intra_norm.weight",
        "Separator.conv2d.bias",
        "Separator.output_gate.0.weight",
        "Separator.end_conv1x1.weight",
    ):
        assert key in state, key
    assert "Separator.dual_mdl.0.inter_mdl.mdl.transformer_layers.7.linear1.weight" not in state
    assert state["Separator.dual_mdl.0.intra_mdl.pos_enc.pe"].shape == (5000, 1, 256)
    assert state["Separator.dual_mdl.0.pos2d.penc.inv_freq"].shape == (64,)
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    assert sorted(frozen) == sorted(
        f"Separator.dual_mdl.{i}.{k}" for i in range(2) for k in ("intra_mdl.pos_enc.pe", "pos2d.penc.inv_freq")
    )


def test_positional_tables_are_the_sinusoids():
    model = former()
    d = model.config["d_model"]
    pe = model.Separator.dual_mdl[0].intra_mdl.pos_enc.pe[:, 0]
    pos, i = 7, 3
    angle = torch.tensor(pos / 10000 ** (2 * i / d))
    assert pe[pos, 2 * i].item() == pytest.approx(torch.sin(angle).item(), abs=1e-6)
    assert pe[pos, 2 * i + 1].item() == pytest.approx(torch.cos(angle).item(), abs=1e-6)
    table = model.Separator.dual_mdl[0].pos2d(5, 9)  # (channels, K, S): first half k, second half s
    half = d // 2
    assert table.shape == (d, 5, 9)
    assert torch.allclose(table[:half, 3, 0], table[:half, 3, 8]) and torch.allclose(
        table[half:, 0, 4], table[half:, 4, 4]
    )
    assert table[0, 2, 0].item() == pytest.approx(torch.sin(torch.tensor(2.0)).item(), abs=1e-6)


@pytest.mark.parametrize("length", [1, 79, 80, 160, 333, 1000])
def test_segment_then_overlap_add_counts_every_frame_twice(length):
    x = torch.randn(2, 3, length)
    chunks, gap = segment(x, 160)
    assert chunks.shape[:3] == (2, 3, 160) and chunks.shape[-1] % 2 == 0
    assert torch.allclose(overlap_add(chunks, gap), 2 * x)
    # chunk s starts at padded frame 80 s: its centre (k = 80) is original frame 80 s
    s = chunks.shape[-1] // 2
    if 80 * s < length:
        assert torch.equal(chunks[:, :, 80, s], x[:, :, 80 * s])


def test_chunk_hop_is_one_video_frame():
    # 4 s at 16 kHz: 7,999 encoder frames -> 102 chunks at 40 ms hops for 100 video frames (+2 replicated)
    w = torch.zeros(1, 1, 7999)
    chunks, _ = segment(w, 160)
    assert chunks.shape[-1] == 102
    v = torch.arange(100.0).reshape(1, 1, 100)
    aligned = align_visual(v, 102)
    assert aligned[0, 0, -3:].tolist() == [99.0, 99.0, 99.0]
    assert torch.equal(align_visual(torch.arange(110.0).reshape(1, 1, 110), 102)[0, 0], torch.arange(102.0))


def test_window_is_the_published_training_crop():
    assert AVSepFormer.window_samples == AVSepMamba.window_samples == 4 * 16000


def test_bad_shapes_are_refused():
    model = former()
    with pytest.raises(ValueError, match="mixture must be"):
        model(torch.randn(2, 100), torch.randn(2, 3, 512))
    with pytest.raises(ValueError, match="visual must be"):
        model(torch.randn(2, 1, 100), torch.randn(2, 3, 256))


def test_sepmamba_layout_and_bidirectional_blocks_equal_their_definition():
    torch.manual_seed(2)
    model = mamba().double()
    block = model.Separator.dual_mdl[0]
    assert len(block.intra_mdl.layers) == 1 and len(block.inter_mdl.layers) == 1
    q, v = torch.randn(3, 11, 16, dtype=torch.float64), torch.randn(3, 11, 16, dtype=torch.float64)

    cross = block.inter_mdl.cross
    fw, bw = cross.mamba, cross.mamba_bw
    forward = fw.mixer(fw.norm_query(q), fw.norm(v)) + v
    backward = (bw.mixer(bw.norm_query(q.flip(1)), bw.norm(v.flip(1))) + v.flip(1)).flip(1)
    assert torch.allclose(cross(q, v), forward + backward, atol=1e-12)

    self_block = block.intra_mdl.layers[0]
    fw, bw = self_block.mamba, self_block.mamba_bw
    forward = fw.mixer(fw.norm(v)) + v
    backward = (bw.mixer(bw.norm(v.flip(1))) + v.flip(1)).flip(1)
    assert torch.allclose(self_block(v), forward + backward, atol=1e-12)

    # non-causal: the first output depends on the last input, through the backward direction only
    v.requires_grad_(True)
    self_block(v)[:, 0].sum().backward()
    assert v.grad[:, -1].abs().sum() > 0
    v.grad = None
    fw.mixer(fw.norm(v))[:, 0].sum().backward()
    assert v.grad[:, 1:].abs().sum() == 0


def test_inter_mamba_queries_with_the_visual_stream():
    torch.manual_seed(3)
    inter = mamba().Separator.dual_mdl[0].inter_mdl
    audio, visual = torch.randn(2, 9, 16), torch.randn(2, 9, 16)
    expected = inter.layers[0](inter.cross(visual, audio))
    assert torch.allclose(inter(audio, visual), expected, atol=1e-6)


def test_load_published_reads_ignite_and_ddp_state_dicts(tmp_path):
    torch.manual_seed(4)
    model = former(n_heads=8, chunk=160).eval()  # 8 heads and 160-frame chunks as published
    mixture, visual = torch.randn(1, 1, 1600), torch.randn(1, 4, 512)
    with torch.no_grad():
        expected = model(mixture, visual)
    for name, obj in [
        ("bare.pt", model.state_dict()),
        ("ddp.pt", {"model": {f"module.{k}": v for k, v in model.state_dict().items()}}),
    ]:
        torch.save(obj, tmp_path / name)
        loaded = load_published(tmp_path / name)
        assert loaded.arch == "av-sepformer-large" and not loaded.training
        read = ("d_model", "d_ffn", "intra_layers", "inter_layers")
        assert {k: loaded.config[k] for k in read} == {k: model.config[k] for k in read}
        assert loaded.config["blocks"] == 2
        with torch.no_grad():
            assert torch.equal(loaded(mixture, visual), expected)


def test_load_published_errors(tmp_path):
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(CheckpointError, match="junk.pt: not a readable torch checkpoint"):
        load_published(tmp_path / "junk.pt")
    with pytest.raises(CheckpointError, match="missing.pt: no such file"):
        load_published(tmp_path / "missing.pt")
    torch.save({"encoder.weight": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="other.pt: not an AV-SepFormer checkpoint"):
        load_published(tmp_path / "other.pt")
    state = former().state_dict()
    del state["Separator.conv2d.bias"]
    torch.save(state, tmp_path / "partial.pt")
    with pytest.raises(
        CheckpointError, match=r"partial.pt: weights do not match .*missing: Separator.conv2d.bias \(1\)"
    ):
        load_published(tmp_path / "partial.pt")
