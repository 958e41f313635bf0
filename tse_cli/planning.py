"""Planning a `tse extract` run: from the command line's inputs to one `Task` per input, before any audio is read.

Input expansion (files, folders, globs), output naming (`--filename` templates under `-O`, mirroring input
folders), the output format and subtype, skips (outputs that exist) and clashes (two inputs, one output; an
output that is an input), and the pairing of visual clues with their inputs. A header is read only where it
decides the output format, and then kept on the task for the engine (`Task.header`). Errors a user made are
`ValueError`s with a one-line message; problems of one input become that task's `failed` status.
"""

from __future__ import annotations

import glob
import string
from pathlib import Path
from typing import TYPE_CHECKING

from tse_cli.audio import AUDIO_EXTENSIONS, FORMATS, AudioError, check_subtype, output_format, special_kind
from tse_cli.classes import FSD_CLASSES

if TYPE_CHECKING:
    from tse_cli.engine.records import Task

TEMPLATE_FIELDS = ("stem", "target", "model", "ext")


# inputs --------------------------------------------------------------------------------------------------------


def _is_audio(path: Path, recursive: bool) -> bool:
    """An audio name in a folder or glob. Only regular files can be read, but the rest (a folder named `x.wav`
    unless `recursive` descends into it, a FIFO, a broken link) is taken too, to fail with its reason rather than
    vanish. Temporary `.part` outputs are never taken."""
    return path.suffix.lower() in AUDIO_EXTENSIONS and not (recursive and path.is_dir())


def _has_magic(text: str) -> bool:
    return any(c in text for c in "*?[")


def _glob_base(pattern: str) -> Path:
    """The folder before the first wildcard of a glob pattern (outputs mirror the tree below it)."""
    parts = Path(pattern).parts
    first_magic = next(i for i, part in enumerate(parts) if _has_magic(part))
    return Path(*parts[:first_magic]) if first_magic else Path(".")


def expand_inputs(inputs: list[str], recursive: bool, exclude: Path | None) -> list[Task]:
    """Files as given, audio files in folders (all depths with `recursive`), glob matches; missing paths,
    folders without audio files and globs matching nothing become failed tasks. Files under `exclude` (the output
    folder) are left out."""
    from tse_cli.engine.records import Task  # the engine package loads torch: only once there is work

    tasks: list[Task] = []
    seen: set[Path] = set()
    excluded = exclude.resolve() if exclude else None

    def add(path: Path, base: Path) -> None:
        resolved = path.resolve()
        if resolved in seen or (excluded and resolved.is_relative_to(excluded)):
            return
        seen.add(resolved)
        tasks.append(Task(path, base=base))

    for text in inputs:
        path = Path(text)
        if path.is_dir():
            walk = path.rglob("*") if recursive else path.iterdir()
            found = sorted(p for p in walk if _is_audio(p, recursive))
            if not found:
                hint = "" if recursive else " (-r/--recursive descends into subfolders)"
                error = f"{path}: a folder with no audio files{hint}"
                tasks.append(Task(path, base=path, status="failed", error=error))
            for file in found:
                add(file, path)
        elif path.exists() or not _has_magic(text):
            add(path, path.parent)  # missing files fail later with a one-line reason
        else:
            matches = sorted(Path(m) for m in glob.glob(text, recursive=True))
            files = [m for m in matches if _is_audio(m, recursive)]
            if not files:
                tasks.append(Task(path, base=path.parent, status="failed", error=f"{text}: no audio files match"))
            for file in files:
                add(file, _glob_base(text))
    return tasks


def rel_dir(task: Task) -> Path:
    """The input's folder relative to its `base` (mirrored under -O and --visual DIR); `.` outside it."""
    base = task.base if task.base is not None else task.input.parent
    return task.input.parent.relative_to(base) if task.input.is_relative_to(base) else Path()


# outputs -------------------------------------------------------------------------------------------------------


def check_template(template: str) -> None:
    """Reject unknown fields and paths that could leave the output folder (ValueError)."""
    try:
        fields = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as err:
        raise ValueError(f"--filename {template!r}: {err}") from None
    unknown = [f for f in fields if f not in TEMPLATE_FIELDS]
    if unknown:
        raise ValueError(f"--filename: unknown field {{{unknown[0]}}}; use {', '.join(TEMPLATE_FIELDS)}")
    if not template or Path(template).is_absolute() or ".." in Path(template).parts:
        raise ValueError(f"--filename {template!r}: must be a relative name inside the output folder")


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


def _input_format(task: Task) -> str | None:
    """The input's libsndfile format, None when it is not usable audio (the engine then reports why)."""
    try:
        return task.header().format
    except AudioError:
        return None


def plan_outputs(
    tasks: list[Task],
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
    """Fill `output`/`residual`/`format`/`subtype` of each todo task and mark skips; raise ValueError for
    clashes (two inputs, one output; an output that is an input) and subtypes the format cannot store."""
    taken: dict[Path, Path] = {}
    for task in tasks:
        if task.status != "todo":
            continue
        decides = not fmt and output is None  # the header is read only when it decides the format
        task.format = choose_format(fmt, output, _input_format(task) if decides else None)
        task.subtype = check_subtype(subtype, task.format) if subtype else None
        ext = task.format.lower()
        if output is not None:
            task.output = output
            task.residual = residual_path(output) if residual else None
        else:
            assert out_dir is not None
            rel, fields = rel_dir(task), {"stem": task.input.stem, "model": model_name, "ext": ext}
            task.output = render(template, out_dir, rel, target=target, **fields)
            task.residual = render(template, out_dir, rel, target=f"{target}_residual", **fields) if residual else None
        for path in filter(None, (task.output, task.residual)):
            key = path.resolve()
            if key == task.input.resolve():
                raise ValueError(f"{path}: output would overwrite its own input")
            if key in taken:
                raise ValueError(f"{taken[key]} and {task.input} would both write {path} (use --filename)")
            taken[key] = task.input
        outputs = [p for p in (task.output, task.residual) if p is not None]
        existing = [p for p in outputs if p.exists()]
        blocked = [(p, kind) for p in existing if (kind := special_kind(p))]
        if blocked:  # never replaced, even with --overwrite
            task.status, task.error = "failed", f"{blocked[0][0]}: cannot write the output there: it is {blocked[0][1]}"
        elif existing and not overwrite:
            if len(existing) == len(outputs):
                task.status = "skipped"
            else:
                task.status, task.error = "failed", f"{existing[0]} exists but not every output does; use --overwrite"
    inputs = {task.input.resolve() for task in tasks}
    for key, source in taken.items():
        if key in inputs:
            raise ValueError(f"the output for {source} ({key}) is also an input")


# clues ---------------------------------------------------------------------------------------------------------


def pair_visual(tasks: list[Task], visual: Path | None) -> None:
    """The lip-embedding file of each input: --visual FILE for all, --visual DIR with `<stem>.npy` (mirroring
    the input's subfolder), or `<stem>.npy` beside the input when --visual is not given."""
    for task in tasks:
        if visual is None:
            task.visual = task.input.with_suffix(".npy")
        elif visual.is_dir():
            nested = visual / rel_dir(task) / f"{task.input.stem}.npy"
            task.visual = nested if nested.exists() else visual / f"{task.input.stem}.npy"
        else:
            task.visual = visual


def target_name(indices: list[int], visual: Path | None, is_visual: bool) -> str:
    """The `{target}` of output names: the classes joined by `+`, or for visual clues `visual` (the clue file's
    stem when one --visual FILE serves every input)."""
    if not is_visual:
        return "+".join(FSD_CLASSES[i] for i in sorted(indices))
    return visual.stem if visual is not None and visual.is_file() else "visual"


def model_name(spec: str) -> str:
    """The `{model}` of output names (and of --json records): a registry name, a folder's or a repo's name."""
    return Path(spec.split("@")[0]).name
