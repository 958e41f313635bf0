"""`tse demo`: a fresh synthetic scene, the embedded demo model's estimate of one class, and how good it is.

The scene follows the recipe the demo model was trained on (`tse mix --recipe waveformer` over the
`tse mix --synthetic` corpus, see `tse_cli/assets/demo/MODEL_CARD.md`): 6 s at 44.1 kHz, a synthetic ambience
at -50 LUFS and three events of distinct classes at 15-25 dB above it, each a newly generated clip (never one
the model saw). Nothing is downloaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from tse_cli.classes import FSD_CLASSES, NUM_CLASSES, class_index, multi_hot
from tse_cli.data.wavio import write_wav
from tse_cli.train.metrics import separation_metrics
from tse_cli.train.png import spectrogram_png

RATE = 44100
SECONDS = 6.0
REF_LUFS = -50.0
EVENTS = 3
SNR_DB = (15.0, 25.0)


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


def make_scene(seed: int, target: str | None = None) -> tuple[np.ndarray, np.ndarray, str, list[str]]:
    """(mixture (T,), reference (T,), target class, other classes): a fresh 6 s synthetic scene, float32."""
    from tse_cli.data.loudness import integrated_lufs
    from tse_cli.data.synthetic import synth_background, synth_clip

    rng = np.random.default_rng([seed, 7])
    n = round(SECONDS * RATE)
    first = class_index(target) if target else int(rng.integers(NUM_CLASSES))
    others = [int(i) for i in rng.permutation([i for i in range(NUM_CLASSES) if i != first])[: EVENTS - 1]]
    background = synth_background(int(rng.integers(10)), rng, RATE, SECONDS).mean(axis=1)
    mixture = background * 10 ** ((REF_LUFS - integrated_lufs(background, RATE)) / 20)
    reference = np.zeros(n)
    for k, index in enumerate([first, *others]):
        clip = synth_clip(index, rng, RATE, max_seconds=3.0)
        clip *= 10 ** ((REF_LUFS + rng.uniform(*SNR_DB) - integrated_lufs(clip, RATE)) / 20)
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


def run_demo(out: str | Path, seed: int | None = None, target: str | None = None, model: str = "demo") -> DemoResult:
    """Make a scene, extract its target with `model` (a registry name or checkpoint directory), write the files.

    Writes `mixture.wav`, `reference.wav`, `estimate.wav` (32-bit float, 44.1 kHz) and `spectrograms.png` into
    `out`. `seed` None draws a fresh one (reported in the result, so a run can be repeated).
    """
    from tse_cli.weights import load_model

    seed = int(np.random.default_rng().integers(2**31)) if seed is None else seed
    net = load_model(model)
    mixture, reference, label, others = make_scene(seed, target)
    query = torch.from_numpy(multi_hot([class_index(label)]))[None]
    with torch.inference_mode():
        estimate = net(torch.from_numpy(mixture)[None, None], query)[0, 0].float().numpy()
    metrics = separation_metrics(*(torch.from_numpy(x) for x in (estimate, mixture, reference)))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files = {name: out / f"{name}.wav" for name in ("mixture", "reference", "estimate")}
    for name, audio in zip(files, (mixture, reference, estimate), strict=True):
        write_wav(files[name], audio, RATE, subtype="FLOAT")
    panels = [(f"mixture: {label} + {' + '.join(others)}", mixture), (f"reference: {label}", reference)]
    panels.append((f"estimate: SI-SNRi {metrics['si_snri'].item():.1f} dB", estimate))
    files["spectrograms"] = spectrogram_png(out / "spectrograms.png", panels, RATE)
    return DemoResult(
        label, others, seed, metrics["si_snr"].item(), metrics["si_snri"].item(), metrics["snri"].item(), files
    )
