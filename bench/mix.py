"""Mixtures per second of `tse mix --recipe dpm-tse` (10 s, 16 kHz) for --jobs 1 and 2, sources already decoded.

    .venv/bin/python bench/mix.py [--count 400] [--jobs 1 2] [--workdir DIR] [--baseline COMMIT|none]

Writes a synthetic FSD/TAU tree, builds the train split once to fill the decoded-source cache (timed as the cold
run), then builds it again into fresh folders sharing that cache, once per --jobs value. The mixing phase is
timed from the first task to the last file written (worker start-up included); the cost of creating one file
there is measured just before each run (column "create us"). Prints a table and writes
bench/results/mix.json. Target: at least 200 mixtures/s with 2 jobs once sources are decoded (issue 16).

`--baseline COMMIT` (default: the engine before issue 16's speed-ups) also runs that commit's `tse_cli` (taken
with `git archive` into the work folder, run in a subprocess) on the same cache, interleaved with this tree's
runs, and checks that both write the same bytes.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import machine, print_table, write_results

from tse_cli.data.build import Options, build
from tse_cli.data.synthetic import SyntheticSize, write_corpus

TARGET = 200  # mixtures per second with 2 jobs
BASELINE = "566cda3"  # the last commit before issue 16's tse mix speed-ups


def _cpu_seconds() -> float:
    """CPU time of this process and its finished children (worker pools are joined by `build`)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def create_cost(work: Path, files: int = 200) -> float:
    """Microseconds to create one empty file, in a new folder of `work` (the files stay until the work folder
    goes: deleting them would slow the runs that follow). On ext4 without a journal every create scans past the
    inodes freed in the last one to five minutes, so this says how much was deleted there just before a run."""
    probe = Path(tempfile.mkdtemp(prefix="create-", dir=work))
    t0 = time.perf_counter()
    for i in range(files):
        os.close(os.open(probe / str(i), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    return (time.perf_counter() - t0) / files * 1e6


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


def run_baseline(tree: Path, corpus: Path, out: Path, cache: Path, count: int, jobs: int) -> dict:
    """`run` with the `tse_cli` package in `tree` (an older commit's), in a fresh interpreter."""
    code = (
        "import json, sys; sys.path[:0] = [sys.argv[1], sys.argv[2]]; import mix; from pathlib import Path; "
        "print(json.dumps(mix.run(*map(Path, sys.argv[3:6]), int(sys.argv[6]), int(sys.argv[7]))))"
    )
    args = [str(tree), str(Path(__file__).parent), str(corpus), str(out), str(cache), str(count), str(jobs)]
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"baseline run failed: {done.stderr.strip().splitlines()[-1:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def baseline_tree(commit: str, work: Path) -> Path:
    """`commit`'s tse_cli package extracted under `work` (git archive)."""
    tree = work / f"baseline-{commit}"
    if not (tree / "tse_cli").is_dir():
        tree.mkdir(parents=True, exist_ok=True)
        repo = Path(__file__).resolve().parent.parent
        archive = subprocess.run(
            ["git", "-C", str(repo), "archive", commit, "tse_cli"], capture_output=True, check=True
        )
        subprocess.run(["tar", "-x", "-C", str(tree)], input=archive.stdout, check=True)
    return tree


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=400, help="train mixtures per run")
    parser.add_argument("--jobs", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--workdir", type=Path, default=None, help="keep files here (default: a temp folder)")
    parser.add_argument("--baseline", default=BASELINE, help="commit to compare with in the same run, or none")
    args = parser.parse_args()

    work = args.workdir or Path(tempfile.mkdtemp(prefix="tse-bench-mix-"))
    try:
        corpus, cache = work / "corpus", work / "cache"
        if not (corpus / "fsd").is_dir():
            write_corpus(corpus, SyntheticSize(train_per_class=6, test_per_class=2, dev_backgrounds=12))
        cold = run(corpus, work / "cold", cache, args.count, max(args.jobs))
        tree = None if args.baseline == "none" else baseline_tree(args.baseline, work)
        warm, base = [], []
        for jobs in args.jobs:
            shutil.rmtree(work / f"warm{jobs}", ignore_errors=True)
            cost = create_cost(work)
            warm.append(run(corpus, work / f"warm{jobs}", cache, args.count, jobs) | {"create_us": round(cost)})
            if tree is not None:
                shutil.rmtree(work / f"base{jobs}", ignore_errors=True)
                cost = create_cost(work)
                base.append(
                    run_baseline(tree, corpus, work / f"base{jobs}", cache, args.count, jobs)
                    | {"create_us": round(cost)}
                )
        outputs = [f"warm{j}" for j in args.jobs] + ([f"base{j}" for j in args.jobs] if tree is not None else [])
        cold_files = sorted(p.relative_to(work / "cold") for p in (work / "cold" / "train").iterdir())
        same = all((work / "cold" / f).read_bytes() == (work / o / f).read_bytes() for o in outputs for f in cold_files)
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)

    rows = [{"run": "cold (decoding)", **cold}] + [{"run": "warm (cached sources)", **r} for r in warm]
    rows += [{"run": f"warm, baseline {args.baseline}", **r} for r in base]
    first = warm[0]["mixtures_per_s"]
    for row in rows[1:]:
        row["vs_first_warm"] = row["mixtures_per_s"] / first
    columns = ["run", "jobs", "mix s", "mixtures/s", f"vs jobs {args.jobs[0]}", "CPU s", "mix/CPU s", "create us"]
    keys = ["run", "jobs", "mix_s", "mixtures_per_s", "vs_first_warm", "cpu_s", "mixtures_per_cpu_s", "create_us"]
    title = f"tse mix dpm-tse, {args.count} ten-second 16 kHz mixtures per run (synthetic sources)"
    print_table(title, columns, [[row.get(k) for k in keys] for row in rows])
    best = max((r for r in warm if r["jobs"] == 2), key=lambda r: r["mixtures_per_s"], default=None)
    met = (
        "not measured (no --jobs 2 run)" if best is None else ("met" if best["mixtures_per_s"] >= TARGET else "NOT met")
    )
    if base:  # not with --baseline none
        for b, w in zip(base, warm, strict=True):
            print(f"jobs {w['jobs']}: {w['mixtures_per_s'] / b['mixtures_per_s']:.2f}x the baseline's mixtures/s")
    print(f"target >= {TARGET} mixtures/s with 2 jobs: {met}; load average (1 min) {os.getloadavg()[0]:.2f}")
    print(
        f"every file byte-identical across runs (baseline included): {same}; source scan (cold): {cold['scan_s']:.1f} s"
    )
    print(
        "create us: one empty file created in the work folder just before the run; a mixture creates 5 files. "
        "Where it reads hundreds of us, files were deleted there in the minutes before (docs/performance.md)"
    )
    meta = machine() | {"recipe": "dpm-tse", "count": args.count, "byte_identical": same, "baseline": args.baseline}
    write_results("mix", meta | {"target_mixtures_per_s_2_jobs": TARGET}, rows)


if __name__ == "__main__":
    main()
