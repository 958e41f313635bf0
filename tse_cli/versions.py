"""The torch / torchaudio / CUDA versions tse runs on, and the check that the installed pair can work together.

torchaudio's compiled library needs the symbols of the torch it was built with, while its wheel declares only
`torch>=X`, so pip happily installs a newer torchaudio beside an older torch and the first `import torchaudio` fails
deep in its loader. `check()` reads the installed versions from package metadata (no import, about a millisecond)
and refuses such a pair with one line naming both versions and the fix. `tse --version` also loads torchaudio
for real and prints the versions (`make` runs it after installing).
"""

from __future__ import annotations

import platform
import re
import sys
from collections.abc import Callable
from importlib import metadata
from types import TracebackType

# The pair the lock file and pyproject.toml pin (tests/test_lock.py keeps the three in step).
TESTED = {"torch": "2.11.0", "torchaudio": "2.11.0"}
FIX = f"pip install 'torch=={TESTED['torch']}' 'torchaudio=={TESTED['torchaudio']}' (the pair tse is tested with)"


class BrokenInstall(ImportError):
    """torch and torchaudio are missing or cannot work together; the message is one line with the fix."""


def installed(package: str) -> str | None:
    """The installed version of `package` (from its metadata, without importing it), or None."""
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _release(version: str) -> tuple[int, ...]:
    """`2.11.0+cu130` -> (2, 11, 0): the numeric release, local and pre-release tags dropped."""
    return tuple(
        int(m.group()) if (m := re.match(r"\d+", part)) else 0 for part in version.split("+")[0].split(".")[:3]
    )


def pair_problem(torch_version: str | None, torchaudio_version: str | None) -> str | None:
    """Why this torch/torchaudio pair cannot work (one line with the fix), or None when it can.

    A torchaudio newer than torch is refused: it links against symbols its torch does not have yet (seen:
    torchaudio 2.11.1 with torch 2.11.0). An older or equal torchaudio works.
    """
    if torch_version is None or torchaudio_version is None:
        missing = " and ".join(p for p, v in (("torch", torch_version), ("torchaudio", torchaudio_version)) if not v)
        return f"{missing} not installed; {FIX}"
    if _release(torchaudio_version) > _release(torch_version):
        return (
            f"torchaudio {torchaudio_version} needs a newer torch than the installed torch {torch_version} "
            f"(its library would fail to load); {FIX}"
        )
    return None


def _one_line_hook(previous: Callable[..., object]) -> Callable[..., None]:
    """sys.excepthook that prints a BrokenInstall as one line and hands anything else to `previous`."""

    def hook(kind: type[BaseException], error: BaseException, trace: TracebackType | None) -> None:
        if isinstance(error, BrokenInstall):
            print(f"error: {error}", file=sys.stderr)
        else:
            previous(kind, error, trace)

    return hook


def check() -> None:
    """Raise BrokenInstall when the installed torch/torchaudio pair cannot work together.

    Left uncaught (a script, the `tse` command), it prints one line, `error: ...`, and no traceback.
    """
    problem = pair_problem(installed("torch"), installed("torchaudio"))
    if problem is not None:
        sys.excepthook = _one_line_hook(sys.excepthook)
        raise BrokenInstall(problem)


def load_problem(error: BaseException) -> str | None:
    """One line for a torchaudio loader failure (`Could not load this library ... libtorchaudio`), else None."""
    text = str(error)
    if "libtorchaudio" not in text and "torchaudio" not in type(error).__module__:
        return None
    detail = text.strip().splitlines()[-1] if text.strip() else type(error).__name__
    return f"torchaudio {installed('torchaudio')} does not load with torch {installed('torch')} ({detail[:160]}); {FIX}"


def describe() -> str:
    """One line: tse, torch (with its CUDA build and whether a GPU is visible), torchaudio, Python, and whether
    tse's CPU kernels are in use (`tse_cli.models.kernels`).

    Loads torchaudio for real, so a pair that passes `check()` but still fails to load raises here (`make` runs
    `tse --version` after installing).
    """
    import torch
    import torchaudio

    from tse_cli import __version__
    from tse_cli.models import kernels

    if torch.version.cuda is None:
        cuda = "CPU build"
    elif torch.cuda.is_available():
        cuda = f"CUDA {torch.version.cuda}, {torch.cuda.device_count()} GPU(s): {torch.cuda.get_device_name(0)}"
    else:
        cuda = f"CUDA {torch.version.cuda} build, no GPU visible"
    return (
        f"tse {__version__} (torch {torch.__version__}, {cuda}; torchaudio {torchaudio.__version__}; "
        f"Python {platform.python_version()}; {kernels.describe()})"
    )
