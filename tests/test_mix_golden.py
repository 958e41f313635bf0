"""`tse mix` output pinned to the bytes the engine wrote before its speed-ups (issue 16 item 4): a digest of every
audio file, render record, specification (source paths left out: they name this run's temporary folder) and
meta.csv of a tiny dpm-tse build (3 mixtures per split, stems on, seed 0) from the synthetic corpus.

DIGEST was computed with the engine of commit 566cda3 (before the speed-ups). The synthetic corpus and the
mixing are float32/float64 numpy arithmetic, deterministic on one numpy build; if a numpy or CPU change ever
moves a last bit, the failing digest says so, and test_jobs_do_not_change_a_byte still pins jobs-independence."""

from __future__ import annotations

import hashlib
import json

from test_data_common import built_set

DIGEST = "2f069f7a84f3fe4f7039442cf1e241ae3fe5a886f5c015e3c22a1e5a35897b12"


def _strip_paths(obj):
    if isinstance(obj, dict):
        return {k: _strip_paths(v) for k, v in obj.items() if k != "path"}
    if isinstance(obj, list):
        return [_strip_paths(v) for v in obj]
    return obj


def set_digest(root) -> str:
    """sha256 over the set's files in sorted order (JSON specs without their `path` fields)."""
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if not p.is_file() or ".cache" in p.relative_to(root).parts or p.name == "recipe.json":
            continue
        data = p.read_bytes()
        if p.suffix == ".json":
            data = json.dumps(_strip_paths(json.loads(data)), sort_keys=True).encode()
        h.update(str(p.relative_to(root)).encode() + b"\0" + hashlib.sha256(data).digest())
    return h.hexdigest()


def test_mixtures_are_byte_identical_to_the_engine_before_the_speed_ups(tmp_path_factory):
    root = built_set(tmp_path_factory, "dpm-tse", count=3, stems=True)
    assert set_digest(root) == DIGEST
