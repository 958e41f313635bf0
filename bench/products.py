"""Matrix products of an offline engine block (2048 frames): tse's many-row kernel against oneDNN and MKL.

    .venv/bin/python bench/products.py                 # 2 threads, WaveMamba-large's shapes
    .venv/bin/python bench/products.py --threads 1 --rows 4096

Each shape is one product of WaveMamba-large's 65,536-sample block (in_conv, an encoder layer's 1x1 conv, the
decoder's in_proj, x_proj, dt_proj and out_proj, the fused query, out_conv), run three ways in alternation:
`tse_cli.models.kernels.matmul` (what the engine uses with the CPU kernels on), oneDNN against its packed weight
(what it used before, and without the kernels), and MKL against the transposed weight. Medians over --repeats
rounds; GMAC/s and each one's time over tse's. Prints a table and writes bench/results/products.json.
"""

from __future__ import annotations

import argparse

import torch
from common import machine, median_times, print_table, write_results

from tse_cli.models import kernels, products

# (name, in, out) of WaveMamba-large (enc_dim 512, dec_dim 256, d_inner 512, d_state 16, dt_rank 16, L 32)
SHAPES = [
    ("in_conv", 96, 512),
    ("encoder 1x1 conv", 512, 512),
    ("in_proj", 256, 1024),
    ("x_proj", 512, 32),
    ("dt_proj", 16, 512),
    ("out_proj", 512, 256),
    ("fused query", 256, 16),
    ("out_conv", 512, 160),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rows", type=int, default=2048, help="rows per product (frames of one engine block)")
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if not kernels.available():
        raise SystemExit(f"tse's CPU kernels do not build here: {kernels.build_error()}")
    if products._ONEDNN is None:
        raise SystemExit("this torch has no oneDNN")
    rows, table = [], []
    with torch.inference_mode():
        for name, k, n in SHAPES:
            x = torch.randn(args.rows, k)
            weight, bias = torch.nn.Parameter(torch.randn(n, k) / k**0.5), torch.nn.Parameter(torch.randn(n))
            wide, packed = kernels.wide_panels(weight), products.derived(weight, "onednn", products._pack)
            weight_t = weight.t().contiguous()
            runs = {
                "tse": lambda x=x, wide=wide, n=n, bias=bias: kernels.matmul(x, wide, n, bias),
                "oneDNN": lambda x=x, packed=packed, bias=bias: products._ONEDNN(x, packed, bias, "none", [], ""),
                "MKL": lambda x=x, weight_t=weight_t, bias=bias: torch.addmm(bias, x, weight_t),
            }
            times = median_times(runs, args.repeats)
            macs = args.rows * k * n
            row = {"product": name, "rows": args.rows, "in": k, "out": n}
            for key, t in times.items():
                row[f"{key}_gmacs"] = macs / t["wall"] / 1e9
            row["oneDNN_over_tse"] = times["oneDNN"]["wall"] / times["tse"]["wall"]
            row["MKL_over_tse"] = times["MKL"]["wall"] / times["tse"]["wall"]
            rows.append(row)
            table.append([f"{name} ({args.rows} x {k} -> {n})", *(row[f"{key}_gmacs"] for key in runs)])
            table[-1] += [row["oneDNN_over_tse"], row["MKL_over_tse"]]
    title = (
        f"Products of one engine block, {args.threads} threads, median of {args.repeats} alternating rounds "
        "(GMAC/s, higher is faster; time over tse's: above 1, tse's kernel is faster)"
    )
    columns = ["product", "tse GMAC/s", "oneDNN GMAC/s", "MKL GMAC/s", "oneDNN / tse", "MKL / tse"]
    print_table(title, columns, table)
    write_results("products", machine() | {"threads": args.threads, "repeats": args.repeats}, rows)


if __name__ == "__main__":
    main()
