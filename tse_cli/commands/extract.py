"""`tse extract`: extract a target sound from files, folders and globs into a file or a mirrored folder tree.

The command is a sequence of stages: check the arguments (everything a user can get wrong is found before any
audio is read: exit code 2), load the model (`tse_cli.loading`; exit 1 when it cannot be loaded), plan one task
per input (`tse_cli.planning`), run them through the engine (`tse_cli.engine`) while reporting each outcome
(`tse_cli.reporting`), and exit 1 if any input failed. Per-file problems (missing, empty, not audio, corrupt,
NaN) fail that file only.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from tse_cli.commands import DEFAULT_MODEL, ENGINE_HELP, VERBOSE_OPTION, check_engine, fail, load_model_or_exit
from tse_cli.runinfo import report_run

if TYPE_CHECKING:
    import numpy as np
    import torch

    from tse_cli.engine import Engine, Task
    from tse_cli.models.protocol import ExtractionModel
    from tse_cli.reporting import Reporter
    from tse_cli.sharding import Shard

DEFAULT_TEMPLATE = "{stem}_{target}.{ext}"
FORMAT_NAMES = "wav, flac, ogg, opus, mp3, aiff, au, caf, w64, rf64"  # tse_cli.audio's formats (a test checks)
STDIO = "-"  # standard input as INPUT, standard output as -o (tse_cli.audio.STDIO; not imported for --help)


def extract(
    ctx: typer.Context,
    inputs: list[str] = typer.Argument(
        ..., help="Audio files, folders or glob patterns; - reads one file from standard input.", metavar="INPUT..."
    ),
    classes: list[str] = typer.Option(
        None, "-c", "--class", help="Target sound class (repeat for a union; `tse classes` lists them)."
    ),
    each: bool = typer.Option(
        False, "--each", help="One output per --class (named by {target}) from one pass, instead of their union."
    ),
    model: str | None = typer.Option(None, "--model", "-m", help=f"Registry model name \\[default: {DEFAULT_MODEL}]."),
    checkpoint: str | None = typer.Option(
        None, "--checkpoint", metavar="DIR|REPO", help="A checkpoint directory or a Hub repo `owner/repo\\[@revision]`."
    ),
    output: Path | None = typer.Option(
        None,
        "-o",
        "--output",
        metavar="FILE",
        help="Output file (one input only); - writes to standard output (--format, wav).",
    ),
    out_dir: Path | None = typer.Option(
        None, "-O", "--output-dir", metavar="DIR", help="Output folder; input folders are mirrored."
    ),
    recursive: bool = typer.Option(False, "-r", "--recursive", help="Descend into subfolders of folder inputs."),
    template: str = typer.Option(
        DEFAULT_TEMPLATE,
        "--filename",
        metavar="TEMPLATE",
        help="Output name under -O; fields {stem} {target} {model} {ext}; a literal suffix (.mp3) sets the format.",
    ),
    residual: bool = typer.Option(False, "--residual", help="Also write mixture minus estimate ({target}_residual)."),
    sample_rate: str = typer.Option(
        "keep",
        "--sample-rate",
        metavar="keep|model|HZ",
        help="keep: the input's rate; model: the model's; or a rate in Hz.",
    ),
    fmt: str | None = typer.Option(
        None,
        "--format",
        help=f"{FORMAT_NAMES} (those this libsndfile writes) \\[default: the suffix of -o or --filename, "
        "else the input's when lossless, else wav].",
    ),
    subtype: str | None = typer.Option(
        None, "--subtype", help="PCM_U8 PCM_S8 PCM_16 PCM_24 PCM_32 FLOAT DOUBLE \\[default: the input's]."
    ),
    clip_mode: str = typer.Option(
        "clamp",
        "--clip-mode",
        metavar="clamp|rescale|none",
        help="Samples beyond [-1, 1]: clamp (clip them in integer and lossy outputs), rescale (scale the file to "
        "fit), none.",
    ),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
    engine: str = typer.Option("torch", "--engine", help=ENGINE_HELP),
    batch_size: int = typer.Option(1, "--batch-size", min=1, help="Files run through the model together."),
    jobs: int = typer.Option(2, "--jobs", "-j", min=1, help="Threads reading and writing audio."),
    block_size: int = typer.Option(
        1 << 16, "--block-size", min=1, help="Samples (at the model's rate) per streaming block; any value is exact."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing outputs (default: keep them)."),
    shard: str | None = typer.Option(
        None,
        "--shard",
        metavar="K/N",
        help="Run only shard K of N of the inputs (balanced by duration; job arrays). Under torchrun each rank "
        "takes its own shard.",
    ),
    quiet: bool = typer.Option(False, "-q", "--quiet", help="Print errors and warnings only."),
    verbose: bool = VERBOSE_OPTION,
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object per output on stdout."),
    steps: int | None = typer.Option(None, "--steps", min=1, help="Diffusion steps (DPM-TSE)."),
    eta: float | None = typer.Option(None, "--eta", min=0.0, help="DDIM eta (DPM-TSE)."),
    seed: int | None = typer.Option(None, "--seed", help="Random seed for diffusion sampling (DPM-TSE)."),
    visual: Path | None = typer.Option(
        None,
        "--visual",
        metavar="FILE|DIR",
        help="Lip embeddings (.npy) for AV models, or a folder of <stem>.npy \\[default: beside input].",
    ),
) -> None:
    """Extract a target sound: `tse extract mix.wav --class Cough -o out.wav`.

    Pipes: `cat mix.flac | tse extract - -c Cough -o - > cough.wav`. Exit codes: 0 all done (or skipped), 1 some
    input failed (a folder without audio files and a glob matching none count as failed inputs), 2 usage error,
    130 Ctrl-C (SIGINT), 143 SIGTERM, 129 SIGHUP, 141 stdout closed (`--json | head`: the batch stops there).
    """
    import tempfile

    from tse_cli import planning, sharding, signals
    from tse_cli.reporting import Reporter

    ctx.with_resource(signals.exit_at_once())  # start-up (torch importing, the model loading): nothing to clean up
    indices = check_arguments(output, out_dir, model, checkpoint, template, classes, fmt, subtype, clip_mode)
    rate = check_pipes_and_rate(inputs, output, out_dir, each, residual, as_json, sample_rate, template)
    part = check_shard(shard, output)
    device = check_engine(engine, device)
    torch_device = check_device(sharding.local_device(device) if part and part.distributed else device)
    with tempfile.TemporaryDirectory(prefix="tse-extract-") as scratch:
        stdin = read_stdin(Path(scratch)) if STDIO in inputs else None
        tasks = planning.expand_inputs(inputs, recursive, out_dir, stdin)
        if output is not None and len(tasks) != 1:
            raise fail(f"-o takes one input file, got {len(tasks)}; use -O DIR for several", code=2)
        # the shard's inputs, chosen before --each splits them, so that an input's classes stay together
        mine = {task.input for task in sharding.select(tasks, part)} if part is not None else None

        spec = checkpoint or model or DEFAULT_MODEL
        net = load_model_or_exit(
            spec, str(torch_device), [] if each else indices, default=not (model or checkpoint), engine=engine
        )
        query = class_query(spec, net.clue_kind, indices, visual, each)
        options = {k: v for k, v in {"steps": steps, "eta": eta, "seed": seed}.items() if v is not None}
        engine = make_engine(net, torch_device, block_size, batch_size, jobs, rate, clip_mode, options)
        report_run(net, torch_device, spec=spec, block_size=block_size)  # with -v only

        name = planning.model_name(spec)
        if each:
            tasks = planning.split_classes(tasks, indices)
        outputs = {"output": output, "out_dir": out_dir, "template": template, "model_name": name}
        outputs |= {"fmt": fmt, "subtype": subtype, "residual": residual, "overwrite": overwrite}
        plan(tasks, query, planning.target_name(indices, visual, query is None), visual, outputs, Path(scratch))

        follower = part is not None and part.distributed and part.index > 0  # rank 0 reports for every rank
        if mine is not None:
            tasks = [task for task in tasks if task.input in mine]
        scope = f"shard {part}: " if part is not None and not part.distributed else ""
        reporter = Reporter(quiet or follower, as_json and not follower, len(tasks), name, scope)
        if run(engine, tasks, reporter, part):
            raise typer.Exit(1)


# the stages ----------------------------------------------------------------------------------------------------


def check_arguments(
    output: Path | None,
    out_dir: Path | None,
    model: str | None,
    checkpoint: str | None,
    template: str,
    classes: list[str] | None,
    fmt: str | None,
    subtype: str | None,
    clip_mode: str,
) -> list[int]:
    """Refuse contradictory or invalid options (exit 2) before any work; return the class indices asked for."""
    from tse_cli.audio import CLIP_MODES, AudioError, output_format, subtype_name
    from tse_cli.classes import UnknownClassError, class_indices
    from tse_cli.planning import check_template

    if output is not None and out_dir is not None:
        raise fail("give either -o FILE or -O DIR, not both", code=2)
    if output is None and out_dir is None:
        raise fail("give -o FILE (one input) or -O DIR", code=2)
    if model is not None and checkpoint is not None:
        raise fail("give either --model or --checkpoint, not both", code=2)
    if clip_mode not in CLIP_MODES:
        raise fail(f"--clip-mode must be one of {', '.join(CLIP_MODES)}, not {clip_mode!r}", code=2)
    try:
        check_template(template)
        indices = class_indices(classes or [])
        if fmt is not None:
            output_format(fmt)
        if subtype is not None:
            subtype_name(subtype)
    except (ValueError, UnknownClassError, AudioError) as err:
        raise fail(str(err), code=2) from None
    return indices


def check_shard(text: str | None, output: Path | None) -> Shard | None:
    """The shard this process runs: `--shard K/N`, else torchrun's rank (RANK of WORLD_SIZE), else None."""
    from tse_cli import sharding

    if text is not None:
        if sharding.from_torchrun() is not None:
            raise fail("--shard is for separate jobs; under torchrun every rank takes its own shard", code=2)
        try:
            part = sharding.parse(text)
        except ValueError as err:
            raise fail(str(err), code=2) from None
    else:
        part = sharding.from_torchrun()
    if part is not None and output is not None:
        raise fail(f"shard {part}: sharding splits -O DIR runs, not -o FILE", code=2)
    return part


def check_pipes_and_rate(
    inputs: list[str],
    output: Path | None,
    out_dir: Path | None,
    each: bool,
    residual: bool,
    as_json: bool,
    sample_rate: str,
    template: str,
) -> str | int:
    """Refuse what standard input/output and `--each` cannot do (exit 2); return the `--sample-rate` asked for
    (`keep`, `model` or a rate in Hz)."""
    from tse_cli.audio import stdout_is_terminal

    if STDIO in inputs and len(inputs) > 1:
        raise fail("- (standard input) is one input; give it alone", code=2)
    if output is not None and str(output) == STDIO:
        if residual:
            raise fail("-o - writes one stream; --residual needs -o FILE or -O DIR", code=2)
        if as_json:
            raise fail("-o - puts the audio on standard output; --json needs -o FILE or -O DIR", code=2)
        if stdout_is_terminal():
            raise fail("-o -: standard output is a terminal; redirect it (> out.wav) or give -o FILE", code=2)
    if each:
        if output is not None:
            raise fail("--each writes one file per class: give -O DIR (names from --filename's {target})", code=2)
        if "{target}" not in template:
            raise fail(f"--each writes one file per class: --filename {template!r} needs {{target}}", code=2)
    if sample_rate in ("keep", "model"):
        return sample_rate
    if sample_rate.isdigit() and int(sample_rate) > 0:
        return int(sample_rate)
    raise fail(f"--sample-rate must be keep, model or a rate in Hz, not {sample_rate!r}", code=2)


def read_stdin(folder: Path) -> Path:
    """Standard input copied into `folder` (decoders need to seek); a terminal or an empty pipe is exit 2."""
    from tse_cli.audio import AudioError, spool_stdin

    try:
        return spool_stdin(folder)
    except AudioError as err:
        raise fail(str(err), code=2) from None


def check_device(spec: str) -> torch.device:
    """The `--device` asked for, if it is available (exit 2 otherwise)."""
    from tse_cli.devices import DeviceError, resolve_device

    try:
        return resolve_device(spec)
    except DeviceError as err:
        raise fail(str(err), code=2) from None


def class_query(spec: str, clue_kind: str, indices: list[int], visual: Path | None, each: bool) -> np.ndarray | None:
    """The (41,) multi-hot query every input gets (with `each`, planning gives each task its own class instead),
    or None for a model of visual clues (one `.npy` per input); clues the model does not take are usage errors
    (exit 2)."""
    from tse_cli.classes import multi_hot

    if clue_kind == "visual":
        if indices:
            raise fail(f"model {spec!r} takes a visual clue (--visual), not --class", code=2)
        if each:
            raise fail(f"--each is for --class; model {spec!r} takes a visual clue", code=2)
        return None
    if not indices:
        raise fail("give at least one --class (`tse classes` lists them)", code=2)
    if visual is not None:
        raise fail(f"model {spec!r} takes --class, not --visual", code=2)
    return multi_hot(indices)


def plan(
    tasks: list[Task],
    query: np.ndarray | None,
    target: str,
    visual: Path | None,
    outputs: dict[str, Any],
    scratch: Path,
) -> None:
    """Give every task its clue (the class `query` and its `target` name, unless `--each` gave it its own class,
    or its visual clue file) and its outputs (`tse_cli.planning.plan_outputs` with the keyword arguments
    `outputs`; `-o -` is written in `scratch` first); clashes are usage errors (exit 2)."""
    from tse_cli import planning

    if query is None:
        planning.pair_visual(tasks, visual)
    for task in tasks:
        if task.clue is None:
            task.clue, task.target = query, target
    try:
        planning.plan_outputs(tasks, **outputs, stdout_file=scratch / "stdout")
    except ValueError as err:
        raise fail(str(err), code=2) from None


def make_engine(
    net: ExtractionModel,
    device: torch.device,
    block_size: int,
    batch_size: int,
    jobs: int,
    sample_rate: str | int,
    clip: str,
    options: dict[str, float | int],
) -> Engine:
    """The engine around `net`; inference options the model does not declare are usage errors (exit 2)."""
    from tse_cli.engine import Engine

    try:
        return Engine(
            net,
            device,
            block_frames=block_size,
            batch_size=batch_size,
            jobs=jobs,
            sample_rate=sample_rate,
            clip=clip,
            options=options,
        )
    except ValueError as err:
        raise fail(f"{err} (--steps/--eta/--seed are for diffusion models)", code=2) from None


def run(engine: Engine, tasks: list[Task], reporter: Reporter, part: Shard | None = None) -> bool:
    """Report the tasks planning decided, run the others and report each as it finishes (the output of `-o -`
    then goes to standard output), then the summary; return whether any task failed (on any rank, under
    torchrun: rank 0 merges the others' outcomes). SIGINT, SIGTERM and SIGHUP exit 128 + the signal's number
    once the engine has deleted every partial output (`tse_cli.signals`)."""
    import time

    from tse_cli import signals
    from tse_cli.audio import send_to_stdout

    start = time.perf_counter()
    interrupted, closed = None, False
    with reporter:
        try:
            for task in tasks:
                if task.status != "todo":
                    reporter.outcome(task)
            todo = [task for task in tasks if task.status == "todo"]
            with signals.cleanup_first():
                engine.run(todo, on_result=reporter.outcome, on_progress=reporter.on_progress)
        except KeyboardInterrupt as err:  # SIGINT/SIGTERM/SIGHUP: the engine has deleted every temporary file
            interrupted = err
        except BrokenPipeError:  # --json's reader has gone (`| head -1`): stop, as any pipeline's writer does
            closed = True
    if interrupted is not None:
        typer.echo(f"interrupted ({signals.describe(interrupted)}): no partial outputs were left", err=True)
        raise typer.Exit(signals.exit_code(interrupted))
    if closed:
        signals.stdout_closed()
        finished = sum(reporter.counts.values())
        typer.echo(
            f"stopped after {finished} of {len(tasks)} inputs: standard output was closed (its reader has gone); "
            "no partial outputs were left",
            err=True,
        )
        raise typer.Exit(signals.EXIT_CLOSED)
    for task in tasks:
        if task.stdout and task.status == "done":
            send_to_stdout(task.output)
    if part is not None and part.distributed:
        meet(reporter, part)
    reporter.summary(time.perf_counter() - start)
    return reporter.counts["failed"] > 0


def meet(reporter: Reporter, part: Shard) -> None:
    """Exchange outcomes with the other torchrun ranks; rank 0's reporter takes in theirs (JSON lines, counts),
    the others only their failure counts, so that every rank exits 1 if any input failed anywhere."""
    from tse_cli.sharding import Meeting

    meeting = Meeting()
    everyone = meeting.gather((reporter.rows, dict(reporter.counts), reporter.seconds))
    meeting.close()
    for rank, (rows, counts, seconds) in enumerate(everyone):
        if rank == part.index:
            continue
        if part.index == 0:
            reporter.merge(rows, counts, seconds)
        else:
            reporter.counts["failed"] += counts["failed"]


def register(app: typer.Typer) -> None:
    """Add `tse extract` to the app."""
    app.command("extract")(extract)
