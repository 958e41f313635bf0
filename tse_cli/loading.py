"""Loading the model a command names, with the request checked against it as early as it can be known.

A spec is a checkpoint directory, a registry name or a Hub repo `owner/repo[@revision]` (`tse_cli.weights`).
What an architecture declares (`tse_cli.models.ARCHITECTURES`: sample rate, clue kind, class limit) is known
before any download for a registry name or a local checkpoint (from its entry or its config.json), and only after
loading for a Hub repo; the class limit is checked once, at the first of those moments. No model module is
imported before `load_model` builds the model.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from tse_cli.classes import FSD_CLASSES
from tse_cli.models import ARCHITECTURES, Architecture

if TYPE_CHECKING:
    from tse_cli.models.protocol import ExtractionModel
    from tse_cli.weights import Entry


class ClassLimitError(ValueError):
    """More classes in one query than the model extracts at a time (a usage error, found before any work)."""


def load_checked(spec: str, device: str, classes: list[int]) -> ExtractionModel:
    """The model `spec` on `device`, refusing a union of `classes` (indices into `FSD_CLASSES`) larger than it
    extracts at a time: before its weights are downloaded when its architecture is known beforehand, else from
    the loaded model's `max_classes`. The registry is read once (and not at all for a local path).

    Raises `ClassLimitError`, `tse_cli.weights.WeightsError` (`UnknownModelError` for a name that is nothing
    known), or `OSError`/`ValueError` from reading the checkpoint; each message is one line.
    """
    from tse_cli import weights

    registry = None if Path(spec).expanduser().exists() else weights.load_registry()
    known = known_architecture(spec, registry)
    if known is not None:
        check_class_count(spec, known.max_classes, classes)
    net = weights.load_model(spec, device=device, registry=registry)
    if known is None:
        check_class_count(spec, net.max_classes, classes)
    return net


def known_architecture(spec: str, registry: dict[str, Entry] | None = None) -> Architecture | None:
    """The architecture `spec` names, known without downloading anything: a local checkpoint's config.json, else
    its entry in `registry` (read when None); None where neither says (a Hub repo, a broken folder: loading says
    why). Raises `tse_cli.weights.WeightsError` when the registry cannot be read."""
    path = Path(spec).expanduser()
    if path.exists():
        return _local_architecture(path)
    if registry is None:
        from tse_cli import weights

        registry = weights.load_registry()
    return _registry_architecture(registry.get(spec))


def _registry_architecture(entry: Entry | None) -> Architecture | None:
    """The architecture of a registry entry (None without one, or for an architecture tse does not know)."""
    return ARCHITECTURES.get(entry.architecture) if entry is not None else None


def _local_architecture(path: Path) -> Architecture | None:
    """The architecture a checkpoint directory's config.json names (None when it cannot tell: loading says why)."""
    from tse_cli.checkpoint import read_config

    try:
        return ARCHITECTURES.get(read_config(path)["arch"])
    except (OSError, ValueError, TypeError):  # CheckpointError is a ValueError
        return None


def check_class_count(spec: str, max_classes: int | None, classes: list[int]) -> None:
    """Refuse more classes than the model extracts at a time (`ClassLimitError`)."""
    if max_classes is not None and len(classes) > max_classes:
        names = ", ".join(FSD_CLASSES[i] for i in sorted(classes))
        raise ClassLimitError(
            f"model {spec!r} extracts at most {max_classes} class(es) at a time, got {len(classes)} ({names}); "
            "run it once per class"
        )
