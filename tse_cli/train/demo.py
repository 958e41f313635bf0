"""`tse demo`: a synthetic scene, the embedded demo model's estimate of one class, and how good it is.

The default scene is always the same (seed `DEFAULT_SEED`), so `make demo` gives one result everywhere; `--seed N`
draws others. Seed 9 was picked as a typical scene: over seeds 0-29 this model's SI-SNRi ranges from -3.9 to
+23.0 dB (mean 7.3, median 6.4), and seed 9 gives 7.0 dB, next to the held-out mean of its model card (6.16 dB
over 64 test scenes), which the demo prints beside the scene's figure.

The scene follows the recipe the demo model was trained on (`tse mix --recipe waveformer` over the
`tse mix --synthetic` corpus, see `tse_cli/assets/demo/MODEL_CARD.md`): 6 s at 44.1 kHz, a synthetic ambience
at -50 LUFS and three events of distinct classes at 15-25 dB above it, each a newly generated clip (never one
the model saw). Nothing is downloaded.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from tse_cli.atomic import write_text
from tse_cli.classes import FSD_CLASSES, NUM_CLASSES, class_index, multi_hot
from tse_cli.data.wavio import write_wav
from tse_cli.train.metrics import separation_metrics
from tse_cli.train.png import spectrogram_png

RATE = 44100
SECONDS = 6.0
REF_LUFS = -50.0
EVENTS = 3
SNR_DB = (15.0, 25.0)
DEFAULT_SEED = 9
RECORD = "demo.json"  # what a demo run wrote: marks the folder as a demo's, which a rerun may replace
OUTPUTS = ("mixture.wav", "reference.wav", "estimate.wav", "spectrograms.png", RECORD)
CARD = "MODEL_CARD.md"
_CARD_RESULT = re.compile(r"^\|\s*held-out result\s*\|(.+)\|\s*$", re.MULTILINE)


class DemoFolderError(ValueError):
    """An output folder `tse demo` would not write into without --overwrite."""


@dataclass
class DemoResult:
    """What one demo run made: the target class, its metrics (dB) and the files written."""

    target: str
    others: list[str]
    seed: int
    si_snr: float
    si_snri: float
    snri: float
    files: dict[str, Path]
    card: str | None = None  # the model card's held-out result, when the checkpoint has a card
    replaced: bool = False  # whether a previous demo's files in the folder were replaced


def card_result(checkpoint: str | Path | None) -> str | None:
    """The "held-out result" row of the MODEL_CARD.md in a checkpoint directory (markdown emphasis removed), or
    None when there is no card or no such row."""
    path = Path(checkpoint) / CARD if checkpoint is not None else None
    if path is None or not path.is_file():
        return None
    match = _CARD_RESULT.search(path.read_text(encoding="utf-8"))
    return " ".join(match.group(1).replace("**", "").split()) if match else None


def check_folder(out: Path, overwrite: bool) -> bool:
    """Whether `out` holds a previous demo (which may be replaced); raise `DemoFolderError` for a folder with
    other content or demo file names that no demo wrote, unless `overwrite`. Only the demo's own files are ever
    written, so --overwrite leaves anything else in the folder alone."""
    if not out.exists():
        return False
    if not out.is_dir():
        raise DemoFolderError(f"{out}: exists and is not a folder")
    previous = (out / RECORD).is_file()
    foreign = sorted(p.name for p in out.iterdir() if p.name not in OUTPUTS or not previous)
    if foreign and not overwrite:
        shown = ", ".join(foreign[:3]) + (" ..." if len(foreign) > 3 else "")
        raise DemoFolderError(
            f"{out}: holds files tse demo did not write ({shown}); use another -o, or --overwrite to write "
            f"{', '.join(OUTPUTS)} into it (nothing else is touched)"
        )
    return previous


def make_scene(seed: int, target: str | None = None) -> tuple[np.ndarray, np.ndarray, str, list[str]]:
    """(mixture (T,), reference (T,), target class, other classes): a fresh 6 s synthetic scene, float32."""
    from tse_cli.data.loudness import scaper_lufs
    from tse_cli.data.synthetic import synth_background, synth_clip

    rng = np.random.default_rng([seed, 7])
    n = round(SECONDS * RATE)
    first = class_index(target) if target else int(rng.integers(NUM_CLASSES))
    others = [int(i) for i in rng.permutation([i for i in range(NUM_CLASSES) if i != first])[: EVENTS - 1]]
    background = synth_background(int(rng.integers(10)), rng, RATE, SECONDS).mean(axis=1)
    mixture = background * 10 ** ((REF_LUFS - scaper_lufs(background, RATE)) / 20)
    reference = np.zeros(n)
    for k, index in enumerate([first, *others]):
        clip = synth_clip(index, rng, RATE, max_seconds=3.0)
        clip *= 10 ** ((REF_LUFS + rng.uniform(*SNR_DB) - scaper_lufs(clip, RATE)) / 20)
        start = int(rng.integers(0, n - clip.size))
        event = np.zeros(n)
        event[start : start + clip.size] = clip
        mixture = mixture + event
        if k == 0:
            reference = event
    peak = np.abs(mixture).max()
    scale = 0.99 / peak if peak > 0.99 else 1.0  # as the recipe's peak normalisation
    return (
        (mixture * scale).astype(np.float32),
        (reference * scale).astype(np.float32),
        FSD_CLASSES[first],
        [FSD_CLASSES[i] for i in others],
    )


def run_demo(
    out: str | Path,
    seed: int = DEFAULT_SEED,
    target: str | None = None,
    model: str = "demo",
    overwrite: bool = False,
) -> DemoResult:
    """Make scene `seed`, extract its target with `model` (a registry name or checkpoint directory), write files.

    Writes `mixture.wav`, `reference.wav`, `estimate.wav` (32-bit float, 44.1 kHz), `spectrograms.png` and
    `demo.json` (the scene and its metrics) into `out`, and nothing else; `check_folder` decides first whether
    `out` may be written (`DemoFolderError`).
    """
    from tse_cli.runinfo import report_run
    from tse_cli.weights import load_model

    out = Path(out)
    replaced = check_folder(out, overwrite)
    net = load_model(model)
    report_run(net, "cpu", spec=model)
    mixture, reference, label, others = make_scene(seed, target)
    query = torch.from_numpy(multi_hot([class_index(label)]))[None]
    with torch.inference_mode():
        estimate = net(torch.from_numpy(mixture)[None, None], query)[0, 0].float().numpy()
    metrics = separation_metrics(*(torch.from_numpy(x) for x in (estimate, mixture, reference)))
    out.mkdir(parents=True, exist_ok=True)
    files = {name: out / f"{name}.wav" for name in ("mixture", "reference", "estimate")}
    for name, audio in zip(files, (mixture, reference, estimate), strict=True):
        write_wav(files[name], audio, RATE, subtype="FLOAT")
    panels = [(f"mixture: {label} + {' + '.join(others)}", mixture), (f"reference: {label}", reference)]
    panels.append((f"estimate: SI-SNRi {metrics['si_snri'].item():.1f} dB", estimate))
    files["spectrograms"] = spectrogram_png(out / "spectrograms.png", panels, RATE)
    values = {k: metrics[k].item() for k in ("si_snr", "si_snri", "snri")}
    result = DemoResult(
        label, others, seed, **values, files=files, card=card_result(getattr(net, "checkpoint_dir", None))
    )
    record = {k: v for k, v in asdict(result).items() if k not in ("files", "replaced")} | {"model": model}
    write_text(out / RECORD, json.dumps(record, indent=1) + "\n")
    result.files["record"], result.replaced = out / RECORD, replaced
    return result
