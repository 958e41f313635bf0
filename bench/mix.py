"""Mixtures per second of `tse mix --recipe dpm-tse` (10 s, 16 kHz) for --jobs 1 and 2, sources already decoded.

    .venv/bin/python bench/mix.py [--count 400] [--jobs 1 2] [--workdir DIR]

Writes a synthetic FSD/TAU tree, builds the train split once to fill the decoded-source cache (timed as the cold
run), then builds it again into fresh folders sharing that cache, once per --jobs value. The mixing phase is
timed from the first task to the last file written (worker start-up included). Prints a table and writes
bench/results/mix.json. Target: at least 50 mixtures/s with 2 jobs once sources are decoded.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import tempfile
from pathlib import Path

from common import machine, print_table, write_results

from tse_cli.data.build import Options, build
from tse_cli.data.synthetic import SyntheticSize, write_corpus

TARGET = 50  # mixtures per second with 2 jobs


def _cpu_seconds() -> float:
    """CPU time of this process and its finished children (worker pools are joined by `build`)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def run(corpus: Path, out: Path, cache: Path, count: int, jobs: int) -> dict:
    opts = Options("dpm-tse", corpus / "fsd", corpus / "tau", out, ("train",), count, 0, jobs, cache_dir=cache)
    cpu = _cpu_seconds()
    summary = build(opts)
    cpu = _cpu_seconds() - cpu
    if summary.failed:
        raise SystemExit(f"{len(summary.failed)} mixtures failed: {summary.failed[0].error}")
    return {
        "jobs": jobs,
        "mixtures": summary.rendered,
        "scan_s": round(summary.scan_seconds, 3),
        "mix_s": round(summary.mix_seconds, 3),
        "mixtures_per_s": round(summary.rendered / summary.mix_seconds, 2),
        "cpu_s": round(cpu, 3),
        "mixtures_per_cpu_s": round(summary.rendered / cpu, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=400, help="train mixtures per run")
    parser.add_argument("--jobs", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--workdir", type=Path, default=None, help="keep files here (default: a temp folder)")
    args = parser.parse_args()

    work = args.workdir or Path(tempfile.mkdtemp(prefix="tse-bench-mix-"))
    try:
        corpus, cache = work / "corpus", work / "cache"
        if not (corpus / "fsd").is_dir():
            write_corpus(corpus, SyntheticSize(train_per_class=6, test_per_class=2, dev_backgrounds=12))
        cold = run(corpus, work / "cold", cache, args.count, max(args.jobs))
        warm = []
        for jobs in args.jobs:
            shutil.rmtree(work / f"warm{jobs}", ignore_errors=True)
            warm.append(run(corpus, work / f"warm{jobs}", cache, args.count, jobs))
        same = all(
            (work / "cold" / "train" / f"train_{i}.wav").read_bytes()
            == (work / f"warm{j}" / "train" / f"train_{i}.wav").read_bytes()
            for j in args.jobs
            for i in (1, args.count)
        )
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)

    rows = [{"run": "cold (decoding)", **cold}] + [{"run": "warm (cached sources)", **r} for r in warm]
    base = warm[0]["mixtures_per_s"]
    for row in rows[1:]:
        row["vs_first_warm"] = row["mixtures_per_s"] / base
    columns = ["run", "jobs", "mix s", "mixtures/s", f"vs jobs {args.jobs[0]}", "CPU s", "mix/CPU s"]
    keys = ["run", "jobs", "mix_s", "mixtures_per_s", "vs_first_warm", "cpu_s", "mixtures_per_cpu_s"]
    title = f"tse mix dpm-tse, {args.count} ten-second 16 kHz mixtures per run (synthetic sources)"
    print_table(title, columns, [[row.get(k) for k in keys] for row in rows])
    print(f"byte-identical across runs: {same}; source scan (cold): {cold['scan_s']:.1f} s")
    meta = machine() | {"recipe": "dpm-tse", "count": args.count, "byte_identical": same}
    write_results("mix", meta | {"target_mixtures_per_s_2_jobs": TARGET}, rows)


if __name__ == "__main__":
    main()
