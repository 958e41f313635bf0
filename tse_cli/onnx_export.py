"""What `tse export` does: a causal model's streaming step as an ONNX graph plus a JSON sidecar, checked against
the PyTorch streamer before either is kept.

The graph is `tse_cli.models.step.StreamingStep` traced for one batch row and one chunk size (`chunk_samples`,
a multiple of the model's frame hop L and of its decoder group): inputs `chunk` (1, chunk_samples) float32
samples at the model's rate, `query` (1, 41) multi-hot, `valid` (frames,) for models whose decoder looks ahead
inside a group (Waveformer), then the state tensors; outputs `out` (1, chunk_samples) and the new states, in the
same order. The sidecar (`<name>.json` beside `<name>.onnx`) says everything a runtime needs to drive it: rates,
chunk and frame sizes, latency, the inputs, and every state's name and shape (all start at zero; see
`StreamingStep` for the one alignment rule). `tse_cli.onnx_runtime` is such a runtime.

Verification: the exported file runs through `tse_cli.onnx_runtime.OnnxStreamer` on `VERIFY_SECONDS` of a
synthetic scene fed in uneven chunks and is compared with the PyTorch streamer on the same audio; above
`tolerance` (1e-4) the export fails and nothing is left behind. Files are written to tse's temporary names
(`tse_cli.atomic`) and renamed only once verified.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from tse_cli.atomic import atomic_file, follow_umask
from tse_cli.onnx_runtime import FORMAT, VERSION, sidecar_path

OPSET = 17
TOLERANCE = 1e-4
VERIFY_SECONDS = 2.0


class ExportError(ValueError):
    """The model cannot be exported, or its export does not match the PyTorch streamer (one line)."""


class NotExportableError(ExportError):
    """What was asked does not apply to this model: it has no streaming step, or `--chunk` is no whole number of
    its steps (a usage error for `tse export`)."""


@dataclass(frozen=True)
class ExportReport:
    """What an export wrote and how well it matched: `max_abs_error` of the ONNX stream against PyTorch's."""

    onnx: Path
    sidecar: Path
    chunk_samples: int
    max_abs_error: float
    verified_seconds: float
    nodes: int


def _step_for(model: Any, chunk_samples: int) -> Any:
    from tse_cli.models.dcc import DCCExtractor
    from tse_cli.models.step import StreamingStep

    if not isinstance(model, DCCExtractor):
        name = getattr(model, "arch", type(model).__name__)
        raise NotExportableError(f"model {name} has no streaming step to export (Waveformer and WaveMamba do)")
    group = model.L * model.mask_gen.decoder.granularity
    if chunk_samples < group or chunk_samples % group:
        raise NotExportableError(
            f"--chunk must be a positive multiple of {group} samples for this model, got {chunk_samples}"
        )
    return StreamingStep(model, chunk_samples // model.L)


def describe(model: Any, step: Any) -> dict[str, Any]:
    """The sidecar's content (without the verification record)."""
    from tse_cli import __version__

    inputs = ["chunk", "query", *(["valid"] if step.takes_valid else []), *step.state_names()]
    return {
        "format": FORMAT,
        "version": VERSION,
        "architecture": getattr(model, "arch", type(model).__name__),
        "config": dict(getattr(model, "config", {})),
        "sample_rate": int(model.sample_rate),
        "hop_samples": int(model.L),
        "chunk_samples": int(step.chunk_samples),
        "frames_per_chunk": int(step.frames),
        "latency_samples": int(model.latency_samples),
        "label_len": int(model.label_len),
        "clue_kind": model.clue_kind,
        "takes_valid": bool(step.takes_valid),
        "inputs": inputs,
        "outputs": ["out", *(f"{name}.next" for name in step.state_names())],
        "states": [
            {"name": name, "shape": list(tensor.shape), "dtype": "float32"} for name, tensor in step.initial_states(1)
        ],
        "opset": OPSET,
        "exported_with": {"tse": __version__, "torch": torch.__version__},
    }


def _trace(step: Any, meta: dict[str, Any], target: str) -> None:
    """Trace `step` into an ONNX file at `target` (TorchScript exporter: no extra package needed)."""
    example = [torch.zeros(1, step.chunk_samples), torch.zeros(1, meta["label_len"])]
    example += [torch.ones(step.frames)] if step.takes_valid else []
    example += [tensor for _, tensor in step.initial_states(1)]
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice and tracer warnings
        torch.onnx.export(
            step,
            tuple(example),
            target,
            dynamo=False,
            input_names=meta["inputs"],
            output_names=meta["outputs"],
            opset_version=OPSET,
            do_constant_folding=True,
        )


def verify(model: Any, onnx_file: str | Path, meta: dict[str, Any], seconds: float = VERIFY_SECONDS) -> float:
    """Max |ONNX stream - PyTorch stream| on the first `seconds` of a synthetic scene
    (`tse_cli.train.demo.make_scene`: events over a background, at realistic levels), its target class as the
    clue, fed in uneven chunks (both exact for any chunking)."""
    from tse_cli.classes import NUM_CLASSES, class_index
    from tse_cli.onnx_runtime import OnnxModel
    from tse_cli.train.demo import make_scene

    mixture, _, target, _ = make_scene(seed=0)
    x = torch.from_numpy(mixture[: round(seconds * meta["sample_rate"])]).view(1, 1, -1)
    samples = x.shape[-1]
    query = torch.zeros(1, meta["label_len"])
    query[0, class_index(target) if meta["label_len"] == NUM_CLASSES else 0] = 1.0
    generator = torch.Generator().manual_seed(0)
    sizes = torch.randint(1, 3 * meta["chunk_samples"], (samples,), generator=generator).tolist()
    pieces, start = [], 0
    for size in sizes:
        if start >= samples:
            break
        pieces.append(x[..., start : start + size])
        start += size
    onnx_stream = OnnxModel(onnx_file, meta).streamer(query)
    ours = torch.cat([*(onnx_stream.feed(p) for p in pieces), onnx_stream.flush()], dim=-1)
    with torch.inference_mode():
        torch_stream = model.streamer(query)
        theirs = torch.cat([*(torch_stream.feed(p) for p in pieces), torch_stream.flush()], dim=-1)
    if ours.shape != theirs.shape:
        raise ExportError(f"the exported step returned {ours.shape[-1]} samples for {theirs.shape[-1]}")
    return float((ours - theirs).abs().max())


def export_onnx(model: Any, path: str | Path, chunk_samples: int, tolerance: float = TOLERANCE) -> ExportReport:
    """Export `model`'s streaming step for `chunk_samples`-sample chunks to `path` (+ its JSON sidecar), verified
    against the PyTorch streamer; raises `ExportError` (and writes nothing) when it cannot or when they differ by
    more than `tolerance`."""
    import onnx

    path = Path(path)
    model = model.float().cpu().eval()
    step = _step_for(model, chunk_samples)
    meta = describe(model, step)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as onnx_tmp, atomic_file(sidecar_path(path)) as json_tmp:
        _trace(step, meta, str(onnx_tmp))
        follow_umask(onnx_tmp)  # the exporter writes its file with a mode of its own
        nodes = len(onnx.load(str(onnx_tmp), load_external_data=False).graph.node)
        error = verify(model, onnx_tmp, meta)
        if not error <= tolerance:  # also catches NaN
            raise ExportError(
                f"the exported step differs from the PyTorch streamer by {error:.2e} (more than {tolerance:g})"
            )
        meta["verified"] = {"max_abs_error": error, "seconds": VERIFY_SECONDS, "tolerance": tolerance}
        json_tmp.write_text(json.dumps(meta, indent=1) + "\n")
    return ExportReport(path, sidecar_path(path), chunk_samples, error, VERIFY_SECONDS, nodes)
