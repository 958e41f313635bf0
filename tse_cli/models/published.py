"""Reading the published upstream checkpoint formats: the one place that unpickles, and the strict weight check.

The converters (`load_published` of `tse_cli.models.waveformer`, `avsepformer` and `dpmtse`, run once per file by
`tse convert` and `tse_cli.weights`) read the authors' torch files with `read_torch_file`
(`torch.load(weights_only=True)`: tensors and plain containers only, never code), find the weights with
`tensor_dict`, and load them with `load_strict`, which refuses any missing, unexpected or mis-shaped key and names
them. Every problem is a `PublishedFormatError` whose message is one line naming the file.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from tse_cli.checkpoint import CheckpointError
from tse_cli.errors import first_line

LISTED_KEYS = 3  # keys named per kind of mismatch; the count says how many there are in all


class PublishedFormatError(CheckpointError):
    """A published checkpoint or config that cannot be read or does not match the architecture (the message is
    one line naming the file)."""


def read_torch_file(path: str | Path) -> Any:
    """The object in a torch pickle, loaded on the CPU with `weights_only=True`; `PublishedFormatError` for a
    missing file or anything torch refuses to read (the first line of its reason).

    Besides tensors and containers, numpy scalars are allowed (`numpy_scalar_globals`): the authors' training
    scripts save their metrics as numpy float64 beside the weights (Waveformer's `val_metrics`)."""
    path = Path(path)
    if not path.exists():
        raise PublishedFormatError(f"{path}: no such file")
    try:
        with torch.serialization.safe_globals(numpy_scalar_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 (torch raises many types for foreign or corrupt files; all mean one thing)
        raise PublishedFormatError(f"{path}: not a readable torch checkpoint ({first_line(err)})") from None


def numpy_scalar_globals() -> list[Any]:
    """What unpickling a numpy scalar names: the scalar reconstructor (under numpy 2's module and numpy 1's,
    `numpy.core.multiarray`, as files saved with numpy 1 name it), `numpy.dtype` and its per-type classes. They
    build numbers from bytes and run no code of the file's choosing."""
    import numpy as np

    scalar = np.float64(0).__reduce__()[0]
    dtypes = [cls for cls in vars(np.dtypes).values() if isinstance(cls, type) and issubclass(cls, np.dtype)]
    return [scalar, (scalar, "numpy.core.multiarray.scalar"), np.dtype, *dtypes]


def tensor_dict(obj: Any, path: str | Path, under: Sequence[str] = (), what: str = "state_dict") -> dict[str, Tensor]:
    """The state dict in a loaded checkpoint `obj`: `obj` itself, or what it holds under the keys `under`, followed
    in order wherever present (e.g. ("model", "state_dict")). It must be a non-empty dict of tensors; otherwise
    `PublishedFormatError` ("no {what} of tensors in this checkpoint")."""
    for key in under:
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, Tensor) for v in obj.values()):
        raise PublishedFormatError(f"{path}: no {what} of tensors in this checkpoint")
    return obj


def mismatches(expected: dict[str, Tensor], state: dict[str, Tensor]) -> list[str]:
    """What keeps `state` from loading strictly where `expected` (a module's state dict) is wanted: one entry per
    kind ("missing: a, b, c, ... (5)", "unexpected: ...", "wrong shape: ..."), none when it loads."""
    kinds = {
        "missing": [k for k in expected if k not in state],
        "unexpected": [k for k in state if k not in expected],
        "wrong shape": [k for k in expected if k in state and state[k].shape != expected[k].shape],
    }
    return [
        f"{kind}: {', '.join(keys[:LISTED_KEYS])}{', ...' if len(keys) > LISTED_KEYS else ''} ({len(keys)})"
        for kind, keys in kinds.items()
        if keys
    ]


def load_strict(module: nn.Module, state: dict[str, Tensor], source: str | Path, what: str) -> None:
    """Load `state` into `module` with `strict=True`, after checking every key and shape: `PublishedFormatError`
    "{source}: weights do not match {what}: missing: ...; unexpected: ...; wrong shape: ..." otherwise."""
    problems = mismatches(module.state_dict(), state)
    if problems:
        raise PublishedFormatError(f"{source}: weights do not match {what}: {'; '.join(problems)}")
    module.load_state_dict(state, strict=True)
