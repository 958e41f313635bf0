"""Window planning of the engine (`tse_cli.engine.windows`): pure functions of lengths, no model, no files."""

from __future__ import annotations

import numpy as np
import pytest

from tse_cli.engine.windows import OverlapAdd, Windows, plan_windows, stream_blocks, window_frames


@pytest.mark.parametrize(("total", "block", "sizes"), [(10, 4, [4, 4, 2]), (8, 4, [4, 4]), (3, 5, [3]), (0, 4, [])])
def test_stream_blocks_cover_the_file_once(total: int, block: int, sizes: list[int]) -> None:
    assert stream_blocks(total, block) == sizes


def test_a_short_file_is_one_piece_of_its_own_length() -> None:
    assert plan_windows(700, 1000) == Windows(700, 700, 1)
    assert plan_windows(1000, 1000) == Windows(1000, 1000, 1)
    assert plan_windows(700, 1000).sizes == [700] and plan_windows(700, 1000).overlap == 0


@pytest.mark.parametrize("length", [1001, 1750, 1751, 2999, 5000, 123457])
def test_windows_overlap_by_a_quarter_and_just_cover_the_file(length: int) -> None:
    plan = plan_windows(length, 1000)
    assert (plan.window, plan.hop, plan.overlap) == (1000, 750, 250)
    covered = plan.window + (plan.count - 1) * plan.hop
    assert covered >= length > covered - plan.hop  # one window fewer would not reach the end
    assert sum(plan.sizes) == covered


def test_hops_are_whole_clue_frames() -> None:
    plan = plan_windows(10_000, 1600, frame=320.0)  # 5 frames of 320 samples: a quarter is 1.25 frames
    assert plan.hop == 960 and plan.hop % 320 == 0
    assert plan_windows(10_000, 1600, frame=320.5).hop == 1200  # not whole frames: the plain quarter overlap


@pytest.mark.parametrize("length", [1, 999, 1000, 1001, 4321])
def test_crossfades_add_up_to_the_signal(length: int) -> None:
    """An identity model through the overlap-add gives the input back: the ramps of each overlap sum to one."""
    x = np.random.default_rng(0).standard_normal((2, length)).astype(np.float32)
    plan = plan_windows(length, 1000)
    padded = np.pad(x, ((0, 0), (0, sum(plan.sizes) - length)))
    windows, out, start = OverlapAdd(plan), [], 0
    for k, size in enumerate(plan.sizes):
        window = windows.window(padded[:, start : start + size])
        np.testing.assert_array_equal(window, padded[:, k * plan.hop : k * plan.hop + plan.window])
        out.append(windows.add(window.copy()))
        start += size
    np.testing.assert_allclose(np.concatenate(out, axis=1)[:, :length], x, atol=1e-6)
    assert sum(part.shape[1] for part in out) == sum(plan.sizes)


def test_window_frames_cover_the_window() -> None:
    assert window_frames(0, 1600, 8000, 25.0) == slice(0, 5)
    assert window_frames(960, 1600, 8000, 25.0) == slice(3, 8)
    assert window_frames(100, 400, 8000, 25.0) == slice(0, 2)  # samples 100..500: frames 0 and 1 (320 each)
