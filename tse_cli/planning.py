"""Planning a `tse extract` run: from the command line's inputs to one `Task` per input, before any audio is read.

Input expansion (files, folders, globs, `-` for standard input), one task per class with `--each`
(`split_classes`), output naming (`--filename` templates under `-O`, mirroring input folders; `-o -` for
standard output), the output format (`--format`, or the suffix of `-o` or of the template, which must agree with
it) and subtype, skips (outputs that exist: a task whose main output exists writes only a missing residual) and
clashes (two inputs, one output; an output that is an input), and the pairing of visual clues with their inputs.
A header is read only where it decides the output format, and then kept on the task for the engine
(`Task.header`). Errors a user made are `ValueError`s with a one-line message; problems of one input become that
task's `failed` status.
"""

from __future__ import annotations

import glob
import string
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from tse_cli.audio import (
    AUDIO_EXTENSIONS,
    FORMATS,
    STDIO,
    AudioError,
    OutputFormat,
    format_of_major,
    format_of_suffix,
    output_format,
    special_kind,
)
from tse_cli.classes import FSD_CLASSES, multi_hot

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


def expand_inputs(inputs: list[str], recursive: bool, exclude: Path | None, stdin: Path | None = None) -> list[Task]:
    """Files as given, audio files in folders (all depths with `recursive`), glob matches, and `-` (standard
    input, read from its copy `stdin`); missing paths, folders without audio files and globs matching nothing
    become failed tasks (exit 1, the same for all three). Files under `exclude` (the output folder) are left out."""
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
        if text == STDIO:
            tasks.append(Task(path, base=Path(), source=stdin))
        elif path.is_dir():
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


def template_suffix(template: str) -> str | None:
    """What a `--filename` template's names end in: `{ext}` (the format's suffix), a literal suffix such as
    `mp3` (written after a dot at the very end), or None when its names would have no suffix."""
    name = template.replace("\\", "/").rsplit("/", 1)[-1]
    parts = list(string.Formatter().parse(name))
    literal, field = (parts[-1][0], parts[-1][1]) if parts else ("", None)
    if field == "ext" and literal.endswith("."):
        return "{ext}"
    if field is None and "." in literal:
        return literal.rsplit(".", 1)[1] or None
    return None


def choose_format(requested: str | None, named: Path | None, input_format: OutputFormat | None) -> OutputFormat:
    """The output format: `--format`, else the suffix of `named` (-o's file, or a template's literal suffix),
    else the input's when tse writes it losslessly, else wav. A `named` suffix that names another format than
    `--format`, or none at all, is a ValueError."""
    suffix_format = format_of_suffix(named) if named is not None else None
    if named is not None and suffix_format is None:
        known = ", ".join(f".{f}" for f in FORMATS)
        raise ValueError(f"{named}: cannot write .{named.suffix.lstrip('.') or '(none)'} files; use {known}")
    if requested:
        fmt = output_format(requested)
        if suffix_format is not None and suffix_format is not fmt:
            raise ValueError(f"{named} does not end in .{fmt.name} (--format {fmt.name})")
        return fmt
    if suffix_format is not None:
        return suffix_format
    return input_format if input_format is not None and input_format.codec is None else FORMATS["wav"]


def _input_format(task: Task) -> OutputFormat | None:
    """The input's format, None when tse does not write it or it is not usable audio (the engine says why)."""
    try:
        header = task.header()
    except AudioError:
        return None
    return format_of_major(header.format, header.subtype)


def split_classes(tasks: list[Task], classes: list[int]) -> list[Task]:
    """`--each`: every input task becomes one task per class (in the order given), sharing the input's header,
    with that class's query and `target` name; tasks already decided (failed inputs) stay as they are."""
    split: list[Task] = []
    for task in tasks:
        if task.status != "todo":
            split.append(task)
            continue
        for index in classes:
            split.append(replace(task, clue=multi_hot([index]), target=FSD_CLASSES[index], written=[]))
    return split


def plan_outputs(
    tasks: list[Task],
    *,
    output: Path | None,
    out_dir: Path | None,
    template: str,
    model_name: str,
    fmt: str | None,
    subtype: str | None,
    residual: bool,
    overwrite: bool,
    stdout_file: Path | None = None,
) -> None:
    """Fill `output`/`residual`/`format`/`subtype` of each todo task (its `{target}` is `Task.target`) and mark
    skips (`_skip_existing`). `-o -` writes to `stdout_file`, streamed out afterwards. Raise ValueError for
    clashes (two inputs, one output; an output that is an input), suffixes that contradict the format, and
    subtypes the format cannot store."""
    to_stdout = output is not None and str(output) == STDIO
    named = None if to_stdout else output
    if out_dir is not None:
        suffix = template_suffix(template)
        if suffix is None:
            raise ValueError(f"--filename {template!r} gives names without a suffix; end it in .{{ext}} or .wav")
        named = None if suffix == "{ext}" else Path(f"name.{suffix}")
    taken: dict[Path, Path] = {}
    for task in tasks:
        if task.status != "todo":
            continue
        decides = not fmt and named is None and not to_stdout  # the header is read only when it decides the format
        chosen = choose_format(fmt, named, _input_format(task) if decides else None)
        task.format = chosen.name
        task.subtype = chosen.subtype(subtype, None) if subtype or chosen.codec else None
        if to_stdout:
            assert stdout_file is not None
            task.output, task.stdout = stdout_file, True
        elif output is not None:
            task.output = output
            task.residual = residual_path(output) if residual else None
        else:
            assert out_dir is not None
            rel, fields = rel_dir(task), {"stem": _stem(task), "model": model_name, "ext": chosen.name}
            task.output = render(template, out_dir, rel, target=task.target, **fields)
            if residual:
                task.residual = render(template, out_dir, rel, target=f"{task.target}_residual", **fields)
        for path in filter(None, (task.output, task.residual)):
            key = path.resolve()
            if task.input.exists() and key == task.input.resolve():
                raise ValueError(f"{path}: output would overwrite its own input")
            if key in taken:
                raise ValueError(f"{taken[key]} and {task.input} would both write {path} (use --filename)")
            taken[key] = task.input
        _skip_existing(task, overwrite)
    inputs = {task.input.resolve() for task in tasks if task.input.exists()}
    for key, source in taken.items():
        if key in inputs:
            raise ValueError(f"the output for {source} ({key}) is also an input")


def _stem(task: Task) -> str:
    """The `{stem}` of a task's output names (`stdin` for standard input)."""
    return "stdin" if str(task.input) == STDIO else task.input.stem


def _skip_existing(task: Task, overwrite: bool) -> None:
    """An output path that is a folder, FIFO, socket or device fails the task (even with `overwrite`). Without
    `overwrite`, outputs that exist stay as they are: a task whose outputs all exist is skipped, one with some of
    them writes only the others (`Task.kept`: a residual added to a finished folder)."""
    if task.stdout:
        return
    outputs = [p for p in (task.output, task.residual) if p is not None]
    existing = tuple(p for p in outputs if p.exists())
    blocked = [(p, kind) for p in existing if (kind := special_kind(p))]
    if blocked:  # never replaced, even with --overwrite
        task.status, task.error = "failed", f"{blocked[0][0]}: cannot write the output there: it is {blocked[0][1]}"
    elif overwrite:
        return
    elif len(existing) == len(outputs):
        task.status = "skipped"
    else:
        task.kept = existing


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
