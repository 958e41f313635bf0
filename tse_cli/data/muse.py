"""MuSE-style audio-visual speaker-extraction sets (VoxCeleb2 two-speaker mixtures, as MuSE and AV-SepFormer use).

A data folder `root` holds, for each split (`train`, `val`, `test`), either

- a list file `root/<split>.scp`, one mixture per line: `UID FOLDER` (the published lists) or just `FOLDER`,
  FOLDER relative to `root` or absolute (an absolute FOLDER that does not exist is looked for as
  `root/<split>/<its name>`, so the published lists work on data moved there); or
- a folder `root/<split>/` whose sub-folders (at any depth) holding a `mixture.wav` are the mixtures.

Every mixture folder holds `mixture.wav`, `s0.wav`, `s1.wav` (16 kHz mono, equal lengths) and
`v0_embedding.npy`, `v1_embedding.npy` (lip embeddings of speakers 0 and 1, (frames, 512) at 25 fps). Each
mixture gives two examples: target `s0.wav` with clue `v0_embedding.npy`, and `s1.wav` with `v1_embedding.npy`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch
from torch.utils.data import Dataset

from tse_cli.errors import first_line
from tse_cli.visual import CLUE_RATE, VisualClueError, align_frames, check_visual_clue, clue_frames, load_visual_clue

SAMPLE_RATE = 16000
SPEAKERS = 2
FRAME_SAMPLES = round(SAMPLE_RATE / CLUE_RATE)  # audio samples per video frame (640)


def audio_file(speaker: int | None) -> str:
    """`mixture.wav` (speaker None) or the speaker's clean `s<n>.wav`."""
    return "mixture.wav" if speaker is None else f"s{speaker}.wav"


def clue_file(speaker: int) -> str:
    """The speaker's lip-embedding file name."""
    return f"v{speaker}_embedding.npy"


class MuseError(ValueError):
    """An unusable MuSE-style set: the message is one line naming the file or folder and the problem."""


@dataclass(frozen=True)
class Mixture:
    """One mixture folder and its length in samples (0 until validated)."""

    uid: str
    folder: Path
    samples: int = 0


def list_split(root: str | Path, split: str) -> list[Mixture]:
    """The mixtures of `split` under `root`, from `<split>.scp` or the `<split>/` folder (see the module doc)."""
    root = Path(root)
    listing, folder = root / f"{split}.scp", root / split
    if listing.is_file():
        mixtures = []
        for number, line in enumerate(listing.read_text().splitlines(), 1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) > 2:
                raise MuseError(f"{listing}:{number}: expected 'UID FOLDER' or 'FOLDER', got {line.strip()!r}")
            path = Path(fields[-1])
            if not path.is_absolute():
                path = root / path
            elif not path.is_dir() and (folder / path.name).is_dir():
                path = folder / path.name  # a published list whose data now lives under <root>/<split>/
            mixtures.append(Mixture(fields[0], path))
    elif folder.is_dir():
        mixtures = [
            Mixture(str(m.parent.relative_to(folder)), m.parent) for m in sorted(folder.rglob(audio_file(None)))
        ]
    else:
        raise MuseError(f"{root}: no {split}.scp list and no {split}/ folder")
    if not mixtures:
        raise MuseError(f"{listing if listing.is_file() else folder}: no mixtures")
    return mixtures


def _audio_frames(path: Path) -> int:
    """Samples of a 16 kHz mono audio file, from its header."""
    if not path.is_file():
        raise MuseError(f"{path}: missing")
    try:
        info = sf.info(str(path))
    except (RuntimeError, sf.LibsndfileError) as err:
        raise MuseError(f"{path}: not readable audio ({first_line(err)})") from None
    if info.samplerate != SAMPLE_RATE:
        raise MuseError(f"{path}: sample rate {info.samplerate} Hz, expected {SAMPLE_RATE}")
    if info.channels != 1:
        raise MuseError(f"{path}: {info.channels} channels, expected mono")
    if info.frames == 0:
        raise MuseError(f"{path}: no samples")
    return info.frames


def validate_mixture(mixture: Mixture) -> Mixture:
    """Check one mixture folder from file headers; return it with its length. Raises `MuseError`."""
    if not mixture.folder.is_dir():
        raise MuseError(f"{mixture.folder}: mixture folder not found")
    samples = _audio_frames(mixture.folder / audio_file(None))
    for speaker in range(SPEAKERS):
        path = mixture.folder / audio_file(speaker)
        if (n := _audio_frames(path)) != samples:
            raise MuseError(f"{path}: {n} samples, but {audio_file(None)} has {samples}")
        try:
            check_visual_clue(mixture.folder / clue_file(speaker), samples, SAMPLE_RATE)
        except VisualClueError as err:
            raise MuseError(str(err)) from None
    return Mixture(mixture.uid, mixture.folder, samples)


def validate_split(root: str | Path, split: str) -> list[Mixture]:
    """Every mixture of a split, validated (`validate_mixture`); the first problem raises `MuseError`."""
    return [validate_mixture(m) for m in list_split(root, split)]


def _read(path: Path) -> np.ndarray:
    try:
        audio, _ = sf.read(str(path), dtype="float32", always_2d=True)
    except (RuntimeError, sf.LibsndfileError) as err:
        raise MuseError(f"{path}: not readable audio ({first_line(err)})") from None
    return audio[:, 0]


class MuseSet(Dataset):
    """Examples of a MuSE-style split: dicts with `mixture`, `target` (1, samples) float32 at 16 kHz,
    `clue` (frames, 512) float32 aligned to the audio, `label` ("speech") and `sample_rate`.

    Example 2i targets speaker 0 of mixture i, example 2i+1 speaker 1. With `crop_seconds` > 0, mixtures longer
    than that are cropped at a random video-frame boundary drawn from `rng(index)` (a callable returning a numpy
    Generator, so the training loop controls reproducibility), and the clue rows follow the crop. With
    `normalize`, mixture and target are divided by the mixture's peak (the published input scaling).
    """

    def __init__(
        self,
        root: str | Path,
        split: str,
        crop_seconds: float = 0.0,
        normalize: bool = True,
        rng: Any = None,
        validate: bool = True,
    ) -> None:
        self.mixtures = validate_split(root, split) if validate else list_split(root, split)
        self.crop = round(crop_seconds * SAMPLE_RATE)
        self.normalize = normalize
        self.rng = rng

    def __len__(self) -> int:
        return SPEAKERS * len(self.mixtures)

    def __getitem__(self, index: int) -> dict[str, Any]:
        mixture_info, speaker = self.mixtures[index // SPEAKERS], index % SPEAKERS
        folder = mixture_info.folder
        mixture, target = _read(folder / audio_file(None)), _read(folder / audio_file(speaker))
        if len(target) != len(mixture):
            raise MuseError(f"{folder / audio_file(speaker)}: {len(target)} samples, mixture has {len(mixture)}")
        try:
            clue = load_visual_clue(folder / clue_file(speaker), len(mixture), SAMPLE_RATE)
        except VisualClueError as err:
            raise MuseError(str(err)) from None
        if self.crop and len(mixture) > self.crop:
            start = int(self.rng(index).integers((len(mixture) - self.crop) // FRAME_SAMPLES + 1)) * FRAME_SAMPLES
            mixture, target = mixture[start : start + self.crop], target[start : start + self.crop]
            first = start // FRAME_SAMPLES
            clue = align_frames(clue[first:], clue_frames(self.crop, SAMPLE_RATE))
        if self.normalize and (peak := float(np.abs(mixture).max())) > 0:
            mixture, target = mixture / peak, target / peak
        return {
            "mixture": torch.from_numpy(np.ascontiguousarray(mixture))[None],
            "target": torch.from_numpy(np.ascontiguousarray(target))[None],
            "clue": torch.from_numpy(clue),
            "label": "speech",
            "sample_rate": torch.tensor(SAMPLE_RATE),
        }
