"""What `tse extract` prints: each task's outcome as it is decided (a JSON line on stdout with --json, one-line
errors and warnings on stderr), progress through `tse_cli.console` (on a terminal a live bar with the audio
seconds done, the throughput in x real time, an ETA and the files done; in a log or a pipe the same as a plain
line every few seconds, $TSE_PROGRESS_INTERVAL), and the summary at the end.

stdout carries data only: the JSON lines, or the audio of `-o -` (then nothing else is printed there); every
message goes to stderr, and the progress display never captures stdout.
"""

from __future__ import annotations

import contextlib
import json
import sys
from typing import Any

from tse_cli import console
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
    """Prints per-input outcomes (JSON lines on stdout with `as_json`; one-line errors on stderr), the progress
    of the run (one `console` phase counting audio seconds) while it is used as a context manager, and the final
    summary; `quiet` keeps errors and warnings only."""

    def __init__(self, quiet: bool, as_json: bool, total: int, model_name: str, scope: str = "") -> None:
        self.quiet, self.as_json, self.model_name, self.scope = quiet, as_json, model_name, scope
        self.total = total  # inputs (tasks) of the run
        self.rows: list[dict[str, Any]] = []  # every outcome's JSON object, for merging shards
        self.counts = {"done": 0, "skipped": 0, "failed": 0}
        self.seconds = 0.0
        self._stack = contextlib.ExitStack()
        self._display: console.Display | None = None
        self._phase: console.Phase | None = None

    def __enter__(self) -> Reporter:
        self._display = self._stack.enter_context(console.progress(quiet=self.quiet))
        return self

    def __exit__(self, *exc: Any) -> None:
        self._display = self._phase = None
        self._stack.__exit__(*exc)

    def on_progress(self, p: Progress) -> None:
        """The engine's running totals: audio seconds done of all (the phase's count, throughput and ETA), the
        files done and, for diffusion models, the sampler's step."""
        if self._display is None:
            return
        info = f"{p.files_done}/{self.total} files" + (f", step {p.step}/{p.steps}" if p.steps else "")
        if self._phase is None:
            label = f"{self.scope}extract"
            self._phase = self._display.phase(label, total=p.seconds_total, unit="s audio", rate_unit="x real time")
        self._phase.update(completed=p.seconds_done, total=p.seconds_total, info=info)

    def outcome(self, task: Task) -> None:
        """One task finished (or was skipped / failed before any work)."""
        self.counts[task.status] += 1
        self.seconds += task.seconds or 0.0
        self.rows.append(record(task, self.model_name))
        if self.as_json:
            sys.stdout.write(json.dumps(self.rows[-1]) + "\n")
            sys.stdout.flush()
        if task.status == "failed":
            console.error(str(task.error))
        elif not self.quiet:
            if task.status == "skipped":
                console.note(f"skipped {task.input}: {output_name(task)} exists (--overwrite to redo)")
            elif not self.as_json:
                kept = f" (kept {', '.join(map(str, task.kept))})" if task.kept else ""
                written = ", ".join("-" if task.stdout else str(w.path) for w in task.written)
                console.note(f"{task.input} -> {written}{kept}")
        for w in task.written:
            name = "-" if task.stdout and w.path == task.output else w.path
            if w.clipped:
                console.warn(
                    f"{name}: {w.clipped} samples clipped to [-1, 1] "
                    "(--clip-mode rescale scales the file instead; --subtype FLOAT keeps them)"
                )
            if w.gain != 1.0 and not self.quiet:
                console.note(f"{name}: rescaled by {w.gain:.3f} to fit [-1, 1]")

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
        console.note(
            f"{self.scope}{c['done']} done, {c['skipped']} skipped, {c['failed']} failed; "
            f"{self.seconds:.1f} s of audio in {elapsed:.1f} s{rtf}"
        )
