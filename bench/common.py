"""Shared pieces of the bench scripts: the machine description, median timing, the published Waveformer anchor,
the printed table and the JSON results file (bench/results/<name>.json, git-ignored).

torch is imported only where it is used, so that a bench without torch (mix.py) and its spawned workers, which
import the bench's module again, do not pay for it."""

from __future__ import annotations

import argparse
import inspect
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

RESULTS = Path(__file__).resolve().parent / "results"
WAVEFORMER_ENV = "TSE_BENCH_WAVEFORMER_REPO"  # path of a checkout of github.com/vb000/Waveformer


def machine() -> dict[str, Any]:
    """CPU model (lscpu), core count, load average, torch version and threads, GPU name when present, the command
    and the UTC time."""
    import torch

    model = platform.processor() or platform.machine()
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        model = next(
            (line.split(":", 1)[1].strip() for line in lscpu.splitlines() if line.startswith("Model name")), model
        )
    except OSError:
        pass
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "load_average_1min": os.getloadavg()[0],
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "environment": {
            k: os.environ[k] for k in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "TSE_CPU_KERNELS") if k in os.environ
        },
        "cpu_kernels": kernels_state(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def kernels_state() -> str:
    """Whether tse's CPU kernels run in this process (`tse_cli.models.kernels`; built here if they can be)."""
    from tse_cli.models import kernels

    kernels.available()
    return kernels.describe()


Target = tuple[str, float | None, str, bool | None]  # what, measured value, the target, met (None: not measured)


def goal(what: str, value: float | None, target: str, ok: Callable[[float], bool]) -> Target:
    """One target: `ok(value)` says whether it is met (None when `value` was not measured)."""
    return what, value, target, None if value is None else ok(value)


def print_targets(targets: Sequence[Target]) -> list[dict[str, Any]]:
    """Print the issue's targets with the measured values, whether each is met, the load and the kernels' state;
    return them as JSON rows."""
    verdict = {True: "met", False: "NOT met", None: "not measured"}
    print_table(
        "Targets (issue 16)", ["what", "measured", "target", ""], [[w, v, t, verdict[m]] for w, v, t, m in targets]
    )
    print(f"load average (1, 5, 15 min): {', '.join(f'{x:.2f}' for x in os.getloadavg())}; {kernels_state()}")
    return [{"what": w, "measured": v, "target": t, "met": m} for w, v, t, m in targets]


def median_times(
    fns: dict[Any, Callable[[], Any]], repeats: int, sync: Callable[[], None] = lambda: None, warmup: bool = True
) -> dict[Any, dict[str, float]]:
    """Median wall and CPU seconds (`wall`, `cpu`) of each function over `repeats` rounds, after one untimed
    warm-up round when `warmup`. The functions alternate within a round, so that a busy machine slows them alike.

    CPU time is this process's (all its threads): on a shared machine it is less noisy than wall time, which
    also counts the time spent waiting for a core.
    """
    times: dict[Any, list[tuple[float, float]]] = {name: [] for name in fns}
    for round_ in range(repeats + warmup):
        for name, fn in fns.items():
            wall, cpu = time.perf_counter(), time.process_time()
            fn()
            sync()
            if round_ or not warmup:
                times[name].append((time.perf_counter() - wall, time.process_time() - cpu))
    return {
        name: {"wall": statistics.median(w for w, _ in t), "cpu": statistics.median(c for _, c in t)}
        for name, t in times.items()
    }


def published_waveformer_class(repo: str | None = None) -> tuple[type | None, str]:
    """The published `src.training.dcc_tf.Net` from the checkout named by $TSE_BENCH_WAVEFORMER_REPO (or `repo`).

    Returns (Net, "") or (None, the reason it is not available). Its own dependencies (speechbrain, torchmetrics)
    must be importable, e.g. from a separate --target directory on PYTHONPATH; they are not project dependencies.
    """
    repo = repo or os.environ.get(WAVEFORMER_ENV)
    if not repo:
        return None, f"${WAVEFORMER_ENV} not set (path of a checkout of github.com/vb000/Waveformer)"
    if not (Path(repo) / "src" / "training" / "dcc_tf.py").is_file():
        return None, f"{repo}: no src/training/dcc_tf.py (not a Waveformer checkout)"
    sys.path.insert(0, str(Path(repo).resolve()))
    try:
        from src.training.dcc_tf import Net
    except ImportError as err:
        return None, f"cannot import the published Waveformer from {repo}: {err}"
    finally:
        sys.path.pop(0)
    return Net, ""


def published_anchor_args(parser: argparse.ArgumentParser, threads: int) -> Callable[[], tuple[Any, type | None, str]]:
    """Add --threads and --waveformer-repo to `parser`; returns a function that parses, pins threads and the seed,
    and loads the published Waveformer class: (args, Net or None, the reason it is not available)."""
    parser.add_argument("--threads", type=int, default=threads)
    parser.add_argument("--waveformer-repo", default=None, help=f"Waveformer checkout (default ${WAVEFORMER_ENV})")

    def parse() -> tuple[Any, type | None, str]:
        import torch

        args = parser.parse_args()
        torch.set_num_threads(args.threads)
        torch.manual_seed(0)
        net_class, why_not = published_waveformer_class(args.waveformer_repo)
        if net_class is None:
            print(f"published Waveformer rows: not measured ({why_not})")
        return args, net_class, why_not

    return parse


def published_waveformer(ours: torch.nn.Module, net_class: type) -> torch.nn.Module:
    """The published Net with our Waveformer's config and exactly its weights (strict load), in eval mode."""
    defaults = inspect.signature(type(ours)).parameters
    config = {name: p.default for name, p in defaults.items()} | dict(ours.config)
    net = net_class(**config)
    net.load_state_dict(ours.state_dict(), strict=True)
    return net.eval()


def print_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """A rich table when rich is importable (it is a project dependency), else aligned plain text."""
    cells = [["-" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v) for v in row] for row in rows]
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
        print(title)
        for line in [list(columns), *cells]:
            print("  ".join(v.rjust(w) for v, w in zip(line, widths, strict=True)))
        return
    table = Table(title=title)
    for column in columns:
        table.add_column(column, justify="right")
    for row in cells:
        table.add_row(*row)
    console = Console()
    console.width = max(console.width, 150)  # not squeezed to 80 columns when piped
    console.print(table)


def write_results(name: str, meta: dict[str, Any], rows: list[dict[str, Any]]) -> Path:
    """Write {"meta", "rows"} to bench/results/<name>.json atomically; return the path."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    tmp.replace(path)
    print(f"wrote {path}")
    return path


def report(
    name: str,
    title: str,
    columns: Sequence[str],
    table: Sequence[Sequence[Any]],
    rows: list[dict[str, Any]],
    repeats: int,
    why_not: str,
    targets: Sequence[Target] = (),
) -> Path:
    """The common ending of the benches that compare with the published Waveformer: print the table, then write
    `rows` to bench/results/<name>.json with the machine, `repeats` and whether the published rows were measured
    (`why_not`: "" when they were, else the reason, as returned by published_anchor_args), then `targets`."""
    print_table(title, columns, table)
    goals = print_targets(targets) if targets else []
    published = f"not measured ({why_not})" if why_not else "measured"
    return write_results(name, machine() | {"repeats": repeats, "published": published, "targets": goals}, rows)
