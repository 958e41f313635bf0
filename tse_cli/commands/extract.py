"""`tse extract`: extract a target sound from files, folders and globs into a file or a mirrored folder tree.

This module parses and validates arguments, plans input -> output paths and renders progress; the engine
(`tse_cli.engine`) does all audio work. Everything a user can get wrong is checked before any audio is read:
class names, the filename template, formats/subtypes, the device, the model and its options (exit code 2,
1 when the model cannot be loaded). Per-file problems (missing, empty, not audio, corrupt, NaN) fail that file
only; the run ends with exit code 1 if any file failed.
"""

from __future__ import annotations

import glob
import json
import string
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from tse_cli.commands import fail

if TYPE_CHECKING:
    from tse_cli.weights import Entry

TEMPLATE_FIELDS = ("stem", "target", "model", "ext")
DEFAULT_TEMPLATE = "{stem}_{target}.{ext}"
DEFAULT_MODEL = "demo"


@dataclass
class Planned:
    """One input and what to do with it: `status` "todo", "skipped" or "failed" (with `error`)."""

    input: Path
    base: Path  # the folder `input` is mirrored relative to under -O
    output: Path | None = None
    residual: Path | None = None
    visual: Path | None = None
    format: str = "WAV"
    subtype: str | None = None
    status: str = "todo"
    error: str | None = None

    @property
    def rel_dir(self) -> Path:
        """The input's folder relative to `base` (mirrored under -O and --visual DIR); `.` outside it."""
        return self.input.parent.relative_to(self.base) if self.input.is_relative_to(self.base) else Path()


# inputs --------------------------------------------------------------------------------------------------------


def _is_audio(path: Path) -> bool:
    from tse_cli.audio import AUDIO_EXTENSIONS  # temporary `.part` outputs are never taken

    return path.suffix.lower() in AUDIO_EXTENSIONS and path.is_file()


def _has_magic(text: str) -> bool:
    return any(c in text for c in "*?[")


def _glob_base(pattern: str) -> Path:
    """The folder before the first wildcard of a glob pattern (outputs mirror the tree below it)."""
    parts = Path(pattern).parts
    first_magic = next(i for i, part in enumerate(parts) if _has_magic(part))
    return Path(*parts[:first_magic]) if first_magic else Path(".")


def expand_inputs(inputs: list[str], recursive: bool, exclude: Path | None) -> list[Planned]:
    """Files as given, audio files in folders (all depths with `recursive`), glob matches; missing paths and
    globs matching nothing become failed entries. Files under `exclude` (the output folder) are left out."""
    planned: list[Planned] = []
    seen: set[Path] = set()
    excluded = exclude.resolve() if exclude else None

    def add(path: Path, base: Path) -> None:
        resolved = path.resolve()
        if resolved in seen or (excluded and resolved.is_relative_to(excluded)):
            return
        seen.add(resolved)
        planned.append(Planned(path, base))

    for text in inputs:
        path = Path(text)
        if path.is_dir():
            walk = path.rglob("*") if recursive else path.iterdir()
            for file in sorted(p for p in walk if _is_audio(p)):
                add(file, path)
        elif path.exists() or not _has_magic(text):
            add(path, path.parent)  # missing files fail later with a one-line reason
        else:
            matches = sorted(Path(m) for m in glob.glob(text, recursive=True))
            files = [m for m in matches if _is_audio(m)]
            if not files:
                planned.append(Planned(path, path.parent, status="failed", error=f"{text}: no audio files match"))
            for file in files:
                add(file, _glob_base(text))
    return planned


# outputs -------------------------------------------------------------------------------------------------------


def check_template(template: str) -> None:
    """Reject unknown fields and paths that could leave the output folder (usage error)."""
    try:
        fields = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as err:
        raise fail(f"--filename {template!r}: {err}", code=2) from None
    unknown = [f for f in fields if f not in TEMPLATE_FIELDS]
    if unknown:
        raise fail(f"--filename: unknown field {{{unknown[0]}}}; use {', '.join(TEMPLATE_FIELDS)}", code=2)
    if not template or Path(template).is_absolute() or ".." in Path(template).parts:
        raise fail(f"--filename {template!r}: must be a relative name inside the output folder", code=2)


def render(template: str, out_dir: Path, rel_dir: Path, **fields: str) -> Path:
    """`out_dir / rel_dir / template`, refusing anything that resolves outside `out_dir`."""
    name = template.format(**fields)
    path = out_dir / rel_dir / name
    if Path(name).is_absolute() or not path.resolve().is_relative_to(out_dir.resolve()) or ".." in Path(name).parts:
        raise ValueError(f"--filename gives {name!r}, which is outside {out_dir}")
    if not Path(name).name or name.endswith(("/", "\\")):
        raise ValueError(f"--filename gives an empty file name {name!r}")
    return path


def residual_path(output: Path) -> Path:
    """`out.wav` -> `out_residual.wav` (for -o)."""
    return output.with_name(f"{output.stem}_residual{output.suffix}")


def choose_format(requested: str | None, output: Path | None, input_format: str | None) -> str:
    """The libsndfile format: --format, else -o's suffix, else the input's when WAV/FLAC, else WAV."""
    from tse_cli.audio import FORMATS, output_format

    if requested:
        fmt = output_format(requested)
        if output is not None and output.suffix.lower() != f".{requested.lower()}":
            raise ValueError(f"-o {output} does not end in .{requested.lower()} (--format {requested})")
        return fmt
    if output is not None:
        suffix = output.suffix.lower().lstrip(".")
        if suffix not in FORMATS:
            raise ValueError(f"-o {output}: cannot write .{suffix or '(none)'} files; use .wav or .flac")
        return FORMATS[suffix]
    return input_format if input_format in FORMATS.values() else "WAV"


def plan_outputs(
    planned: list[Planned],
    *,
    output: Path | None,
    out_dir: Path | None,
    template: str,
    target: str,
    model_name: str,
    fmt: str | None,
    subtype: str | None,
    residual: bool,
    overwrite: bool,
) -> None:
    """Fill `output`/`residual`/`format`/`subtype` of each todo entry and mark skips; raise ValueError for
    clashes (two inputs, one output; an output that is an input) and subtypes the format cannot store."""
    import contextlib

    import soundfile as sf

    from tse_cli.audio import check_subtype

    taken: dict[Path, Path] = {}
    for item in planned:
        if item.status != "todo":
            continue
        input_format = None  # only read when it decides the format (neither --format nor -o)
        if not fmt and output is None and item.input.is_file():
            with contextlib.suppress(sf.SoundFileError):  # not audio: the engine reports it
                input_format = sf.info(str(item.input)).format
        item.format = choose_format(fmt, output, input_format)
        item.subtype = check_subtype(subtype, item.format) if subtype else None
        ext = item.format.lower()
        if output is not None:
            item.output = output
            item.residual = residual_path(output) if residual else None
        else:
            assert out_dir is not None
            rel, fields = item.rel_dir, {"stem": item.input.stem, "model": model_name, "ext": ext}
            item.output = render(template, out_dir, rel, target=target, **fields)
            item.residual = render(template, out_dir, rel, target=f"{target}_residual", **fields) if residual else None
        for path in filter(None, (item.output, item.residual)):
            key = path.resolve()
            if key == item.input.resolve():
                raise ValueError(f"{path}: output would overwrite its own input")
            if key in taken:
                raise ValueError(f"{taken[key]} and {item.input} would both write {path} (use --filename)")
            taken[key] = item.input
        outputs = [p for p in (item.output, item.residual) if p is not None]
        existing = [p for p in outputs if p.exists()]
        if existing and not overwrite:
            if len(existing) == len(outputs):
                item.status = "skipped"
            else:
                item.status, item.error = "failed", f"{existing[0]} exists but not every output does; use --overwrite"
    inputs = {item.input.resolve() for item in planned}
    for key, source in taken.items():
        if key in inputs:
            raise ValueError(f"the output for {source} ({key}) is also an input")


def pair_visual(planned: list[Planned], visual: Path | None) -> None:
    """The lip-embedding file of each input: --visual FILE for all, --visual DIR with `<stem>.npy` (mirroring
    the input's subfolder), or `<stem>.npy` beside the input when --visual is not given."""
    for item in planned:
        if visual is None:
            item.visual = item.input.with_suffix(".npy")
        elif visual.is_dir():
            nested = visual / item.rel_dir / f"{item.input.stem}.npy"
            item.visual = nested if nested.exists() else visual / f"{item.input.stem}.npy"
        else:
            item.visual = visual


# the model -----------------------------------------------------------------------------------------------------


def load_net(spec: str, device: str, indices: list[int]) -> Any:
    """The model `spec` (a checkpoint directory, registry name or Hub repo) loaded on `device`. A registry
    model's class limit is checked against `indices` before its weights are downloaded; the registry is read
    once for both (and not at all for a local path). Errors are one line (exit 1; 2 for too many classes)."""
    from tse_cli.weights import UnknownModelError, WeightsError, load_model, load_registry

    try:
        registry = None if Path(spec).expanduser().exists() else load_registry()
        check_class_count(spec, registry_max_classes(registry.get(spec) if registry else None), indices)
        return load_model(spec, device=device, registry=registry)
    except UnknownModelError as err:  # already names the model and suggests registry names
        raise fail(str(err)) from None
    except (WeightsError, OSError, ValueError) as err:
        raise fail(f"cannot load model {spec!r}: {err}") from None


def registry_max_classes(entry: Entry | None) -> int | None:
    """`max_classes` of a registry entry's architecture, known before its weights are downloaded (None without an
    entry, for an architecture tse does not know, or one without a limit)."""
    from tse_cli.models import ARCHITECTURES

    if entry is None or entry.architecture not in ARCHITECTURES:
        return None
    return ARCHITECTURES[entry.architecture].max_classes


def check_class_count(spec: str, max_classes: int | None, indices: list[int]) -> None:
    """Refuse more classes than the model extracts at a time (usage error)."""
    from tse_cli.classes import FSD_CLASSES

    if max_classes is not None and len(indices) > max_classes:
        names = ", ".join(FSD_CLASSES[i] for i in sorted(indices))
        raise fail(
            f"model {spec!r} extracts at most {max_classes} class(es) at a time, got {len(indices)} ({names}); "
            "run it once per class",
            code=2,
        )


# rendering -----------------------------------------------------------------------------------------------------


class Reporter:
    """Prints per-file outcomes (JSON lines on stdout with --json; one-line errors on stderr), a rich
    progress bar on a terminal, and the final summary."""

    def __init__(self, quiet: bool, as_json: bool, total: int) -> None:
        from rich.console import Console

        self.quiet, self.as_json = quiet, as_json
        self.err = Console(stderr=True, highlight=False, soft_wrap=True)
        self.counts = {"done": 0, "skipped": 0, "failed": 0}
        self.seconds = 0.0
        self.progress = None
        self._task = None
        if not quiet and self.err.is_terminal:
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

            self.progress = Progress(
                TextColumn("[bold]extract"),
                BarColumn(),
                TextColumn("{task.fields[files]}/{task.fields[nfiles]} files"),
                TextColumn("{task.completed:.1f}/{task.total:.1f} s audio"),
                TextColumn("RTF {task.fields[rtf]:.3f}"),
                TextColumn("{task.fields[step]}"),
                TimeElapsedColumn(),
                console=self.err,
                transient=True,
            )
            self._task = self.progress.add_task("extract", total=1.0, files=0, nfiles=total, rtf=0.0, step="")

    def __enter__(self) -> Reporter:
        if self.progress:
            self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.progress:
            self.progress.stop()

    def on_progress(self, p: Any) -> None:
        if self.progress is not None:
            self.progress.update(self._task, completed=p.seconds_done, total=max(p.seconds_total, 1e-9))
            step = f"step {p.step}/{p.steps}" if p.steps else ""
            self.progress.update(self._task, files=p.files_done, rtf=p.rtf, step=step)

    def outcome(self, record: dict[str, Any]) -> None:
        """One input finished (or was skipped / failed before any work)."""
        self.counts[record["status"]] += 1
        self.seconds += record["seconds"] or 0.0
        if self.as_json:
            sys.stdout.write(json.dumps(record) + "\n")
            sys.stdout.flush()
        if record["status"] == "failed":
            self.err.print(f"error: {record['error']}", markup=False)
        elif not self.quiet:
            if record["status"] == "skipped":
                self.err.print(
                    f"skipped {record['input']}: {record['output']} exists (--overwrite to redo)", markup=False
                )
            elif not self.as_json:
                self.err.print(f"{record['input']} -> {record['output']}", markup=False)
        if record.get("clipped"):
            self.err.print(
                f"warning: {record['output']}: {record['clipped']} samples clipped to [-1, 1] "
                "(use --subtype FLOAT to keep them)",
                markup=False,
            )

    def summary(self, elapsed: float) -> None:
        if self.quiet:
            return
        c = self.counts
        rtf = f", RTF {elapsed / self.seconds:.3f}" if self.seconds and c["done"] else ""
        self.err.print(
            f"{c['done']} done, {c['skipped']} skipped, {c['failed']} failed; {self.seconds:.1f} s of audio "
            f"in {elapsed:.1f} s{rtf}",
            markup=False,
        )


def record_of(item: Planned, status: str, seconds: float | None, error: str | None, **extra: Any) -> dict[str, Any]:
    """The --json object for one input."""
    return {
        "input": str(item.input),
        "output": str(item.output) if item.output else None,
        "residual": str(item.residual) if item.residual else None,
        "seconds": seconds,
        "status": status,
        "error": error,
        **extra,
    }


# the command ---------------------------------------------------------------------------------------------------


def extract(
    inputs: list[str] = typer.Argument(..., help="Audio files, folders or glob patterns.", metavar="INPUT..."),
    classes: list[str] = typer.Option(
        None, "-c", "--class", help="Target sound class (repeat for a union; `tse classes` lists them)."
    ),
    model: str | None = typer.Option(None, "--model", "-m", help=f"Registry model name \\[default: {DEFAULT_MODEL}]."),
    checkpoint: str | None = typer.Option(
        None, "--checkpoint", help="A checkpoint directory or a Hub repo `owner/repo\\[@revision]`."
    ),
    output: Path | None = typer.Option(None, "-o", "--output", help="Output file (one input only)."),
    out_dir: Path | None = typer.Option(None, "-O", "--output-dir", help="Output folder; input folders are mirrored."),
    recursive: bool = typer.Option(False, "-r", "--recursive", help="Descend into subfolders of folder inputs."),
    template: str = typer.Option(
        DEFAULT_TEMPLATE, "--filename", help="Output name under -O; fields {stem} {target} {model} {ext}."
    ),
    residual: bool = typer.Option(False, "--residual", help="Also write mixture minus estimate ({target}_residual)."),
    sample_rate: str = typer.Option("keep", "--sample-rate", help="keep: the input's rate; model: the model's."),
    fmt: str | None = typer.Option(None, "--format", help="wav or flac \\[default: -o's suffix, else the input's]."),
    subtype: str | None = typer.Option(
        None, "--subtype", help="PCM_U8 PCM_S8 PCM_16 PCM_24 PCM_32 FLOAT DOUBLE \\[default: the input's]."
    ),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
    batch_size: int = typer.Option(1, "--batch-size", min=1, help="Files run through the model together."),
    jobs: int = typer.Option(2, "--jobs", "-j", min=1, help="Threads reading and writing audio."),
    block_size: int = typer.Option(
        1 << 16, "--block-size", min=1, help="Samples (at the model's rate) per streaming block; any value is exact."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing outputs (default: skip them)."),
    quiet: bool = typer.Option(False, "-q", "--quiet", help="Print errors only."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object per input on stdout."),
    steps: int | None = typer.Option(None, "--steps", min=1, help="Diffusion steps (DPM-TSE)."),
    eta: float | None = typer.Option(None, "--eta", min=0.0, help="DDIM eta (DPM-TSE)."),
    seed: int | None = typer.Option(None, "--seed", help="Random seed for diffusion sampling (DPM-TSE)."),
    visual: Path | None = typer.Option(
        None,
        "--visual",
        help="Lip embeddings (.npy) for AV models, or a folder of <stem>.npy \\[default: beside input].",
    ),
) -> None:
    """Extract a target sound: `tse extract mix.wav --class Cough -o out.wav`.

    Exit codes: 0 all done (or skipped), 1 some input failed, 2 usage error, 130 interrupted.
    """
    import time

    from tse_cli.audio import AudioError, output_format, subtype_name
    from tse_cli.classes import FSD_CLASSES, UnknownClassError, class_indices, multi_hot

    # arguments, before any work
    if output is not None and out_dir is not None:
        raise fail("give either -o FILE or -O DIR, not both", code=2)
    if output is None and out_dir is None:
        raise fail("give -o FILE (one input) or -O DIR", code=2)
    if model is not None and checkpoint is not None:
        raise fail("give either --model or --checkpoint, not both", code=2)
    if sample_rate not in ("keep", "model"):
        raise fail(f"--sample-rate must be keep or model, not {sample_rate!r}", code=2)
    check_template(template)
    try:
        indices = class_indices(classes or [])
    except UnknownClassError as err:
        raise fail(str(err), code=2) from None
    try:
        if fmt is not None:
            output_format(fmt)
        if subtype is not None:
            subtype_name(subtype)
    except AudioError as err:
        raise fail(str(err), code=2) from None

    from tse_cli.devices import DeviceError, resolve_device
    from tse_cli.engine import Engine, Task

    try:
        torch_device = resolve_device(device)
    except DeviceError as err:
        raise fail(str(err), code=2) from None

    planned = expand_inputs(inputs, recursive, out_dir)
    if output is not None and len(planned) != 1:
        raise fail(f"-o takes one input file, got {len(planned)}; use -O DIR for several", code=2)

    # the model
    spec = checkpoint or model or DEFAULT_MODEL
    net = load_net(spec, str(torch_device), indices)
    is_visual = getattr(net, "clue_kind", "class") == "visual"
    if is_visual and indices:
        raise fail(f"model {spec!r} takes a visual clue (--visual), not --class", code=2)
    if not is_visual and not indices:
        raise fail("give at least one --class (`tse classes` lists them)", code=2)
    if not is_visual and visual is not None:
        raise fail(f"model {spec!r} takes --class, not --visual", code=2)
    check_class_count(spec, getattr(net, "max_classes", None), indices)
    options = {k: v for k, v in {"steps": steps, "eta": eta, "seed": seed}.items() if v is not None}
    try:
        engine = Engine(
            net,
            torch_device,
            block_frames=block_size,
            batch_size=batch_size,
            jobs=jobs,
            sample_rate=sample_rate,
            options=options,
        )
    except ValueError as err:
        raise fail(f"{err} (--steps/--eta/--seed are for diffusion models)", code=2) from None

    model_name = Path(spec.split("@")[0]).name
    target = "+".join(FSD_CLASSES[i] for i in sorted(indices)) if not is_visual else "visual"
    if is_visual:
        pair_visual(planned, visual)
        if visual is not None and visual.is_file():
            target = visual.stem
    try:
        plan_outputs(
            planned,
            output=output,
            out_dir=out_dir,
            template=template,
            target=target,
            model_name=model_name,
            fmt=fmt,
            subtype=subtype,
            residual=residual,
            overwrite=overwrite,
        )
    except ValueError as err:
        raise fail(str(err), code=2) from None

    # the work
    start = time.perf_counter()
    clue = None if is_visual else multi_hot(indices)
    todo = [item for item in planned if item.status == "todo"]
    tasks = [
        Task(item.input, item.output, item.residual, clue, item.visual, item.format, item.subtype) for item in todo
    ]
    by_task = {id(task): item for task, item in zip(tasks, todo, strict=True)}
    with Reporter(quiet, as_json, len(planned)) as reporter:
        for item in planned:
            if item.status != "todo":
                reporter.outcome(record_of(item, item.status, None, item.error))

        def on_result(result: Any) -> None:
            item = by_task[id(result.task)]
            extra = {"elapsed": round(result.elapsed, 3), "clipped": result.clipped, "model": model_name}
            seconds = round(result.seconds, 6) if result.seconds is not None else None
            reporter.outcome(record_of(item, result.status, seconds, result.error, **extra))

        try:
            engine.run(tasks, on_result=on_result, on_progress=reporter.on_progress)
            interrupted = False
        except KeyboardInterrupt:  # the engine has deleted every temporary file by now
            interrupted = True
    if interrupted:
        typer.echo("interrupted: no partial outputs were left", err=True)
        raise typer.Exit(130)
    reporter.summary(time.perf_counter() - start)
    if reporter.counts["failed"]:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add `tse extract` to the app."""
    app.command("extract")(extract)
