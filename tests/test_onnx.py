"""`tse export` and the ONNX engine: the exported streaming step equals the PyTorch streamer (and so the offline
forward) on tiny models for several chunk sizes, any feed sizes and batch rows; a failed check writes nothing;
`tse stream --engine onnx` and `tse extract --engine onnx` give what the PyTorch engine gives."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from tiny import tiny
from typer.testing import CliRunner

from tse_cli.cli import app
from tse_cli.models.step import StreamingStep

pytest.importorskip("onnx", reason="onnx not installed (pip install 'tse-cli[onnx]')")
pytest.importorskip("onnxruntime", reason="onnxruntime not installed (pip install 'tse-cli[onnx]')")

from tse_cli import onnx_export  # noqa: E402
from tse_cli.onnx_export import ExportError, export_onnx  # noqa: E402
from tse_cli.onnx_runtime import OnnxModel, read_sidecar  # noqa: E402

QUERY = torch.eye(41)[[0, 3]]


def _model(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    model = tiny(name).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model


def _stream(streamer, x: torch.Tensor, sizes: list[int]) -> torch.Tensor:
    outs, start = [], 0
    for size in sizes:
        outs.append(streamer.feed(x[..., start : start + size]))
        start += size
    outs.append(streamer.feed(x[..., start:]))
    return torch.cat([*outs, streamer.flush()], dim=-1)


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict[tuple[str, int], Path]:
    """Tiny WaveMamba at 32-, 128- and 416-sample steps, tiny Waveformer at 416 and 832."""
    folder = tmp_path_factory.mktemp("onnx")
    paths = {}
    for name, chunks in (("wavemamba-small", (32, 128, 416)), ("waveformer-small", (416, 832))):
        for chunk in chunks:
            path = folder / f"{name}-{chunk}.onnx"
            report = export_onnx(_model(name), path, chunk)
            assert report.max_abs_error <= 1e-5 and report.onnx == path and report.sidecar.is_file()
            paths[(name, chunk)] = path
    return paths


@pytest.mark.parametrize(
    ("name", "chunk"),
    [("wavemamba-small", 32), ("wavemamba-small", 128), ("wavemamba-small", 416), ("waveformer-small", 416),
     ("waveformer-small", 832)],
)  # fmt: skip
@pytest.mark.parametrize("samples", [0, 20, 33, 3000])
def test_onnx_stream_equals_pytorch_stream_and_forward(exported, name, chunk, samples):
    """Two batch rows, uneven feeds (shorter and longer than a step), inputs shorter than one frame."""
    model, onnx_model = _model(name), OnnxModel(exported[(name, chunk)], threads=1)
    x = torch.randn(2, 1, samples) * 0.3
    sizes = [1, 7, chunk + 5, 2 * chunk, 3]
    got = _stream(onnx_model.streamer(QUERY), x, sizes)
    with torch.inference_mode():
        expected = _stream(model.streamer(QUERY), x, sizes)
        offline = model(x, QUERY)
    assert got.shape == expected.shape == (2, 1, samples)
    if samples:
        assert (got - expected).abs().max() <= 1e-5
        assert (got - offline).abs().max() <= 1e-5
        assert (onnx_model(x, QUERY) - offline).abs().max() <= 1e-5


def test_sidecar_describes_the_graph(exported):
    import onnx

    path = exported[("wavemamba-small", 128)]
    meta = read_sidecar(path)
    graph = onnx.load(path).graph
    assert [i.name for i in graph.input] == meta["inputs"] and [o.name for o in graph.output] == meta["outputs"]
    step = StreamingStep(_model("wavemamba-small"), 4)
    assert [s["name"] for s in meta["states"]] == step.state_names()
    assert [s["shape"] for s in meta["states"]] == [list(t.shape) for _, t in step.initial_states(1)]
    assert (meta["sample_rate"], meta["chunk_samples"], meta["hop_samples"], meta["takes_valid"]) == (
        44100,
        128,
        32,
        False,
    )
    assert read_sidecar(exported[("waveformer-small", 416)])["takes_valid"]
    assert meta["verified"]["max_abs_error"] <= 1e-5 and meta["verified"]["tolerance"] == 1e-4


def test_chunks_that_cannot_be_a_step_are_refused(tmp_path):
    with pytest.raises(ExportError, match="multiple of 416"):
        export_onnx(_model("waveformer-small"), tmp_path / "w.onnx", 128)
    with pytest.raises(ExportError, match="multiple of 32"):
        export_onnx(_model("wavemamba-small"), tmp_path / "w.onnx", 100)
    with pytest.raises(ExportError, match="no streaming step"):
        export_onnx(tiny("dpm-tse"), tmp_path / "w.onnx", 416)
    assert list(tmp_path.iterdir()) == []


def test_a_failed_check_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(onnx_export, "verify", lambda *args, **kwargs: 3e-3)
    with pytest.raises(ExportError, match=r"differs from the PyTorch streamer by 3.00e-03 \(more than 0.0001\)"):
        export_onnx(_model("wavemamba-small"), tmp_path / "w.onnx", 32)
    assert list(tmp_path.iterdir()) == []


def test_sidecar_problems_are_one_line(tmp_path, exported):
    path = tmp_path / "x.onnx"
    path.write_bytes(exported[("wavemamba-small", 32)].read_bytes())
    with pytest.raises(ValueError, match="x.json: cannot read the sidecar of x.onnx"):
        OnnxModel(path)
    (tmp_path / "x.json").write_text(json.dumps({"format": "something else"}))
    with pytest.raises(ValueError, match="not a tse ONNX stream sidecar"):
        OnnxModel(path)


# the command line ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cli_exported(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny WaveMamba checkpoint, and its export by `tse export` (128-sample steps)."""
    from tse_cli.checkpoint import save_checkpoint

    folder = tmp_path_factory.mktemp("cli")
    save_checkpoint(_model("wavemamba-small"), folder / "ckpt")
    out = folder / "wm.onnx"
    result = CliRunner().invoke(app, ["export", "--checkpoint", str(folder / "ckpt"), "-o", str(out), "--chunk", "128"])
    assert result.exit_code == 0, result.output
    assert f"wrote {out} and {out.with_suffix('.json')}" in result.output and "max |ONNX - PyTorch|" in result.output
    return folder / "ckpt", out


def test_export_command_refuses_what_it_cannot_do(cli_exported, tmp_path):
    checkpoint, out = cli_exported
    runner = CliRunner()
    again = runner.invoke(app, ["export", "--checkpoint", str(checkpoint), "-o", str(out)])
    assert again.exit_code == 2 and "already exists" in again.output
    args = ["export", "--checkpoint", str(checkpoint), "-o", str(tmp_path / "x.onnx"), "--chunk", "100"]
    bad_chunk = runner.invoke(app, args)
    assert bad_chunk.exit_code == 2 and "multiple of 32" in bad_chunk.output and not list(tmp_path.iterdir())
    suffix = runner.invoke(app, ["export", "--checkpoint", str(checkpoint), "-o", str(tmp_path / "x.bin")])
    assert suffix.exit_code == 2 and "must end in .onnx" in suffix.output
    (tmp_path / "d.onnx").mkdir()
    folder = runner.invoke(app, ["export", "--checkpoint", str(checkpoint), "-o", str(tmp_path / "d.onnx")])
    assert folder.exit_code == 2 and "is a folder" in folder.output
    missing = runner.invoke(app, ["export", "--checkpoint", str(tmp_path / "nope"), "-o", str(tmp_path / "x.onnx")])
    assert missing.exit_code == 2 and "nope" in missing.output and len(missing.output.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.onnx"]


def test_export_refuses_a_window_model_before_loading_it(tiny_checkpoint, tmp_path, monkeypatch):
    """From the registry (no download: offline, empty cache) and from a local folder's config.json (its weights
    are never read: here they are garbage)."""
    from tse_cli.checkpoint import save_checkpoint

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    runner = CliRunner()
    registry = runner.invoke(app, ["export", "-m", "dpm-tse", "-o", str(tmp_path / "x.onnx")])
    assert registry.exit_code == 2 and "'dpm-tse' is not causal" in registry.output, registry.output
    folder = save_checkpoint(tiny("av-sepmamba-small"), tmp_path / "av")
    (folder / "model.safetensors").write_bytes(b"not weights")
    local = runner.invoke(app, ["export", "--checkpoint", str(folder), "-o", str(tmp_path / "x.onnx")])
    assert local.exit_code == 2 and "is not causal" in local.output and "tse export needs" in local.output
    assert not (tmp_path / "x.onnx").exists() and not (tmp_path / "hf").exists()


def test_the_onnx_extra_missing_is_a_usage_error(cli_exported, tmp_path, monkeypatch):
    checkpoint, graph = cli_exported
    runner = CliRunner()
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` raises ImportError
    export = runner.invoke(app, ["export", "--checkpoint", str(checkpoint), "-o", str(tmp_path / "x.onnx")])
    assert export.exit_code == 2 and "pip install 'tse-cli[onnx]'" in export.output
    mix = _wav(tmp_path / "mix.wav")
    args = ["extract", str(mix), "-c", "Bark", "--checkpoint", str(graph), "--engine", "onnx", "-o"]
    extract = runner.invoke(app, [*args, str(tmp_path / "out.wav")])
    assert extract.exit_code == 2 and "--engine onnx needs onnxruntime" in extract.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mix.wav"]


def test_an_export_that_cannot_be_written_leaves_nothing(cli_exported, full_disk):
    checkpoint, _ = cli_exported
    result = CliRunner().invoke(app, ["export", "--checkpoint", str(checkpoint), "-o", str(full_disk / "x.onnx")])
    assert result.exit_code == 1 and f"{full_disk / 'x.onnx'}: cannot write" in result.output, result.output
    assert not list(full_disk.iterdir())


def test_the_graph_uses_standard_onnx_operators_only(exported):
    """No custom domain: any ONNX runtime (mobile, C++, web) can run the file."""
    import onnx

    for path in exported.values():
        graph = onnx.load(str(path))
        assert {node.domain for node in graph.graph.node} <= {"", "ai.onnx"}
        assert {opset.domain for opset in graph.opset_import} <= {"", "ai.onnx"}
        onnx.checker.check_model(graph, full_check=True)


def _wav(path: Path, seconds: float = 0.4, channels: int = 2) -> Path:
    rng = np.random.default_rng(0)
    sf.write(path, (0.3 * rng.standard_normal((round(seconds * 44100), channels))).clip(-1, 1), 44100, subtype="FLOAT")
    return path


def test_extract_with_the_onnx_engine_equals_pytorch(cli_exported, tmp_path):
    checkpoint, graph = cli_exported
    mix = _wav(tmp_path / "mix.wav")
    runner = CliRunner()
    for engine, spec, out in (("torch", checkpoint, "torch.wav"), ("onnx", graph, "onnx.wav")):
        args = ["extract", str(mix), "-c", "Bark", "--checkpoint", str(spec), "-o", str(tmp_path / out)]
        result = runner.invoke(app, [*args, "--engine", engine, "--device", "cpu"])
        assert result.exit_code == 0, result.output
    torch_out, onnx_out = (sf.read(tmp_path / name)[0] for name in ("torch.wav", "onnx.wav"))
    assert torch_out.shape == onnx_out.shape and np.abs(torch_out - onnx_out).max() <= 1e-5
    wrong = runner.invoke(app, ["extract", str(mix), "-c", "Bark", "--checkpoint", str(checkpoint), "-o",
                                str(tmp_path / "x.wav"), "--engine", "onnx"])  # fmt: skip
    assert wrong.exit_code == 2 and "give --checkpoint FILE.onnx" in wrong.output


def test_stream_with_the_onnx_engine_equals_pytorch(cli_exported, tmp_path):
    """The real `tse stream` process, stdin to stdout, both engines."""
    checkpoint, graph = cli_exported
    data = _wav(tmp_path / "mix.wav", channels=1).read_bytes()
    outputs = {}
    for engine, spec in (("torch", checkpoint), ("onnx", graph)):
        command = [sys.executable, "-m", "tse_cli", "stream", "-c", "Bark", "--checkpoint", str(spec)]
        command += ["--engine", engine, "--chunk", "100", "--out-dtype", "float32"]
        done = subprocess.run(command, input=data, capture_output=True)
        assert done.returncode == 0, done.stderr.decode()
        outputs[engine] = sf.read(io.BytesIO(done.stdout))[0]
    assert outputs["torch"].shape == outputs["onnx"].shape and np.abs(outputs["torch"] - outputs["onnx"]).max() <= 1e-5
    refused = subprocess.run([sys.executable, "-m", "tse_cli", "stream", "-c", "Bark", "--checkpoint", str(graph),
                              "--engine", "onnx", "--device", "cuda"], input=data, capture_output=True)  # fmt: skip
    assert refused.returncode == 2 and b"--engine onnx runs on the CPU" in refused.stderr
