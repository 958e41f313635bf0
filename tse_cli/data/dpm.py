"""The Tim-TSENet recipe used by DPM-TSE: 10 s, 16 kHz mixtures of a target, 1-3 interferers and a background.

Per mixture (`../shared/reference/data.md`, recipe A):

1. a target clip, a reference clip of the same class (another file), three interferer candidates of classes
   other than the target's, one background file, and the number of interferers used, uniform in {1, 2, 3};
2. target and interferers: clips of 10 s or more are cut to 160,000 - 100 samples, then silence is removed
   (`remove_silence`); the reference is cut to 10 s and placed at sample 0; the background is cut or
   zero-padded to 10 s;
3. each source starts at a uniform random sample with the whole clip inside the canvas;
4. one SNR ~ U(-5, 10) dB, shared by the interferers: gain = rms(target) / (rms(interferer) 10^(snr/20));
5. background SNR ~ U(5, 20) dB against the target the same way (rms over the 10 s canvas);
6. mixture = background + target + interferers.

Every random draw comes from an RNG seeded by (seed, split, index), so any mixture can be planned alone, in any
process. The plan is a JSON specification (`plan`); `render` turns a specification into arrays.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from tse_cli.classes import class_index
from tse_cli.data.layout import dpm_name
from tse_cli.data.sources import Clip

SAMPLE_RATE = 16000
SAMPLES = 160000  # 10 s
CUT = SAMPLES - 100  # long foreground clips are cut to this
PASSES = {"train": 5, "val": 1, "test": 1}  # each target clip used this many times per split
SPLIT_IDS = {"train": 0, "val": 1, "test": 2}
FORMAT = "tse-mix/dpm-tse/1"
SILENCE_THRESHOLD = 0.0005


class Loader(Protocol):
    """A mixture's sources: clips decoded at 16 kHz, mono float32, prepared for their role (`prepare`: `kind` is
    foreground, reference or background), and the RMS of such a clip."""

    def __call__(self, path: str, kind: str) -> np.ndarray: ...

    def rms(self, path: str, kind: str) -> float: ...


def remove_silence(
    audio: np.ndarray, sample_rate: int = SAMPLE_RATE, threshold: float = SILENCE_THRESHOLD
) -> np.ndarray:
    """Drop silent 200 ms windows (hop 100 ms) from the whole seconds of a clip, as Tim-TSENet does.

    Scans the first floor(seconds) of the clip in 100 ms hops; wherever the 200 ms window starting at the
    current hop has max |x| < threshold, both hops are removed and the scan stays put, else it moves one hop on.
    As in the original, when anything was removed the result is the kept hops only (the sub-second tail is
    dropped too); when nothing was removed the clip is returned whole. Clips under 1 s are returned as is.
    """
    hop = round(0.1 * sample_rate)
    n_hops = (audio.size // sample_rate) * sample_rate // hop
    if n_hops < 2:
        return audio
    peaks = np.abs(audio[: n_hops * hop]).reshape(n_hops, hop).max(axis=1)
    keep: list[int] = list(range(n_hops))
    i = 0
    while i + 1 < len(keep):
        if max(peaks[keep[i]], peaks[keep[i + 1]]) < threshold:
            del keep[i : i + 2]
        else:
            i += 1
    if len(keep) == n_hops:
        return audio
    if not keep:
        return audio[:0]
    return audio[: n_hops * hop].reshape(n_hops, hop)[keep].reshape(-1)


def prepare(audio: np.ndarray, kind: str) -> np.ndarray:
    """A decoded 16 kHz clip prepared for its role: `foreground`, `reference` or `background`."""
    if kind == "foreground":
        return remove_silence(audio[:CUT] if audio.size >= SAMPLES else audio)
    if kind == "reference":
        return audio[:SAMPLES]
    if kind == "background":
        return audio[:SAMPLES] if audio.size >= SAMPLES else np.pad(audio, (0, SAMPLES - audio.size))
    raise ValueError(f"unknown source kind {kind!r}")


def rms(audio: np.ndarray) -> float:
    """Root mean square, accumulated in float64."""
    return math.sqrt(float(np.einsum("i,i->", audio, audio, dtype=np.float64)) / audio.size) if audio.size else 0.0


@dataclass
class Pools:
    """What a split draws from: target clips (usable, with a same-class partner), all usable foreground clips
    of the split's FSD subset, and backgrounds. Lists are sorted by file name so plans do not depend on disk order.
    """

    targets: list[Clip]
    foregrounds: list[Clip]
    backgrounds: list[Clip]

    def __post_init__(self) -> None:
        self.by_label: dict[str, list[Clip]] = {}
        for clip in self.foregrounds:
            self.by_label.setdefault(clip.label, []).append(clip)


def split_size(pools: Pools, split: str) -> int:
    """The published number of mixtures for a split: every target clip, `PASSES[split]` times."""
    return len(pools.targets) * PASSES[split]


def _rng(seed: int, split: str, index: int, stream: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, SPLIT_IDS[split], index], spawn_key=(stream,)))


def target_of(pools: Pools, seed: int, split: str, index: int) -> Clip:
    """The target clip of mixture `index` (0-based): pass index // N uses its own permutation of the N targets."""
    n = len(pools.targets)
    return pools.targets[_pass_order(seed, split, index // n, n)[index % n]]


@functools.lru_cache(maxsize=4)
def _pass_order(seed: int, split: str, pass_index: int, n: int) -> np.ndarray:
    """The permutation of the `n` targets used by one pass (drawn once per worker, not once per mixture)."""
    return _rng(seed, split, pass_index, stream=1).permutation(n)


def _source(clip: Clip, **extra) -> dict:
    return {"fname": clip.fname, "label": clip.label, "path": str(clip.path), **extra}


def plan(pools: Pools, seed: int, split: str, index: int, load: Loader) -> dict:
    """The specification of mixture `index` (0-based; its files are named `<split>_<index + 1>`)."""
    rng = _rng(seed, split, index, stream=0)
    target = target_of(pools, seed, split, index)
    partners = [c for c in pools.by_label[target.label] if c.fname != target.fname]
    reference = partners[int(rng.integers(len(partners)))]
    candidates = []
    while len(candidates) < 3:
        clip = pools.foregrounds[int(rng.integers(len(pools.foregrounds)))]
        if clip.label != target.label:
            candidates.append(clip)
    background = pools.backgrounds[int(rng.integers(len(pools.backgrounds)))]
    n_interferers = int(rng.integers(1, 4))

    def place(clip: Clip) -> tuple[np.ndarray, int]:
        audio = load(str(clip.path), "foreground")
        return audio, int(rng.integers(0, SAMPLES - audio.size))

    t_audio, t_start = place(target)
    placed = [place(c) for c in candidates]
    snr = float(rng.uniform(-5, 10))
    bg_snr = float(rng.uniform(5, 20))
    t_rms = load.rms(str(target.path), "foreground")
    interferers = []
    for clip, (audio, start) in list(zip(candidates, placed, strict=True))[:n_interferers]:
        gain = t_rms / (load.rms(str(clip.path), "foreground") * 10 ** (snr / 20))
        interferers.append(_source(clip, cls=class_index(clip.label), **_span(start, audio.size), gain=gain))
    bg_rms = load.rms(str(background.path), "background")
    bg_gain = t_rms / (bg_rms * 10 ** (bg_snr / 20)) if bg_rms > 0 else 0.0
    return {
        "format": FORMAT,
        "recipe": "dpm-tse",
        "name": dpm_name(split, index),
        "split": split,
        "index": index,
        "seed": seed,
        "sample_rate": SAMPLE_RATE,
        "samples": SAMPLES,
        "target": _source(target, cls=class_index(target.label), **_span(t_start, t_audio.size), gain=1.0),
        "reference": _source(reference, length=int(min(load(str(reference.path), "reference").size, SAMPLES))),
        "interferers": interferers,
        "interferer_snr_db": snr,
        "background": _source(background, gain=bg_gain, snr_db=bg_snr),
    }


def _span(start: int, length: int) -> dict:
    return {
        "start": start,
        "length": length,
        "onset": start / SAMPLE_RATE,
        "offset": (start + length) / SAMPLE_RATE,
    }


def resolve(spec: dict, names: dict[str, Clip] | None) -> dict:
    """The spec with each source `path` replaced by the clip of the same file name in `names` when given."""
    if not names:
        return spec
    out = dict(spec)
    for key in ("target", "reference", "background"):
        out[key] = _resolve_one(spec[key], names)
    out["interferers"] = [_resolve_one(s, names) for s in spec["interferers"]]
    return out


def _resolve_one(source: dict, names: dict[str, Clip]) -> dict:
    clip = names.get(source["fname"])
    return {**source, "path": str(clip.path)} if clip else source


def render(spec: dict, load: Loader) -> dict[str, np.ndarray]:
    """Arrays (float32, (160000,)) of a specification: `mixture`, `target`, `reference`, `background`,
    `int1`..`int3` (the scaled interferers on the canvas)."""
    if spec.get("format") != FORMAT:
        raise ValueError(f"not a dpm-tse specification (format {spec.get('format')!r}, expected {FORMAT})")
    n = int(spec["samples"])
    out: dict[str, np.ndarray] = {}

    def canvas(source: dict, kind: str) -> np.ndarray:
        audio = load(source["path"], kind)
        if audio.size != source["length"]:
            raise ValueError(
                f"{source['path']}: prepared length {audio.size} differs from the specification's {source['length']}"
                " (the file changed since the spec was written)"
            )
        buf = np.zeros(n, dtype=np.float32)
        span = slice(source["start"], source["start"] + audio.size)
        np.multiply(audio, source["gain"], out=buf[span])
        mixture[span] += buf[span]  # outside its span a canvas is 0.0: adding it there changes no sample
        return buf

    background = load(spec["background"]["path"], "background")
    out["background"] = np.multiply(background, spec["background"]["gain"], dtype=np.float32)
    mixture = out["background"].copy()
    out["target"] = canvas(spec["target"], "foreground")
    reference = load(spec["reference"]["path"], "reference")
    out["reference"] = np.zeros(n, dtype=np.float32)
    out["reference"][: reference.size] = reference
    for k, source in enumerate(spec["interferers"], start=1):
        out[f"int{k}"] = canvas(source, "foreground")
    out["mixture"] = mixture
    return out
