"""What `tse extract` prints: each task's outcome as it is decided (a JSON line on stdout with --json, one-line
errors and warnings on stderr), a rich progress bar on a terminal, and the summary at the end.

stdout carries data only: the JSON lines, or the audio of `-o -` (then nothing else is printed there); every
message goes to stderr, and the progress display never captures stdout.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from tse_cli.engine.records import Progress, Task


def output_name(task: Task) -> str | None:
    """The main output as the user named it (`-` for standard output)."""
    if task.stdout:
        return "-"
    return str(task.output) if task.output else None


def record(task: Task, model_name: str) -> dict[str, Any]:
    """The --json object for one task. For tasks the engine processed also `elapsed`, `model`, the `target`, the
    `sample_rate` written, and per output the samples `clipped` (clip mode clamp) and the `gain` (rescale):
    `clipped`/`gain` for the main output, `residual_clipped`/`residual_gain` for the residual; `kept` lists
    outputs that existed and were left as they are."""
    out: dict[str, Any] = {
        "input": str(task.input),
        "output": output_name(task),
        "residual": str(task.residual) if task.residual else None,
        "seconds": round(task.seconds, 6) if task.seconds is not None else None,
        "status": task.status,
        "error": task.error,
    }
    if task.elapsed is not None:
        out |= {"elapsed": round(task.elapsed, 3), "model": model_name, "target": task.target}
        written = {w.path: w for w in task.written}
        for key, path in (("", task.output), ("residual_", task.residual)):
            if path is not None and path in written:
                out |= {f"{key}clipped": written[path].clipped, f"{key}gain": round(written[path].gain, 6)}
        if task.written:
            out["sample_rate"] = task.written[0].sample_rate
        if task.kept:
            out["kept"] = [str(p) for p in task.kept]
    return out


class Reporter:
    """Prints per-input outcomes (JSON lines on stdout with `as_json`; one-line errors on stderr), a rich
    progress bar on a terminal, and the final summary; `quiet` keeps errors and warnings only."""

    def __init__(self, quiet: bool, as_json: bool, total: int, model_name: str, scope: str = "") -> None:
        from rich.console import Console

        self.quiet, self.as_json, self.model_name, self.scope = quiet, as_json, model_name, scope
        self.rows: list[dict[str, Any]] = []  # every outcome's JSON object, for merging shards
        self.err = Console(stderr=True, highlight=False, soft_wrap=True)
        self.counts = {"done": 0, "skipped": 0, "failed": 0}
        self.seconds = 0.0
        self.progress = None
        self._task = None
        if not quiet and self.err.is_terminal:
            from rich.progress import BarColumn, TextColumn, TimeElapsedColumn
            from rich.progress import Progress as Bar

            self.progress = Bar(
                TextColumn("[bold]extract"),
                BarColumn(),
                TextColumn("{task.fields[files]}/{task.fields[nfiles]} files"),
                TextColumn("{task.completed:.1f}/{task.total:.1f} s audio"),
                TextColumn("RTF {task.fields[rtf]:.3f}"),
                TextColumn("{task.fields[step]}"),
                TimeElapsedColumn(),
                console=self.err,
                transient=True,
                redirect_stdout=False,  # stdout is data (JSON lines, audio): never captured into the display
                redirect_stderr=False,
            )
            self._task = self.progress.add_task("extract", total=1.0, files=0, nfiles=total, rtf=0.0, step="")

    def __enter__(self) -> Reporter:
        if self.progress:
            self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.progress:
            self.progress.stop()

    def on_progress(self, p: Progress) -> None:
        """The engine's running totals (files, audio seconds, RTF, diffusion steps) on the progress bar."""
        if self.progress is not None:
            self.progress.update(self._task, completed=p.seconds_done, total=max(p.seconds_total, 1e-9))
            step = f"step {p.step}/{p.steps}" if p.steps else ""
            self.progress.update(self._task, files=p.files_done, rtf=p.rtf, step=step)

    def outcome(self, task: Task) -> None:
        """One task finished (or was skipped / failed before any work)."""
        self.counts[task.status] += 1
        self.seconds += task.seconds or 0.0
        self.rows.append(record(task, self.model_name))
        if self.as_json:
            sys.stdout.write(json.dumps(self.rows[-1]) + "\n")
            sys.stdout.flush()
        if task.status == "failed":
            self.err.print(f"error: {task.error}", markup=False)
        elif not self.quiet:
            if task.status == "skipped":
                self.err.print(f"skipped {task.input}: {output_name(task)} exists (--overwrite to redo)", markup=False)
            elif not self.as_json:
                kept = f" (kept {', '.join(map(str, task.kept))})" if task.kept else ""
                written = ", ".join("-" if task.stdout else str(w.path) for w in task.written)
                self.err.print(f"{task.input} -> {written}{kept}", markup=False)
        for w in task.written:
            name = "-" if task.stdout and w.path == task.output else w.path
            if w.clipped:
                self.err.print(
                    f"warning: {name}: {w.clipped} samples clipped to [-1, 1] "
                    "(--clip-mode rescale scales the file instead; --subtype FLOAT keeps them)",
                    markup=False,
                )
            if w.gain != 1.0 and not self.quiet:
                self.err.print(f"{name}: rescaled by {w.gain:.3f} to fit [-1, 1]", markup=False)

    def merge(self, rows: list[dict[str, Any]], counts: dict[str, int], seconds: float) -> None:
        """Add another shard's outcomes (its `rows`, `counts` and audio `seconds`): their JSON lines are printed
        with --json, their errors were printed by that shard."""
        for key, value in counts.items():
            self.counts[key] += value
        self.seconds += seconds
        if self.as_json:
            sys.stdout.writelines(json.dumps(row) + "\n" for row in rows)
            sys.stdout.flush()

    def summary(self, elapsed: float) -> None:
        """The last line: counts, audio seconds, wall seconds and RTF."""
        if self.quiet:
            return
        c = self.counts
        rtf = f", RTF {elapsed / self.seconds:.3f}" if self.seconds and c["done"] else ""
        self.err.print(
            f"{self.scope}{c['done']} done, {c['skipped']} skipped, {c['failed']} failed; "
            f"{self.seconds:.1f} s of audio in {elapsed:.1f} s{rtf}",
            markup=False,
        )
