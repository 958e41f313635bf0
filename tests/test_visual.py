"""Lip-embedding clues: loading, alignment to the audio (25 fps, replicate padding) and every refusal."""

from __future__ import annotations

import numpy as np
import pytest

from tse_cli.visual import (
    VALUE_CHUNK,
    VisualClueError,
    align_frames,
    check_visual_clue,
    clue_frames,
    frames_before,
    frames_covering,
    load_visual_clue,
    read_visual_clue,
)

RATE = 16000


def save(tmp_path, array, name="lips.npy"):
    path = tmp_path / name
    np.save(path, array)
    return path


def frames(n: int) -> np.ndarray:
    return np.arange(n, dtype=np.float64)[:, None] * np.ones((1, 512))


def test_frames_per_audio_length():
    assert clue_frames(64000, RATE) == 100  # 4 s
    assert clue_frames(64639, RATE) == 100 and clue_frames(64640, RATE) == 101
    assert clue_frames(44100 * 2, 44100) == 50
    assert clue_frames(10, RATE) == 1


def test_load_aligns_to_the_audio(tmp_path):
    path = save(tmp_path, frames(100))
    clue = load_visual_clue(path, 64000, RATE)
    assert clue.dtype == np.float32 and clue.shape == (100, 512)
    assert np.array_equal(clue, frames(100).astype(np.float32))
    # 2 frames short: replicate the last one; 2 too many: cut
    short = load_visual_clue(save(tmp_path, frames(98)), 64000, RATE)
    assert short.shape == (100, 512) and (short[97:, 0] == 97).all()
    long = load_visual_clue(save(tmp_path, frames(102)), 64000, RATE)
    assert long.shape == (100, 512) and long[-1, 0] == 99
    # other audio rates: the duration is what counts
    assert load_visual_clue(path, 44100 * 4, 44100).shape == (100, 512)
    # without audio: validated but not aligned
    assert load_visual_clue(save(tmp_path, frames(7)), None, None).shape == (7, 512)


def test_align_frames():
    clue = frames(3)
    assert np.array_equal(align_frames(clue, 5)[:, 0], [0, 1, 2, 2, 2])
    assert np.array_equal(align_frames(clue, 2)[:, 0], [0, 1])


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.zeros((100, 256)), r"expected lip embeddings of shape \(frames, 512\), got \(100, 256\)"),
        (np.zeros((512, 100)), r"transposed\? expected frames first"),
        (np.zeros((100, 1, 512)), r"got \(100, 1, 512\)"),
        (np.zeros(512), r"got \(512,\)"),
        (np.zeros((0, 512)), "no frames"),
        (np.full((100, 512), "a"), "must be numbers, got dtype <U1"),
        (np.zeros((100, 512), dtype=complex), "must be numbers"),
    ],
)
def test_bad_shapes_and_types(tmp_path, array, message):
    path = save(tmp_path, array)
    with pytest.raises(VisualClueError, match=message) as err:
        load_visual_clue(path, 64000, RATE)
    assert str(path) in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(VisualClueError, match=message):
        check_visual_clue(path, 64000, RATE)


def test_non_finite_values(tmp_path):
    array = frames(100)
    array[5, 7] = np.nan
    with pytest.raises(VisualClueError, match="lips.npy: contains NaN or infinite values"):
        load_visual_clue(save(tmp_path, array), 64000, RATE)
    array[5, 7] = np.inf
    with pytest.raises(VisualClueError, match="NaN or infinite"):
        load_visual_clue(save(tmp_path, array))


@pytest.mark.parametrize("count", [120, 200, 96, 50])  # 30 fps, 50 fps, 24 fps, a clue for another clip
def test_frame_rate_mismatch(tmp_path, count):
    path = save(tmp_path, frames(count))
    with pytest.raises(VisualClueError, match=rf"{count} frames for 4.00 s of audio .* expected 100 frames at 25 fps"):
        load_visual_clue(path, 64000, RATE)
    with pytest.raises(VisualClueError, match="wrong frame rate"):
        check_visual_clue(path, 64000, RATE)


def test_tolerance_grows_with_length(tmp_path):
    # 60 s: 1500 frames expected, 1% = 15 frames of slack; 3 frames for short clips
    assert check_visual_clue(save(tmp_path, frames(1512)), 60 * RATE, RATE) == 1512
    with pytest.raises(VisualClueError):
        check_visual_clue(save(tmp_path, frames(1520)), 60 * RATE, RATE)
    assert check_visual_clue(save(tmp_path, frames(103)), 64000, RATE) == 103
    with pytest.raises(VisualClueError):
        check_visual_clue(save(tmp_path, frames(104)), 64000, RATE)


def test_unreadable_files(tmp_path):
    with pytest.raises(VisualClueError, match="missing.npy: no such file"):
        load_visual_clue(tmp_path / "missing.npy", 64000, RATE)
    with pytest.raises(VisualClueError, match="not a file"):
        load_visual_clue(tmp_path, 64000, RATE)
    garbage = tmp_path / "garbage.npy"
    garbage.write_bytes(b"not numpy at all")
    with pytest.raises(VisualClueError, match="garbage.npy: not a readable .npy array"):
        load_visual_clue(garbage)
    truncated = save(tmp_path, frames(100), "truncated.npy")
    truncated.write_bytes(truncated.read_bytes()[:1000])
    with pytest.raises(VisualClueError, match="truncated.npy: not a readable .npy array"):
        load_visual_clue(truncated)
    pickled = save(tmp_path, np.array([{"a": 1}], dtype=object), "pickled.npy")
    with pytest.raises(VisualClueError, match="pickled.npy: not a readable .npy array"):
        load_visual_clue(pickled)
    archive = tmp_path / "lips.npz"
    np.savez(archive, lips=frames(100))
    with pytest.raises(VisualClueError, match="lips.npz: an .npz archive"):
        load_visual_clue(archive)
    with pytest.raises(VisualClueError, match="audio is empty"):
        load_visual_clue(save(tmp_path, frames(100)), 0, RATE)


def test_frames_before_and_covering_a_sample():
    assert frames_before(640, RATE) == frames_covering(640, RATE) == 1  # exactly one 40 ms frame
    assert (frames_before(641, RATE), frames_covering(641, RATE)) == (1, 2)
    assert (frames_before(639, RATE), frames_covering(639, RATE)) == (0, 1)
    assert frames_before(0, RATE) == frames_covering(0, RATE) == 0
    assert (frames_before(44100, 44100, rate=30.0), frames_covering(44101, 44100, rate=30.0)) == (30, 31)


@pytest.mark.filterwarnings("ignore:overflow encountered in cast")
def test_value_check_without_loading(tmp_path):
    array = frames(VALUE_CHUNK + 10)
    seconds = len(array) / 25
    path = save(tmp_path, array)
    assert check_visual_clue(path, round(seconds * RATE), RATE, values=True) == len(array)
    array[VALUE_CHUNK + 3, 1] = 1e300  # finite in float64, infinite as float32 (what the models see)
    path = save(tmp_path, array)
    assert check_visual_clue(path, round(seconds * RATE), RATE) == len(array)  # the header alone
    with pytest.raises(VisualClueError, match="lips.npy: contains NaN or infinite values"):
        check_visual_clue(path, round(seconds * RATE), RATE, values=True)
    with pytest.raises(VisualClueError, match="NaN or infinite"):
        load_visual_clue(path)


def test_read_takes_the_first_frames_and_pads(tmp_path):
    path = save(tmp_path, frames(10))
    head = read_visual_clue(path, 4)
    assert head.dtype == np.float32 and head.shape == (4, 512)
    np.testing.assert_array_equal(head[:, 0], [0, 1, 2, 3])
    padded = read_visual_clue(path, 13)
    np.testing.assert_array_equal(padded[:, 5], [*range(10), 9, 9, 9])
    with pytest.raises(VisualClueError, match="no such file"):
        read_visual_clue(tmp_path / "gone.npy", 4)
