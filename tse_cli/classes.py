"""The 41 FSD Kaggle 2018 sound classes, in the label-vector order every published model uses."""

from __future__ import annotations

import difflib

import numpy as np

FSD_CLASSES: tuple[str, ...] = (
    "Acoustic_guitar", "Applause", "Bark", "Bass_drum", "Burping_or_eructation", "Bus",
    "Cello", "Chime", "Clarinet", "Computer_keyboard", "Cough", "Cowbell", "Double_bass",
    "Drawer_open_or_close", "Electric_piano", "Fart", "Finger_snapping", "Fireworks",
    "Flute", "Glockenspiel", "Gong", "Gunshot_or_gunfire", "Harmonica", "Hi-hat",
    "Keys_jangling", "Knock", "Laughter", "Meow", "Microwave_oven", "Oboe",
    "Saxophone", "Scissors", "Shatter", "Snare_drum", "Squeak", "Tambourine",
    "Tearing", "Telephone", "Trumpet", "Violin_or_fiddle", "Writing",
)  # fmt: skip
NUM_CLASSES = len(FSD_CLASSES)


class UnknownClassError(ValueError):
    """A class name that matches none of the 41 labels; the message suggests the closest ones."""


def _key(name: str) -> str:
    return name.strip().lower().replace(" ", "_")


_BY_KEY = {_key(name): i for i, name in enumerate(FSD_CLASSES)}


def class_index(name: str) -> int:
    """Index of a class name, case-insensitive, with spaces or underscores (`"computer keyboard"` -> 9)."""
    try:
        return _BY_KEY[_key(name)]
    except KeyError:
        close = difflib.get_close_matches(_key(name), list(_BY_KEY), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(FSD_CLASSES[_BY_KEY[k]] for k in close)}?" if close else ""
        raise UnknownClassError(f"unknown class {name!r}{hint} (`tse classes` lists all 41)") from None


def class_indices(names: list[str] | tuple[str, ...]) -> list[int]:
    """Indices of several class names, in the given order without repeats."""
    return list(dict.fromkeys(class_index(n) for n in names))


def multi_hot(indices: list[int]) -> np.ndarray:
    """The (41,) float32 multi-hot query vector for a set of class indices (their union is extracted)."""
    vec = np.zeros(NUM_CLASSES, dtype=np.float32)
    vec[list(indices)] = 1.0
    return vec
