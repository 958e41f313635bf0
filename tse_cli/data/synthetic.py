"""A procedural stand-in for FSD Kaggle 2018 + TAU 2019, written in their downloaded layouts.

Each of the 41 classes gets a fixed timbre: one of eight sound families (harmonic tone, band-noise burst, chirp,
click train, amplitude-modulated tone, FM bell, gated noise, pitch-dropping thump) at its own frequency slot
(41 log-spaced slots from 180 Hz to 7 kHz; class c has family c mod 8 and slot c, so classes of one
family sit about an octave apart) with its own
envelope and event length. Clips vary pitch (+-6 %), length, number of onsets (1-3), loudness and leave near-silent
gaps (below the recipe's 0.0005 silence threshold) so silence removal has work to do. Backgrounds are stereo
ambiences: coloured noise, mains hum and sparse distant low-passed bursts, different per scene.

Layout written under `out` (see `tse_cli.data.sources`)::

    out/fsd/FSDKaggle2018.audio_{train,test}/<8 hex>.wav      44.1 kHz mono PCM_16
    out/fsd/FSDKaggle2018.meta/{train_post_competition,test_post_competition_scoring_clips}.csv
    out/tau/TAU-urban-acoustic-scenes-2019-development/{audio/*.wav, meta.csv, evaluation_setup/fold1_*.csv}
    out/tau/TAU-urban-acoustic-scenes-2019-evaluation/{audio/<n>.wav, evaluation_setup/fold1_test.csv}
    out/synthetic.json                                          the seed and sizes (written first)

A folder is written with one set of settings: rerunning with the same seed and sizes rewrites the same bytes
(finishing an interrupted run); other settings, or `fsd`/`tau` folders that no synthetic.json describes, are
refused (`CorpusError`), as `tse mix` refuses to mix another recipe into a set.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tse_cli.atomic import write_text
from tse_cli.classes import FSD_CLASSES
from tse_cli.data.sources import FSD_AUDIO, FSD_CSV, FSD_META, TAU_DIRS
from tse_cli.data.wavio import write_wav

RECORD = "synthetic.json"
FSD_RATE = 44100
TAU_RATE = 48000
SCENES = (
    "airport", "bus", "metro", "metro_station", "park",
    "public_square", "shopping_mall", "street_pedestrian", "street_traffic", "tram",
)  # fmt: skip
CITIES = ("barcelona", "helsinki", "lisbon", "london", "lyon", "milan", "paris", "prague", "stockholm", "vienna")
FAMILIES = ("harmonic", "noise_burst", "chirp", "clicks", "am_tone", "fm_bell", "gated_noise", "thump")


@dataclass(frozen=True)
class SyntheticSize:
    """How big a corpus to write: clips per class (FSD train / scored test), backgrounds (TAU dev / eval)."""

    train_per_class: int = 6
    test_per_class: int = 2
    dev_backgrounds: int = 12
    eval_backgrounds: int = 4
    background_seconds: float = 10.0
    max_clip_seconds: float = 3.0


@dataclass(frozen=True)
class Timbre:
    """The fixed sound of one class."""

    family: str
    freq: float  # Hz, the class's frequency slot
    event_seconds: tuple[float, float]  # range of one event's length
    shape: float  # family-specific: harmonic tilt, bandwidth, sweep ratio, click rate, modulation rate...


def class_timbre(index: int) -> Timbre:
    """The timbre of class `index` (0..40), fixed for all clips of that class."""
    slots = np.geomspace(180.0, 7000.0, len(FSD_CLASSES))
    rng = np.random.default_rng(1000 + index)
    family = FAMILIES[index % len(FAMILIES)]
    short = family in ("noise_burst", "thump", "clicks")
    lo = rng.uniform(0.08, 0.2) if short else rng.uniform(0.25, 0.5)
    return Timbre(family, float(slots[index]), (lo, lo * rng.uniform(1.5, 3.0)), float(rng.uniform(0.0, 1.0)))


def _envelope(n: int, sr: int, attack: float, decay: float) -> np.ndarray:
    t = np.arange(n) / sr
    return np.minimum(t / max(attack, 1e-4), 1.0) * np.exp(-t / decay)


def _band_noise(rng: np.random.Generator, n: int, sr: int, center: float, width: float) -> np.ndarray:
    """White noise band-passed around `center` Hz (Gaussian in log frequency, `width` octaves)."""
    spec = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1 / sr)
    octaves = np.log2(np.maximum(freqs, 1.0) / center)
    out = np.fft.irfft(spec * np.exp(-0.5 * (octaves / width) ** 2), n)
    return out / (np.abs(out).max() + 1e-9)


def _event(timbre: Timbre, rng: np.random.Generator, sr: int, seconds: float) -> np.ndarray:
    """One event of the class, peak ~1, (round(seconds * sr),) float64."""
    n = max(int(seconds * sr), 64)
    t = np.arange(n) / sr
    f = timbre.freq * rng.uniform(0.94, 1.06)
    s = timbre.shape
    fam = timbre.family
    if fam == "harmonic":
        tilt = 0.6 + 1.8 * s
        x = sum(k**-tilt * np.sin(2 * np.pi * k * f * t + rng.uniform(0, 6.28)) for k in range(1, 8) if k * f < sr / 2)
        x = x * _envelope(n, sr, 0.01, seconds * 0.6)
    elif fam == "noise_burst":
        x = _band_noise(rng, n, sr, f, 0.3 + 0.8 * s) * _envelope(n, sr, 0.002, seconds * 0.25)
    elif fam == "chirp":
        ratio = 1.5 + 2.5 * s if rng.random() < 0.5 + 0.4 * (s - 0.5) else 1 / (1.5 + 2.5 * s)
        inst = f * ratio ** (t / seconds)
        x = np.sin(2 * np.pi * np.cumsum(inst) / sr) * np.sin(np.pi * t / seconds) ** 2
    elif fam == "clicks":
        rate = 6 + 20 * s
        x = np.zeros(n)
        click = _band_noise(rng, int(0.006 * sr), sr, f, 0.5) * _envelope(int(0.006 * sr), sr, 1e-4, 0.0015)
        for start in np.arange(0.0, seconds, 1 / rate) + rng.uniform(0, 0.3 / rate, int(np.ceil(seconds * rate))):
            i = int(start * sr)
            seg = x[i : i + click.size]
            seg += click[: seg.size]
    elif fam == "am_tone":
        rate = 4 + 18 * s
        x = np.sin(2 * np.pi * f * t) * (0.5 + 0.5 * np.sign(np.sin(2 * np.pi * rate * t))) * _envelope(n, sr, 0.005, 5)
    elif fam == "fm_bell":
        ratio = 1.4 + 2.1 * s
        x = np.sin(2 * np.pi * f * t + 2.5 * np.exp(-t / 0.3) * np.sin(2 * np.pi * f * ratio * t))
        x = x * _envelope(n, sr, 0.002, seconds * 0.4)
    elif fam == "gated_noise":
        rate = 8 + 25 * s
        gate = (np.sin(2 * np.pi * rate * t + rng.uniform(0, 6.28)) > 0.2 - 0.5 * s).astype(float)
        x = _band_noise(rng, n, sr, f, 0.8) * gate * _envelope(n, sr, 0.01, seconds)
    else:  # thump: pitch drop and a click
        inst = f * 0.25 * (1 + 3 * np.exp(-t / (0.01 + 0.03 * s)))
        x = np.sin(2 * np.pi * np.cumsum(inst) / sr) * _envelope(n, sr, 0.001, seconds * 0.3)
        x[: int(0.004 * sr)] += _band_noise(rng, int(0.004 * sr), sr, 4 * f, 1.0)
    x = np.asarray(x, dtype=np.float64)
    return x / (np.abs(x).max() + 1e-9)


def synth_clip(index: int, rng: np.random.Generator, sr: int = FSD_RATE, max_seconds: float = 3.0) -> np.ndarray:
    """A clip of class `index`: 1-3 events with near-silent gaps, mono float64 (T,) at `sr`, peak 0.1..0.5."""
    timbre = class_timbre(index)
    lo, hi = timbre.event_seconds
    parts = [np.zeros(int(rng.uniform(0.0, 0.3) * sr))]
    for _ in range(int(rng.integers(1, 4))):
        parts.append(_event(timbre, rng, sr, rng.uniform(lo, hi)) * rng.uniform(0.5, 1.0))
        parts.append(np.zeros(int(rng.uniform(0.05, 0.4) * sr)))
    clip = np.concatenate(parts)[: int(max_seconds * sr)]
    clip += rng.standard_normal(clip.size) * 2e-5  # a noise floor below the silence threshold
    return clip * (rng.uniform(0.1, 0.5) / (np.abs(clip).max() + 1e-9))


def synth_background(scene: int, rng: np.random.Generator, sr: int = TAU_RATE, seconds: float = 10.0) -> np.ndarray:
    """A stereo ambience (T, 2) float64 for scene index `scene`: coloured noise, hum, distant bursts."""
    n = int(seconds * sr)
    freqs = np.maximum(np.fft.rfftfreq(n, 1 / sr), 20.0)
    tilt = 0.5 + 0.1 * scene  # 1/f^tilt: pinkish to brownish per scene
    common = np.fft.irfft(np.fft.rfft(rng.standard_normal(n)) * freqs**-tilt, n)
    chans = []
    for _ in range(2):
        own = np.fft.irfft(np.fft.rfft(rng.standard_normal(n)) * freqs**-tilt, n)
        chans.append(0.7 * common + 0.3 * own)
    x = np.stack(chans, axis=1)
    x /= np.abs(x).max() + 1e-9
    t = np.arange(n) / sr
    x += (0.05 + 0.01 * scene) * np.sin(2 * np.pi * (50 + 10 * (scene % 2)) * t)[:, None]
    for _ in range(int(rng.integers(3, 9))):
        length = min(int(rng.uniform(0.2, 1.2) * sr), n // 2)
        start = int(rng.integers(0, n - length))
        burst = _band_noise(rng, length, sr, rng.uniform(150, 800), 0.6) * np.hanning(length)
        x[start : start + length] += rng.uniform(0.1, 0.4) * burst[:, None]
    return x * (0.25 / (np.abs(x).max() + 1e-9))


def _fname(*parts: object) -> str:
    return hashlib.sha1("/".join(map(str, parts)).encode()).hexdigest()[:8] + ".wav"


def _csv(header: list[str], rows: list[list[str]], delimiter: str = ",") -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, delimiter=delimiter, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue()


class CorpusError(ValueError):
    """A folder that already holds a corpus of other settings (or other FSD/TAU trees); names the folder."""


def _settings(size: SyntheticSize, seed: int) -> dict:
    return {"seed": seed, **dataclasses.asdict(size)}


def check_folder(out: str | Path, size: SyntheticSize, seed: int) -> None:
    """Raise `CorpusError` unless `out` is new, empty of corpus trees, or a corpus of the same settings."""
    out = Path(out)
    record = out / RECORD
    if record.is_file():
        try:
            found = json.loads(record.read_text())
        except (OSError, ValueError) as err:
            raise CorpusError(f"{record}: unreadable ({err}); use another folder") from None
        wanted = _settings(size, seed)
        if found != wanted:
            diff = ", ".join(f"{k} {found.get(k)!r} (now {v!r})" for k, v in wanted.items() if found.get(k) != v)
            raise CorpusError(
                f"{out}: holds a synthetic corpus made with other settings: {diff}; rerun with the same settings "
                "or use another folder"
            )
        return
    taken = [out / name for name in ("fsd", "tau") if (out / name).exists()]
    if taken:
        raise CorpusError(f"{taken[0]}: exists and is not a synthetic corpus written by tse (use another folder)")


def write_corpus(out: str | Path, size: SyntheticSize = SyntheticSize(), seed: int = 0, progress=None) -> dict:
    """Write the synthetic FSD + TAU trees under `out` (`out/fsd`, `out/tau`); returns counts per part.

    Deterministic for a given (`size`, `seed`). `progress(n)` is called after each file written. Raises
    `CorpusError` (before writing anything) when `out` holds a corpus of other settings (`check_folder`).
    """
    out = Path(out)
    check_folder(out, size, seed)
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / RECORD, json.dumps(_settings(size, seed), indent=1) + "\n")
    fsd, tau = out / "fsd", out / "tau"
    (fsd / FSD_META).mkdir(parents=True, exist_ok=True)
    counts = {}
    for subset, per_class in (("train", size.train_per_class), ("test", size.test_per_class)):
        audio = fsd / FSD_AUDIO[subset]
        audio.mkdir(parents=True, exist_ok=True)
        rows = []
        for ci, label in enumerate(FSD_CLASSES):
            for k in range(per_class):
                rng = np.random.default_rng([seed, 0 if subset == "train" else 1, ci, k])
                fname = _fname(seed, subset, ci, k)
                write_wav(audio / fname, synth_clip(ci, rng, FSD_RATE, size.max_clip_seconds), FSD_RATE)
                extra = ["1", str(100000 + ci * 100 + k), "CC0"] if subset == "train" else ["Public", "0", "CC0"]
                rows.append([fname, label, *extra])
                if progress:
                    progress(1)
        header = ["fname", "label", "manually_verified" if subset == "train" else "usage", "freesound_id", "license"]
        write_text(fsd / FSD_META / FSD_CSV[subset], _csv(header, rows))
        counts[f"fsd_{subset}"] = len(rows)
    for subset, count in (("development", size.dev_backgrounds), ("evaluation", size.eval_backgrounds)):
        folder = tau / TAU_DIRS[subset]
        (folder / "audio").mkdir(parents=True, exist_ok=True)
        (folder / "evaluation_setup").mkdir(exist_ok=True)
        rows = []
        for k in range(count):
            scene = k % len(SCENES)
            rng = np.random.default_rng([seed, 2 if subset == "development" else 3, k])
            if subset == "development":
                city = CITIES[(k // len(SCENES)) % len(CITIES)]
                name = f"audio/{SCENES[scene]}-{city}-{k}-{k * 10}-a.wav"
            else:
                name = f"audio/{k}.wav"
            audio = synth_background(scene, rng, TAU_RATE, size.background_seconds)
            write_wav(folder / name, audio, TAU_RATE, subtype="PCM_24")
            rows.append([name, SCENES[scene], f"{name.split('/')[1].rsplit('-', 3)[0]}", "a"])
            if progress:
                progress(1)
        if subset == "development":
            write_text(folder / "meta.csv", _csv(["filename", "scene_label", "identifier", "source_label"], rows, "\t"))
            half = max(1, len(rows) * 3 // 4)
            write_text(
                folder / "evaluation_setup" / "fold1_train.csv",
                _csv(["filename", "scene_label"], [r[:2] for r in rows[:half]], "\t"),
            )
            write_text(
                folder / "evaluation_setup" / "fold1_evaluate.csv",
                _csv(["filename", "scene_label"], [r[:2] for r in rows[half:]], "\t"),
            )
        else:
            write_text(folder / "evaluation_setup" / "fold1_test.csv", _csv(["filename"], [r[:1] for r in rows], "\t"))
        counts[f"tau_{subset}"] = len(rows)
    return counts


def corpus_files(size: SyntheticSize) -> int:
    """How many audio files `write_corpus` writes (for progress bars)."""
    n_fsd = len(FSD_CLASSES) * (size.train_per_class + size.test_per_class)
    return n_fsd + size.dev_backgrounds + size.eval_backgrounds
