"""Mixtures per second of `tse mix --recipe dpm-tse` (10 s, 16 kHz) for --jobs 1 and 2, sources already decoded.

    .venv/bin/python bench/mix.py [--count 400] [--jobs 1 2] [--workdir DIR]

Writes a synthetic FSD/TAU tree, builds the train split once to fill the decoded-source cache (timed as the cold
run), then builds it again into fresh folders sharing that cache, once per --jobs value. The mixing phase is
timed from the first task to the last file written (worker start-up included). Prints a table and writes
bench/results/mix.json. Target: at least 50 mixtures/s with 2 jobs once sources are decoded.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import tempfile
import time
from pathlib import Path

from tse_cli.data.build import Options, build
from tse_cli.data.synthetic import SyntheticSize, write_corpus

RESULTS = Path(__file__).resolve().parent / "results"


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

    print(f"tse mix dpm-tse, {args.count} ten-second 16 kHz mixtures per run (synthetic sources)")
    print(f"{'run':<24}{'jobs':>6}{'mix s':>10}{'mixtures/s':>13}{'vs jobs 1':>11}{'CPU s':>9}{'mix/CPU s':>11}")
    base = warm[0]["mixtures_per_s"]
    for label, r in [("cold (decoding)", cold)] + [("warm (cached sources)", r) for r in warm]:
        ratio = f"{r['mixtures_per_s'] / base:.2f}x" if label.startswith("warm") else ""
        print(
            f"{label:<24}{r['jobs']:>6}{r['mix_s']:>10.2f}{r['mixtures_per_s']:>13.1f}{ratio:>11}"
            f"{r['cpu_s']:>9.1f}{r['mixtures_per_cpu_s']:>11.1f}"
        )
    print(
        f"load average during the run: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs (wall-clock rates are noisy)"
    )
    print(f"byte-identical across runs: {same}; source scan (cold): {cold['scan_s']:.1f} s")
    RESULTS.mkdir(exist_ok=True)
    report = {
        "bench": "mix",
        "recipe": "dpm-tse",
        "count": args.count,
        "cold": cold,
        "warm": warm,
        "byte_identical": same,
        "target_mixtures_per_s_2_jobs": 50,
        "machine": {
            "cpus": os.cpu_count(),
            "loadavg": os.getloadavg(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    (RESULTS / "mix.json").write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
