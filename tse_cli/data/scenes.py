"""The Waveformer recipe: 6 s, 44.1 kHz scenes of FSD foreground events over a TAU background, as Scaper specs.

A scene is planned as a Scaper-compatible JAMS document (namespace `scaper`: one background observation and the
foreground events, each with label, source_file, source_time, event_time, event_duration, snr, role) and
rendered the way Scaper renders one: every source is read from `source_time` for `event_duration`, converted to
mono at the scene rate, scaled so its integrated loudness is `ref_db + snr` LUFS (the background has snr 0 and
is repeated when short), faded in and out (`fade_in_len` / `fade_out_len`), placed at `event_time` and summed.
With peak normalisation on (Scaper's `fix_clipping`; our `--normalize`), a scene that would clip is scaled
with all its events by one gain, which is recorded.

Our planning defaults (the authors' own generator is not published; their specs render with `tse mix render
--jams`): 3-5 events of distinct labels, SNR ~ U(15, 25) dB, ref_db -50 LUFS, 10 ms fades, whole clips up to
6 s (longer clips: a random 6 s excerpt), uniform event times. Validation scenes draw from a fixed 10 % of FSD
train clips (by file-name hash), test scenes from the scored FSD test clips over TAU evaluation backgrounds.
Pitch shifting and time stretching are not supported (the published FSDSoundScapes specs do not use them).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tse_cli.classes import class_index
from tse_cli.data.loudness import scaper_lufs
from tse_cli.data.sources import Clip
from tse_cli.data.wavio import SourceError

SAMPLE_RATE = 44100
DURATION = 6.0
REF_DB = -50.0
FADE = 0.01
EVENTS = (3, 5)
SNR_DB = (15.0, 25.0)
SPLIT_IDS = {"train": 0, "val": 1, "test": 2}
DEFAULT_SIZES = {"train": 50000, "val": 5000, "test": 10000}
SCAPER_VERSION = "1.6.4"

Loader = Callable[[str], np.ndarray]  # path -> whole clip, mono float32 at the scene rate


def is_val_clip(fname: str) -> bool:
    """The fixed 10 % of FSD train clips that validation scenes draw from."""
    return int(hashlib.sha1(fname.encode()).hexdigest(), 16) % 10 == 0


@dataclass
class Pools:
    """Foreground clips by label and backgrounds for one split, with durations in seconds."""

    foregrounds: list[Clip]
    backgrounds: list[Clip]
    durations: dict[str, float]  # path -> seconds

    def __post_init__(self) -> None:
        self.by_label: dict[str, list[Clip]] = {}
        for clip in sorted(self.foregrounds, key=lambda c: c.fname):
            self.by_label.setdefault(clip.label, []).append(clip)
        self.labels = sorted(self.by_label)


@dataclass
class Event:
    """One observation of a Scaper annotation (times in seconds, snr in dB)."""

    label: str
    source_file: str
    source_time: float
    event_time: float
    event_duration: float
    snr: float
    role: str  # "background" or "foreground"

    def value(self) -> dict:
        return {
            "label": self.label,
            "source_file": self.source_file,
            "source_time": self.source_time,
            "event_time": self.event_time,
            "event_duration": self.event_duration,
            "snr": self.snr,
            "role": self.role,
            "pitch_shift": None,
            "time_stretch": None,
        }


@dataclass
class Scene:
    """A scene specification: sandbox settings, background + foreground events, and our provenance."""

    events: list[Event]
    duration: float = DURATION
    sample_rate: int = SAMPLE_RATE
    ref_db: float = REF_DB
    fade_in: float = FADE
    fade_out: float = FADE
    fix_clipping: bool = True
    provenance: dict | None = None  # {"recipe", "split", "index", "seed"} for scenes we planned

    @property
    def foreground(self) -> list[Event]:
        return [e for e in self.events if e.role == "foreground"]

    @property
    def labels(self) -> list[str]:
        """Foreground labels in event order, without repeats."""
        return list(dict.fromkeys(e.label for e in self.foreground))


def plan(pools: Pools, seed: int, split: str, index: int) -> Scene:
    """The scene `index` of a split, drawn from an RNG seeded by (seed, split, index)."""
    rng = np.random.default_rng([seed, SPLIT_IDS[split], index])
    bg = pools.backgrounds[int(rng.integers(len(pools.backgrounds)))]
    bg_dur = pools.durations[str(bg.path)]
    events = [Event("audio", str(bg.path), _uniform(rng, bg_dur - DURATION), 0.0, DURATION, 0.0, "background")]
    n_events = min(int(rng.integers(EVENTS[0], EVENTS[1] + 1)), len(pools.labels))
    for li in rng.choice(len(pools.labels), size=n_events, replace=False):
        clips = pools.by_label[pools.labels[li]]
        clip = clips[int(rng.integers(len(clips)))]
        dur = pools.durations[str(clip.path)]
        length = round(min(dur, DURATION), 6)
        source_time = _uniform(rng, dur - length)
        event_time = _uniform(rng, DURATION - length)
        snr = round(float(rng.uniform(*SNR_DB)), 6)
        events.append(Event(clip.label, str(clip.path), source_time, event_time, length, snr, "foreground"))
    return Scene(events, provenance={"recipe": "waveformer", "split": split, "index": index, "seed": seed})


def _uniform(rng: np.random.Generator, high: float) -> float:
    return round(float(rng.uniform(0.0, high)), 6) if high > 0 else 0.0


# ---- JAMS ---------------------------------------------------------------------------------------------------------


def to_jams(scene: Scene) -> dict:
    """A JAMS document (JSON-ready) in Scaper's format for `scene`."""
    fg = scene.foreground
    sandbox = {
        "duration": scene.duration,
        "original_duration": scene.duration,
        "fg_path": str(Path(fg[0].source_file).parent) if fg else "",
        "bg_path": str(Path(scene.events[0].source_file).parent),
        "fg_spec": [],
        "bg_spec": [],
        "fg_labels": sorted({e.label for e in fg}),
        "bg_labels": ["audio"],
        "protected_labels": [],
        "sr": scene.sample_rate,
        "ref_db": scene.ref_db,
        "n_channels": 1,
        "fade_in_len": scene.fade_in,
        "fade_out_len": scene.fade_out,
        "n_events": len(fg),
        "polyphony_max": _polyphony(fg),
        "reverb": None,
        "scaper_version": SCAPER_VERSION,
        "fix_clipping": scene.fix_clipping,
        "peak_normalization": False,
        "quick_pitch_time": False,
        "save_isolated_events": True,
        "ref_db_change": 0,
        "ref_db_generated": scene.ref_db,
    }
    data = [
        {"time": e.event_time, "duration": e.event_duration, "value": e.value(), "confidence": 1.0}
        for e in scene.events
    ]
    annotation = {
        "annotation_metadata": {
            "curator": {"name": "", "email": ""},
            "annotator": {},
            "version": "",
            "corpus": "",
            "annotation_tools": "tse mix",
            "annotation_rules": "",
            "validation": "",
            "data_source": "",
        },
        "namespace": "scaper",
        "data": data,
        "sandbox": {"scaper": sandbox},
        "time": 0,
        "duration": scene.duration,
    }
    return {
        "annotations": [annotation],
        "file_metadata": {
            "title": "",
            "artist": "",
            "release": "",
            "duration": scene.duration,
            "identifiers": {},
            "jams_version": "0.3.4",
        },
        "sandbox": {"tse": scene.provenance} if scene.provenance else {},
    }


def _polyphony(events: list[Event]) -> int:
    edges = sorted([(e.event_time, 1) for e in events] + [(e.event_time + e.event_duration, -1) for e in events])
    level = peak = 0
    for _, step in edges:
        level += step
        peak = max(peak, level)
    return peak


def read_jams(path: str | Path) -> Scene:
    """The scene in a Scaper `.jams` file (ours or the authors'); ValueError naming the file when malformed."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
        ann = next(a for a in doc["annotations"] if a.get("namespace") == "scaper")
        box = ann["sandbox"]["scaper"]
        data = ann["data"]
        if isinstance(data, dict):  # JAMS' column-wise form
            data = [dict(zip(data, row, strict=True)) for row in zip(*data.values(), strict=True)]
        events = []
        for obs in data:
            v = obs["value"]
            if v.get("pitch_shift") not in (None, 0, 0.0) or v.get("time_stretch") not in (None, 1, 1.0):
                raise ValueError("pitch shifting / time stretching is not supported")
            events.append(
                Event(
                    v["label"],
                    v["source_file"],
                    float(v["source_time"]),
                    float(v["event_time"]),
                    float(v["event_duration"]),
                    float(v["snr"]),
                    v["role"],
                )
            )
        if not any(e.role == "background" for e in events):
            raise ValueError("no background event")
        for e in events:
            if e.role == "foreground":
                class_index(e.label)
        return Scene(
            events,
            duration=float(box["duration"]),
            sample_rate=int(box["sr"]),
            ref_db=float(box["ref_db"]),
            fade_in=float(box.get("fade_in_len", FADE)),
            fade_out=float(box.get("fade_out_len", FADE)),
            fix_clipping=bool(box.get("fix_clipping", True)),
            provenance=doc.get("sandbox", {}).get("tse"),
        )
    except (OSError, ValueError, KeyError, TypeError, StopIteration) as err:
        raise ValueError(
            f"{path}: not a readable Scaper .jams specification ({str(err) or 'no scaper annotation'})"
        ) from None


def gt_events_csv(scene: Scene) -> str:
    """The per-scene label list (tab-separated, header `label`, as the authors' FSDSoundScapes loader reads it)."""
    lines = ["label\tsource_file\tonset\toffset\tsnr"]
    for e in scene.foreground:
        end = e.event_time + e.event_duration
        lines.append(f"{e.label}\t{Path(e.source_file).name}\t{e.event_time:.6f}\t{end:.6f}\t{e.snr:.6f}")
    return "\n".join(lines) + "\n"


# ---- rendering ----------------------------------------------------------------------------------------------------


def resolve(scene: Scene, names: dict[str, Clip] | None) -> Scene:
    """The scene with each source_file replaced by the user's copy of the same file name, when `names` has it."""
    if not names:
        return scene
    events = []
    for e in scene.events:
        clip = names.get(Path(e.source_file).name)
        events.append(Event(**{**e.__dict__, "source_file": str(clip.path)}) if clip else e)
    return Scene(**{**scene.__dict__, "events": events})


def _segment(audio: np.ndarray, start: int, length: int, tile: bool) -> np.ndarray:
    seg = audio[start : start + length]
    if seg.size < length:
        if tile and audio.size:
            seg = np.tile(audio, length // audio.size + 2)[start % audio.size :][:length]
        else:
            seg = np.pad(seg, (0, length - seg.size))
    return seg.astype(np.float64)


def _fade(seg: np.ndarray, fade_in: int, fade_out: int) -> np.ndarray:
    if fade_in > 0:
        n = min(fade_in, seg.size)
        seg[:n] *= np.linspace(0.0, 1.0, n)
    if fade_out > 0:
        n = min(fade_out, seg.size)
        seg[seg.size - n :] *= np.linspace(1.0, 0.0, n)
    return seg


def render(scene: Scene, load: Loader) -> tuple[dict[str, np.ndarray], list[dict]]:
    """Arrays (float64, (T,) at the scene rate): `mixture`, `background` and one per foreground label; and
    the per-event record (label, onset, offset, snr, lufs, gain). No normalisation here (see `build`)."""
    sr = scene.sample_rate
    n = round(scene.duration * sr)
    out: dict[str, np.ndarray] = {"background": np.zeros(n)}
    record = []
    for e in scene.events:
        if not Path(e.source_file).is_file():
            raise SourceError(f"{e.source_file}: source file not found")
        audio = load(e.source_file)
        length = min(round(e.event_duration * sr), n)
        seg = _segment(audio, round(e.source_time * sr), length, tile=e.role == "background")
        lufs = scaper_lufs(seg, sr)  # at least -70: a silent source stays silent, a quiet one is raised (as Scaper)
        gain = 10 ** ((scene.ref_db + e.snr - lufs) / 20)
        seg = _fade(seg * gain, round(scene.fade_in * sr), round(scene.fade_out * sr))
        start = min(round(e.event_time * sr), n - seg.size)
        key = "background" if e.role == "background" else e.label
        buf = out.setdefault(key, np.zeros(n))
        buf[start : start + seg.size] += seg
        if e.role == "foreground":
            onset = start / sr
            record.append(
                {"label": e.label, "source_file": Path(e.source_file).name, "onset": onset,
                 "offset": onset + seg.size / sr, "snr": e.snr, "lufs": lufs, "gain": gain}
            )  # fmt: skip
    out["mixture"] = sum(out.values())
    return out, record
