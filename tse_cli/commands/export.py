"""`tse export`: a causal model's streaming step as an ONNX graph + JSON sidecar, verified before it is kept.

Loading goes through `tse_cli.commands.load_model_or_exit` (registry names, checkpoint folders, Hub repos, as
`tse extract`); the work is `tse_cli.onnx_export.export_onnx`. The result runs with ONNX Runtime anywhere,
and in tse itself with `tse stream --engine onnx` / `tse extract --engine onnx`.
"""

from __future__ import annotations

from pathlib import Path

import typer

from tse_cli.commands import DEFAULT_MODEL, fail, known_causal, load_model_or_exit, refuse_window_model, require_onnx

DEFAULT_CHUNK = 416  # the published Waveformer hop: 13 frames of 32 samples, 9.4 ms at 44.1 kHz


def export(
    output: Path = typer.Option(..., "-o", "--output", help="The ONNX file to write (its sidecar: same name, .json)."),
    model: str | None = typer.Option(None, "--model", "-m", help=f"Registry model name \\[default: {DEFAULT_MODEL}]."),
    checkpoint: str | None = typer.Option(
        None, "--checkpoint", help="A checkpoint directory or a Hub repo `owner/repo\\[@revision]`."
    ),
    chunk: int = typer.Option(
        DEFAULT_CHUNK,
        "--chunk",
        min=1,
        help="Samples per step at the model's rate: a multiple of 32 (WaveMamba) or of 416 (Waveformer).",
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace the output (and its sidecar) if they exist."),
) -> None:
    """Export a causal model's streaming step (Waveformer, WaveMamba) to ONNX, for ONNX Runtime.

    `tse export --model wavemamba-large -o wm.onnx`: writes wm.onnx (chunk and states in, output and new states
    out) and wm.json (rates, chunk, latency, every state's name and shape), after checking the graph against
    the PyTorch streamer on 2 s of a synthetic scene (max error printed; above 1e-4 nothing is written, exit 1).

    Run it with `tse stream --engine onnx --checkpoint wm.onnx` or `tse extract --engine onnx ...`.

    Exit codes: 0 written; 1 the weights cannot be had, the output cannot be written or the check failed; 2 usage
    error (a window model, a --chunk it cannot step by, an existing output, the onnx extra not installed).
    """
    from tse_cli.onnx_runtime import sidecar_path

    if model is not None and checkpoint is not None:
        raise fail("give either --model or --checkpoint, not both", code=2)
    if output.suffix != ".onnx":
        raise fail(f"{output}: the output must end in .onnx (its sidecar is the .json beside it)", code=2)
    if output.is_dir():
        raise fail(f"{output}: is a folder; give the .onnx file to write", code=2)
    for path in (output, sidecar_path(output)):
        if path.exists() and not overwrite:
            raise fail(f"{path}: already exists (use --overwrite to replace it)", code=2)
    require_onnx("tse export", "onnx", "onnxruntime")
    spec = checkpoint or model or DEFAULT_MODEL
    refuse_window_model(spec, known_causal(spec), "tse export", "tse export writes a streaming step")  # no download

    from tse_cli.onnx_export import ExportError, NotExportableError, export_onnx

    net = load_model_or_exit(spec, "cpu", [], default=not (model or checkpoint))
    try:
        report = export_onnx(net, output, chunk)
    except NotExportableError as err:
        raise fail(f"{spec}: {err}", code=2) from None
    except ExportError as err:
        raise fail(f"{spec}: {err}") from None
    except OSError as err:
        raise fail(f"{output}: cannot write ({err.strerror or err})") from None
    typer.echo(
        f"wrote {report.onnx} and {report.sidecar} ({report.chunk_samples}-sample steps, {report.nodes} nodes); "
        f"max |ONNX - PyTorch| over {report.verified_seconds:g} s: {report.max_abs_error:.1e}"
    )


def register(app: typer.Typer) -> None:
    """Add `tse export` to the app."""
    app.command("export")(export)
