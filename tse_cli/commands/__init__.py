"""One module per `tse` subcommand; each exposes `register(app: typer.Typer) -> None`.

Shared here: `fail` (the one-line error and its exit code), `DEFAULT_MODEL`, `load_model_or_exit` with
`check_engine` (the model that `tse extract` and `tse stream` name, loaded with their exit codes, in PyTorch or,
for a graph written by `tse export`, in ONNX Runtime: `--engine onnx`; `require_onnx` for that extra),
`known_causal` with `refuse_window_model` (a window model refused before any download by the commands that
stream), and `VERBOSE_OPTION` (`-v/--verbose` of a subcommand, the same as `tse -v`: details on stderr through
`tse_cli.console.detail`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from tse_cli.models.protocol import ExtractionModel

DEFAULT_MODEL = "waveformer"  # the best real model of the registry (`make demo` and `tse demo` use `demo`)
FALLBACK_HINT = "or use --model demo (the small embedded model, for trying tse, not for real recordings)"
ENGINES = ("torch", "onnx")
ENGINE_HELP = "torch, or onnx: a graph from `tse export` (--checkpoint FILE.onnx) in ONNX Runtime, CPU only."


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print `error: message` on stderr and return the Exit to raise (one line, no traceback)."""
    from tse_cli import console

    console.error(message)
    return typer.Exit(code)


def load_model_or_exit(
    spec: str, device: str, classes: list[int], default: bool = False, engine: str = "torch"
) -> ExtractionModel:
    """The model `spec` on `device` (`tse_cli.loading.load_checked`). Usage errors, exit 2:
    a spec that names nothing (not a registry name, a local path that does not exist) and a union of `classes`
    the model cannot extract, both found before any download. Weights that cannot be had or read (offline, a
    failed download, a damaged or foreign checkpoint): one line, exit 1, which for the `default` model (the user
    named none) also offers the embedded demo model (`FALLBACK_HINT`).
    `engine="onnx"`: `spec` is a graph written by `tse export` (`tse_cli.onnx_runtime.OnnxModel`, CPU only)."""
    if engine == "onnx":
        return _load_onnx_or_exit(spec, device)
    from tse_cli.loading import ClassLimitError, load_checked
    from tse_cli.weights import UnknownModelError, WeightsError

    try:
        return load_checked(spec, device, classes)
    except (ClassLimitError, UnknownModelError) as err:  # the latter names the spec and suggests names
        raise fail(str(err), code=2) from None
    except (WeightsError, OSError, ValueError) as err:
        hint = f"; {FALLBACK_HINT}" if default else ""
        raise fail(f"cannot load model {spec!r}: {err}{hint}") from None


def known_causal(spec: str) -> bool | None:
    """Whether the model `spec` names is causal (it streams), known without loading it
    (`tse_cli.loading.known_architecture`: a registry entry or a local checkpoint's config.json); None where
    that cannot tell, the registry included (the loader then reports the problem)."""
    from tse_cli.loading import known_architecture
    from tse_cli.weights import WeightsError

    try:
        arch = known_architecture(spec)
    except (WeightsError, OSError, ValueError):
        return None
    return None if arch is None else arch.causal


def refuse_window_model(spec: str, causal: bool | None, command: str, advice: str) -> None:
    """Usage error (exit 2) when the model is known not to be causal: `command` needs one that streams."""
    if causal is False:
        raise fail(
            f"model {spec!r} is not causal (it extracts whole windows); {command} needs a causal model such as "
            f"waveformer or wavemamba; {advice}",
            code=2,
        )


def _set_verbose(value: bool) -> bool:
    if value:
        from tse_cli import console

        console.set_verbose(True)
    return value


VERBOSE_OPTION = typer.Option(
    False,
    "--verbose",
    "-v",
    callback=_set_verbose,
    help="Print what the run uses on stderr: model, weights file, device, scan backend, threads.",
)


def check_engine(engine: str, device: str) -> str:
    """The device for `engine` (`auto` is the CPU for ONNX Runtime); an unknown engine, or ONNX Runtime on
    another device, is a usage error (exit 2)."""
    if engine not in ENGINES:
        raise fail(f"--engine must be {' or '.join(ENGINES)}, not {engine!r}", code=2)
    if engine == "onnx":
        if device.strip().lower() not in ("auto", "cpu"):
            raise fail(f"--engine onnx runs on the CPU, not {device!r} (give --device cpu)", code=2)
        return "cpu"
    return device


def require_onnx(what: str, *modules: str) -> None:
    """Usage error (exit 2) unless the optional `modules` of the onnx extra import: `what` needs them."""
    import importlib

    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError:
            raise fail(f"{what} needs {' and '.join(modules)}: pip install 'tse-cli[onnx]'", code=2) from None


def _load_onnx_or_exit(spec: str, device: str) -> ExtractionModel:
    """A graph written by `tse export` (with its sidecar) in ONNX Runtime; problems are one line."""
    from pathlib import Path

    from tse_cli.onnx_runtime import OnnxModel

    require_onnx("--engine onnx", "onnxruntime")
    if Path(spec).suffix != ".onnx":
        raise fail(f"--engine onnx runs a graph written by `tse export`: give --checkpoint FILE.onnx, not {spec!r}", 2)
    if not Path(spec).is_file():
        raise fail(f"{spec}: no such file")
    try:
        return OnnxModel(spec).to(device)
    except ValueError as err:
        raise fail(str(err)) from None
