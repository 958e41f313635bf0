"""tse: target sound extraction (WaveMamba, Waveformer, DPM-TSE, AV-SepMamba, AV-SepFormer).

`tse_cli.load_model(name_or_path, device="cpu")` loads a registry name, a checkpoint directory or a Hub repo
(imported lazily, so `import tse_cli` stays light).
"""

from __future__ import annotations

from typing import Any

from tse_cli import versions as _versions

__version__ = "0.1.0"

# A torchaudio that cannot load beside the installed torch is refused here, in one line, before any module loads it.
_versions.check()
__all__ = ["__version__", "load_model"]


def __getattr__(name: str) -> Any:
    if name == "load_model":
        from tse_cli.weights import load_model

        return load_model
    raise AttributeError(f"module 'tse_cli' has no attribute {name!r}")
