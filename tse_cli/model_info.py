"""What `tse models info` reports about a model without its weights: the registry entry or checkpoint it comes
from, and the architecture's size, compute, latency (or window), sample rate and clue, built on the meta device."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tse_cli.models.protocol import ExtractionModel, model_kind


def describe(name: str) -> dict[str, Any]:
    """What `tse models info` reports for an architecture name, a registry entry or a checkpoint directory.

    Weights are never downloaded: the model is built from its architecture and config on the meta device. An
    entry whose size is in a published config file (`waveformer`) is sized from that file once it is cached;
    before, its size is reported as unknown (`size` says how to get it), never guessed.
    """
    from tse_cli.checkpoint import read_config
    from tse_cli.models import ARCHITECTURES
    from tse_cli.weights import cache_state, load_registry, published_size, unknown_model

    registry = load_registry()
    info: dict[str, Any] = {"name": name}
    origin = name
    if name in registry:
        entry = registry[name]
        origin = f"registry entry {name!r}"
        files = {role: str(spec.source) for role, spec in entry.files.items()}
        info |= {"description": entry.description, "license": entry.license, "citation": entry.citation}
        info |= {"format": entry.format, "source": files, "cached": cache_state(entry)}
        sized = published_size(entry)
        if sized is None:
            declared = ARCHITECTURES[entry.architecture]  # what every size of the architecture shares
            unknown = f"from its published config, once downloaded (`tse models download {name}`)"
            info |= {"architecture": entry.architecture, "config": None, "size": unknown}
            return info | {"sample_rate": declared.sample_rate, "clue": declared.clue_kind}
        arch, config = sized
    elif name in ARCHITECTURES:
        arch, config = name, {}
    elif Path(name).is_dir():
        saved = read_config(name)
        arch, config = saved["arch"], saved.get("config", {})
        info["source"] = str(Path(name).resolve())
        origin = str(Path(name) / "config.json")
    else:
        raise unknown_model(name, registry, ARCHITECTURES)
    return info | {"architecture": arch, "config": config} | model_stats(arch, config, origin)


def model_stats(arch: str, config: dict[str, Any], origin: str = "") -> dict[str, Any]:
    """Parameters, compute, latency, sample rate and clue of architecture `arch` built with `config`.

    Sizes beyond this machine's memory are refused first (`budget.ModelSizeError` naming `origin`, where the
    sizes come from), as loading the model would refuse them."""
    from tse_cli.models.budget import check_fits, meta_model

    check_fits(arch, config, origin=origin)
    model = meta_model(arch, config, origin)
    stats: dict[str, Any] = {
        "parameters": sum(p.numel() for p in model.parameters()),
        "sample_rate": model.sample_rate,
        "clue": model.clue_kind,
    }
    if model.clue_kind == "class":
        from tse_cli.classes import FSD_CLASSES

        stats["classes"] = len(FSD_CLASSES)
    return stats | compute_stats(model)


def compute_stats(model: ExtractionModel) -> dict[str, Any]:
    """Algorithmic latency (causal models) or window (window models), and GMAC per second of audio.

    Compute is counted by `tse_cli.models.complexity.count` over one second of audio, or one native window for
    window models (which always run whole windows). A model whose forward cannot run on the meta device gets
    `gmac_per_second: None` and the reason in `gmac_note`.
    """
    from tse_cli.models.complexity import count

    stats: dict[str, Any] = {}
    seconds = 1.0
    if model_kind(model) == "stream":
        stats["latency_ms"] = 1000 * model.latency_samples / model.sample_rate
    else:
        seconds = stats["window_seconds"] = model.window_samples / model.sample_rate
    try:
        macs = count(model, seconds=seconds)["macs_per_second"]
    except (NotImplementedError, RuntimeError, ValueError) as err:  # shape-only counting is not always possible
        reason = " ".join(str(err).split())[:120]
        return stats | {"gmac_per_second": None, "gmac_note": f"not countable without weights ({reason})"}
    return stats | {"gmac_per_second": macs / 1e9}
