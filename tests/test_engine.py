"""The extraction engine against stand-in models of the protocol (test_contract.py runs it with every real
architecture)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio.functional as AF
from torch import nn

from tse_cli.classes import multi_hot
from tse_cli.devices import DeviceError, resolve_device
from tse_cli.engine import Engine, Task
from tse_cli.models.protocol import check_options, model_kind

RATE = 8000


class CausalFir(nn.Module):
    """A causal model with lookahead: y[t] = gain(clue) * sum_j w_j x[t + LOOKAHEAD - j] (zeros outside)."""

    sample_rate = RATE
    clue_kind = "class"
    clue_rate = None
    max_classes = None
    inference_options = ()
    takes_progress = False
    LOOKAHEAD = 3
    latency_samples = LOOKAHEAD + 1

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.tensor([0.5, -0.25, 0.125, 0.3, -0.1, 0.2, 0.05]))

    def gain(self, clue: torch.Tensor) -> torch.Tensor:
        return (1.0 + torch.arange(clue.shape[1], dtype=clue.dtype) @ clue.T / 41.0)[:, None, None]

    def forward(self, mixture: torch.Tensor, clue: torch.Tensor) -> torch.Tensor:
        k = len(self.weight)
        x = nn.functional.pad(mixture, (k - 1 - self.LOOKAHEAD, self.LOOKAHEAD))
        return self.gain(clue) * nn.functional.conv1d(x, self.weight.flip(0)[None, None])

    def streamer(self, clue: torch.Tensor) -> _FirStreamer:
        self.batches = [*getattr(self, "batches", []), clue.shape[0]]
        return _FirStreamer(self, clue)


class _FirStreamer:
    def __init__(self, model: CausalFir, clue: torch.Tensor) -> None:
        self.model, self.clue = model, clue
        k = len(model.weight)
        self.buffer = torch.zeros(clue.shape[0], 1, k - 1 - model.LOOKAHEAD)
        self.calls = 0

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        k = len(self.model.weight)
        self.buffer = torch.cat([self.buffer, x], dim=-1)
        if self.buffer.shape[-1] < k:
            return self.buffer[..., :0]
        out = nn.functional.conv1d(self.buffer, self.model.weight.flip(0)[None, None])
        self.buffer = self.buffer[..., self.buffer.shape[-1] - (k - 1) :]
        return self.model.gain(self.clue) * out

    def feed(self, chunk: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self._run(chunk)

    def flush(self) -> torch.Tensor:
        return self._run(torch.zeros(self.clue.shape[0], 1, CausalFir.LOOKAHEAD))


class PointwiseWindow(nn.Module):
    """A window model computing 0.5 * x * gain per sample: overlap-add must give back exactly that."""

    sample_rate = RATE
    clue_kind = "class"
    clue_rate = None
    max_classes = None
    inference_options = ("steps", "generator")
    takes_progress = True
    window_samples = 1000

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(0.5))
        self.calls: list[tuple[int, dict]] = []

    def forward(self, mixture: torch.Tensor, clue: torch.Tensor, steps: int = 50, generator=None, progress=None):
        self.calls.append((mixture.shape[-1], {"steps": steps, "generator": generator}))
        for done in range(1, steps + 1):
            progress(done, steps)
        return self.scale * mixture * (1 + clue.sum(1))[:, None, None]


class VisualWindow(nn.Module):
    """A visual window model: y[t] = x[t] * v[frame of t, 0] with v at 25 frames per second."""

    sample_rate = RATE
    clue_kind = "visual"
    clue_rate = 25.0
    max_classes = None
    inference_options = ()
    takes_progress = False
    window_samples = 1600  # 5 frames

    def forward(self, mixture: torch.Tensor, clue: torch.Tensor) -> torch.Tensor:
        per_frame = self.sample_rate // int(self.clue_rate)
        gains = clue[:, :, 0].repeat_interleave(per_frame, dim=1)[:, : mixture.shape[-1]]
        return mixture * gains[:, None, :]


def write(path: Path, x: np.ndarray, rate: int = RATE, subtype: str = "FLOAT") -> Path:
    """Write (channels, frames) float samples."""
    sf.write(str(path), x.T, rate, subtype=subtype)
    return path


def noise(channels: int, frames: int, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal((channels, frames)) * 0.1).astype(np.float32)


def read(path: Path) -> np.ndarray:
    return sf.read(str(path), dtype="float32", always_2d=True)[0].T


CLUE = multi_hot([10])


def offline(model: nn.Module, x: np.ndarray, rate: int, keep: bool = True) -> np.ndarray:
    """The reference: resample whole, forward whole (channels as batch), resample back, trim."""
    t = torch.from_numpy(x)
    if rate != model.sample_rate:
        t = AF.resample(t, rate, model.sample_rate)
    clue = torch.from_numpy(np.repeat(CLUE[None], x.shape[0], axis=0))
    with torch.no_grad():
        y = model(t[:, None], clue)[:, 0]
    if keep and rate != model.sample_rate:
        y = AF.resample(y, model.sample_rate, rate)[:, : x.shape[1]]
    return y.numpy()


@pytest.mark.parametrize(("block", "frames"), [(1, 300), (37, 3001), (1000, 3001), (4096, 3001)])
def test_stream_equals_offline_any_block(tmp_path: Path, block: int, frames: int) -> None:
    model = CausalFir()
    x = noise(2, frames)
    task = Task(write(tmp_path / "in.wav", x), tmp_path / "out.wav", clue=CLUE)
    (result,) = Engine(model, block_frames=block).run([task])
    assert result.status == "done", result.error
    np.testing.assert_allclose(read(task.output), offline(model, x, RATE), atol=1e-6)


@pytest.mark.parametrize(("rate", "keep"), [(44100, True), (16000, True), (22050, False)])
def test_stream_resamples_to_model_and_back(tmp_path: Path, rate: int, keep: bool) -> None:
    model = CausalFir()
    x = noise(1, rate // 3)
    task = Task(write(tmp_path / "in.wav", x, rate), tmp_path / "out.wav", clue=CLUE)
    (result,) = Engine(model, block_frames=517, sample_rate="keep" if keep else "model").run([task])
    assert result.status == "done", result.error
    y, out_rate = sf.read(str(task.output), dtype="float32", always_2d=True)
    assert out_rate == (rate if keep else RATE)
    np.testing.assert_allclose(y.T, offline(model, x, rate, keep), atol=1e-5)


def test_residual_is_mixture_minus_estimate(tmp_path: Path) -> None:
    x = noise(2, 2000)
    task = Task(write(tmp_path / "in.wav", x, 16000), tmp_path / "e.wav", residual=tmp_path / "r.wav", clue=CLUE)
    Engine(CausalFir(), block_frames=300).run([task])
    np.testing.assert_allclose(read(task.residual), x - read(task.output), atol=1e-6)


def test_batch_of_files_equals_one_by_one(tmp_path: Path) -> None:
    model = CausalFir()
    shapes = [(1, 900), (2, 2500), (1, 2500), (3, 1200), (1, 2500), (2, 900)]
    inputs = [noise(c, n, seed=i) for i, (c, n) in enumerate(shapes)]
    tasks = [Task(write(tmp_path / f"in{i}.wav", x), tmp_path / f"out{i}.wav", clue=CLUE) for i, x in enumerate(inputs)]
    results = Engine(model, block_frames=256, batch_size=3, jobs=3).run(tasks)
    assert [r.status for r in results] == ["done"] * len(shapes)
    assert results == tasks  # the tasks themselves, each with its outcome
    assert sorted(model.batches) == [3, 3, 4]  # one length per streamed batch: 900 (1+2 ch), 1200 (3), 2500 (2+1+1)
    for task, x in zip(tasks, inputs, strict=True):
        np.testing.assert_allclose(read(task.output), offline(model, x, RATE), atol=1e-6)


def test_failed_file_in_batch_leaves_others(tmp_path: Path) -> None:
    good = noise(1, 2000)
    bad = noise(1, 2000)
    bad[0, 1500] = np.nan
    tasks = [
        Task(write(tmp_path / "good.wav", good), tmp_path / "good_out.wav", clue=CLUE),
        Task(write(tmp_path / "bad.wav", bad), tmp_path / "bad_out.wav", clue=CLUE),
        Task(tmp_path / "missing.wav", tmp_path / "missing_out.wav", clue=CLUE),
    ]
    results = Engine(CausalFir(), block_frames=500, batch_size=2).run(tasks)
    assert [r.status for r in results] == ["done", "failed", "failed"]
    assert "NaN" in results[1].error and "frame 1500" in results[1].error
    assert "no such file" in results[2].error
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.wav", "good.wav", "good_out.wav"]


def test_ctrl_c_removes_partial_outputs(tmp_path: Path) -> None:
    class Interrupting(CausalFir):
        def streamer(self, clue):
            streamer = super().streamer(clue)
            feed = streamer.feed

            def interrupt(chunk):
                if streamer.calls >= 2:
                    raise KeyboardInterrupt
                return feed(chunk)

            streamer.feed = interrupt
            return streamer

    task = Task(
        write(tmp_path / "in.wav", noise(1, 4000)), tmp_path / "out.wav", residual=tmp_path / "r.wav", clue=CLUE
    )
    with pytest.raises(KeyboardInterrupt):
        Engine(Interrupting(), block_frames=500, jobs=2).run([task])
    assert [p.name for p in tmp_path.iterdir()] == ["in.wav"]


def test_progress_reports_seconds_and_files(tmp_path: Path) -> None:
    tasks = [Task(write(tmp_path / f"{i}.wav", noise(1, 4000)), tmp_path / f"o{i}.wav", clue=CLUE) for i in range(2)]
    seen = []
    Engine(CausalFir(), block_frames=1000).run(tasks, on_progress=seen.append)
    assert seen[-1].files_done == 2 and seen[-1].files_total == 2
    assert seen[-1].seconds_done == pytest.approx(1.0) and seen[-1].seconds_total == pytest.approx(1.0)
    assert all(a.seconds_done <= b.seconds_done for a, b in zip(seen, seen[1:], strict=False))
    assert seen[-1].rtf > 0


@pytest.mark.parametrize("frames", [700, 1000, 2999, 5000])
def test_window_overlap_add_is_seamless(tmp_path: Path, frames: int) -> None:
    model = PointwiseWindow()
    x = noise(2, frames)
    task = Task(write(tmp_path / "in.wav", x), tmp_path / "out.wav", clue=CLUE)
    seen = []
    (result,) = Engine(model, options={"steps": 7, "seed": 3}).run([task], on_progress=seen.append)
    assert [(p.step, p.steps) for p in seen if p.steps][:7] == [(i, 7) for i in range(1, 8)]
    assert result.status == "done", result.error
    np.testing.assert_allclose(read(task.output), x, atol=1e-6)  # 0.5 * (1 + 1) = 1
    lengths = {n for n, _ in model.calls}
    assert lengths == ({frames} if frames <= model.window_samples else {model.window_samples})
    assert all(kw["steps"] == 7 and isinstance(kw["generator"], torch.Generator) for _, kw in model.calls)
    if frames > model.window_samples:
        hop = model.window_samples - model.window_samples // 4
        assert len(model.calls) == math.ceil((frames - (model.window_samples - hop)) / hop)


def test_visual_clue_is_sliced_per_window(tmp_path: Path) -> None:
    frames_per_second, per_frame = 25, RATE // 25
    gains = np.linspace(0.1, 1.0, 20, dtype=np.float32)  # 20 frames = 0.8 s
    clue = np.repeat(gains[:, None], 512, axis=1)
    np.save(tmp_path / "lips.npy", clue)
    x = np.ones((1, 20 * per_frame), dtype=np.float32) * 0.5
    task = Task(write(tmp_path / "in.wav", x), tmp_path / "out.wav", visual=tmp_path / "lips.npy")
    (result,) = Engine(VisualWindow()).run([task])
    assert result.status == "done", result.error
    expected = 0.5 * np.repeat(gains, per_frame)[None]
    np.testing.assert_allclose(read(task.output), expected, atol=1e-6)
    assert frames_per_second == VisualWindow.clue_rate


def test_options_and_devices_are_checked() -> None:
    with pytest.raises(ValueError, match="takes no option"):
        check_options(CausalFir(), {"steps": 3})
    with pytest.raises(ValueError, match="eta"):
        check_options(PointwiseWindow(), {"eta": 0.0})
    check_options(PointwiseWindow(), {"steps": 3})
    assert model_kind(CausalFir()) == "stream" and model_kind(PointwiseWindow()) == "window"
    assert resolve_device("cpu").type == "cpu"
    for bad in ("tpu", "cuda:x"):
        with pytest.raises(DeviceError, match="invalid device"):
            resolve_device(bad)
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="not available"):
            resolve_device("cuda:0")
        assert resolve_device("auto").type == "cpu"


def test_pcm_output_clipping_is_counted_not_rescaled(tmp_path: Path) -> None:
    x = np.tile(np.array([[0.1, 0.6, -0.7, 0.2]], dtype=np.float32), 50)
    task = Task(write(tmp_path / "in.wav", x, subtype="PCM_16"), tmp_path / "out.wav", clue=multi_hot([40]))
    model = PointwiseWindow()  # gain 0.5 * (1 + 1) ... with clue sum 1 -> x; scale up to force clipping
    model.scale.data.fill_(1.0)  # y = 2x: 0.6 -> 1.2 and -0.7 -> -1.4 clip
    (result,) = Engine(model).run([task])
    assert result.written[0].clipped == 100 and result.written[0].gain == 1.0
    y = read(task.output)
    assert sf.info(str(task.output)).subtype == "PCM_16"
    np.testing.assert_allclose(y[0, :4], [0.2, 1.0, -1.0, 0.4], atol=1e-4)


def test_model_errors_fail_their_batch_only(tmp_path: Path) -> None:
    class PicksOneClass(PointwiseWindow):
        def forward(self, mixture, clue, steps=50, generator=None, progress=None):
            if (clue.sum(1) != 1).any():
                raise ValueError("exactly one class per query\nsecond line")
            return super().forward(mixture, clue, steps, generator, progress)

    x = noise(1, 3000)
    tasks = [
        Task(write(tmp_path / "a.wav", x), tmp_path / "a_out.wav", clue=multi_hot([1, 2])),
        Task(write(tmp_path / "b.wav", x), tmp_path / "b_out.wav", clue=CLUE),
    ]
    results = Engine(PicksOneClass(), jobs=2).run(tasks)
    assert [r.status for r in results] == ["failed", "done"]
    assert results[0].error == f"{tasks[0].input}: extraction failed (ValueError: exactly one class per query)"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.wav", "b.wav", "b_out.wav"]


def test_visual_windows_never_ask_for_frames_past_the_end(tmp_path: Path) -> None:
    class Recording(VisualWindow):
        def forward(self, mixture: torch.Tensor, clue: torch.Tensor) -> torch.Tensor:
            self.frames = [*getattr(self, "frames", []), clue.shape[1]]
            needed = math.ceil(mixture.shape[-1] / (self.sample_rate // int(self.clue_rate)))
            clue = torch.cat([clue, clue[:, -1:].expand(-1, needed - clue.shape[1], -1)], dim=1)  # the model aligns
            return super().forward(mixture, clue)

    gains = np.linspace(0.1, 1.0, 21, dtype=np.float32)  # 21 frames: the last one covers half a frame of audio
    np.save(tmp_path / "lips.npy", np.repeat(gains[:, None], 512, axis=1))
    x = noise(1, 6560)  # 20.5 frames of 320 samples
    task = Task(write(tmp_path / "in.wav", x), tmp_path / "out.wav", visual=tmp_path / "lips.npy")
    model = Recording()
    (result,) = Engine(model).run([task])
    assert result.status == "done", result.error
    assert model.frames == [5] * 6 + [3]  # windows of 5 frames hopping 3; the last starts at frame 18 of 21
    np.testing.assert_allclose(read(task.output), x * np.repeat(gains, 320)[None, :6560], atol=1e-6)


def _count_live(monkeypatch: pytest.MonkeyPatch, name: str) -> list[int]:
    """Wrap `tse_cli.engine.files.<name>` so that each call records how many of its results are still alive."""
    import weakref

    import tse_cli.engine.files as engine

    build, alive, counts = getattr(engine, name), [], []

    def counted(*args, **kwargs):
        made = build(*args, **kwargs)
        alive.append(weakref.ref(made))
        counts.append(sum(ref() is not None for ref in alive))
        return made

    monkeypatch.setattr(engine, name, counted)
    return counts


def test_per_file_state_is_bounded_by_the_batch_not_the_file_count(tmp_path: Path, monkeypatch) -> None:
    counts = _count_live(monkeypatch, "StreamResampler")
    inputs = [noise(1, 441 + 44 * (i % 2), seed=i) for i in range(12)]
    tasks = [
        Task(write(tmp_path / f"in{i}.wav", x, 44100), tmp_path / f"out{i}.wav", clue=CLUE)
        for i, x in enumerate(inputs)
    ]
    results = Engine(CausalFir(), block_frames=64, batch_size=3, jobs=2).run(tasks)
    assert [r.status for r in results] == ["done"] * len(tasks)
    assert len(counts) == 2 * len(tasks)  # to the model's rate and back, per file
    assert max(counts) <= 2 * 3  # only the running batch holds resamplers
    for task, x in zip(tasks, inputs, strict=True):
        np.testing.assert_allclose(read(task.output), offline(CausalFir(), x, 44100), atol=1e-5)


def test_visual_clues_are_loaded_per_batch(tmp_path: Path, monkeypatch) -> None:
    counts = _count_live(monkeypatch, "read_visual_clue")
    per_frame, tasks, gains = RATE // 25, [], []
    for i in range(8):
        gains.append(np.linspace(0.1, 1.0, 4 + i % 2, dtype=np.float32) * (i + 1))  # one window
        np.save(tmp_path / f"lips{i}.npy", np.repeat(gains[-1][:, None], 512, axis=1))
        x = np.full((1, len(gains[-1]) * per_frame), 0.5, dtype=np.float32)
        tasks.append(
            Task(write(tmp_path / f"in{i}.wav", x), tmp_path / f"out{i}.wav", visual=tmp_path / f"lips{i}.npy")
        )
    results = Engine(VisualWindow(), batch_size=2).run(tasks)
    assert [r.status for r in results] == ["done"] * len(tasks)
    assert len(counts) == len(tasks) and max(counts) <= 2
    for task, g in zip(tasks, gains, strict=True):
        np.testing.assert_allclose(read(task.output), 0.5 * np.repeat(g, per_frame)[None], atol=1e-5)


def test_clue_failures_are_reported_before_any_work(tmp_path: Path) -> None:
    x = np.full((1, 5 * (RATE // 25)), 0.5, dtype=np.float32)
    bad = np.ones((5, 512), np.float32)
    bad[3, 3] = np.nan
    np.save(tmp_path / "bad.npy", bad)
    np.save(tmp_path / "good.npy", np.ones((5, 512), np.float32))
    tasks = [
        Task(write(tmp_path / "a.wav", x), tmp_path / "a_out.wav", visual=tmp_path / "good.npy"),
        Task(write(tmp_path / "b.wav", x), tmp_path / "b_out.wav", visual=tmp_path / "bad.npy"),
    ]
    order = []
    results = Engine(VisualWindow()).run(tasks, on_result=lambda r: order.append(r.input.name))
    assert [r.status for r in results] == ["done", "failed"]
    assert results[1].error == f"{tmp_path / 'bad.npy'}: contains NaN or infinite values"
    assert order == ["b.wav", "a.wav"]


# ---- several tasks of one input (--each), output rates, clip modes ----


def test_tasks_of_one_input_read_it_once_and_equal_separate_runs(tmp_path: Path, monkeypatch) -> None:
    from tse_cli.engine import files

    x = noise(2, 3001)
    source = write(tmp_path / "in.wav", x, 16000)
    classes = [[10], [2], [2, 10]]

    def tasks(prefix: str) -> list[Task]:
        return [
            Task(source, tmp_path / f"{prefix}{i}.wav", tmp_path / f"{prefix}{i}_r.wav", clue=multi_hot(c))
            for i, c in enumerate(classes)
        ]

    separate = [Engine(CausalFir(), block_frames=300).run([t])[0] for t in tasks("alone")]
    opened = []
    reader = files.BlockReader
    monkeypatch.setattr(files, "BlockReader", lambda *a: opened.append(a) or reader(*a))
    model = CausalFir()
    together = Engine(model, block_frames=300, jobs=2).run(tasks("each"))
    assert [t.status for t in together] == ["done"] * 3 and len(opened) == 1, "one read of the input for all"
    assert model.batches == [6], "one batch: a row per class and channel"
    for a, b in zip(separate, together, strict=True):
        np.testing.assert_array_equal(read(b.output), read(a.output))
        np.testing.assert_array_equal(read(b.residual), read(a.residual))
    assert not np.allclose(read(together[0].output), read(together[1].output)), "each class its own estimate"


def test_a_third_output_rate_keeps_the_residual_exact(tmp_path: Path) -> None:
    x = noise(1, 16000 // 3)
    task = Task(write(tmp_path / "in.wav", x, 16000), tmp_path / "e.wav", residual=tmp_path / "r.wav", clue=CLUE)
    (result,) = Engine(CausalFir(), block_frames=333, sample_rate=12000).run([task])
    assert result.status == "done", result.error
    assert [w.sample_rate for w in result.written] == [12000, 12000]
    estimate, residual = read(task.output), read(task.residual)
    mixture = AF.resample(AF.resample(torch.from_numpy(x), 16000, RATE), RATE, 12000).numpy()
    assert estimate.shape == residual.shape == mixture.shape
    np.testing.assert_allclose(estimate + residual, mixture, atol=1e-5)


def test_formats_move_to_a_rate_they_store(tmp_path: Path) -> None:
    from tse_cli.audio import FORMATS

    if "opus" not in FORMATS:
        pytest.skip("this libsndfile writes no Opus")
    task = Task(write(tmp_path / "in.wav", noise(1, 8000), 44100), tmp_path / "e.opus", clue=CLUE, format="opus")
    (result,) = Engine(CausalFir()).run([task])
    assert result.status == "done", result.error
    info = sf.info(str(task.output))
    assert (info.samplerate, info.subtype, result.written[0].sample_rate) == (48000, "OPUS", 48000)


def test_clip_counts_name_each_output_and_rescale_scales_each(tmp_path: Path) -> None:
    x = np.tile(np.array([[0.1, 0.6, -0.7, 0.2]], dtype=np.float32), 50)
    model = PointwiseWindow()
    model.scale.data.fill_(1.0)  # y = 2x: 100 samples beyond [-1, 1]

    def run(clip: str, name: str) -> Task:
        source = write(tmp_path / f"{name}.wav", 1.6 * x)  # float input, PCM output
        task = Task(source, tmp_path / f"{name}_e.wav", clue=multi_hot([40]), subtype="PCM_16")
        task.residual = tmp_path / f"{name}_r.wav"
        (result,) = Engine(model, clip=clip).run([task])
        assert result.status == "done", result.error
        return result

    clamp = run("clamp", "a")
    assert [w.path.name for w in clamp.written] == ["a_e.wav", "a_r.wav"]
    assert [w.clipped for w in clamp.written] == [100, 50]  # estimate 3.2x: 0.6 and -0.7; residual -1.6x: -0.7
    rescale = run("rescale", "b")
    assert [w.clipped for w in rescale.written] == [0, 0]
    peak = 2 * 1.6 * 0.7
    assert rescale.written[0].gain == pytest.approx(1 / peak, rel=1e-6)
    assert rescale.written[1].gain == pytest.approx(1 / (1.6 * 0.7), rel=1e-6)
    np.testing.assert_allclose(np.abs(read(rescale.output)).max(), 1.0, atol=1e-4)
    np.testing.assert_allclose(read(rescale.output), 2 * read(tmp_path / "b.wav") / peak, atol=1e-4)


def test_cpu_engine_reuses_freed_memory() -> None:
    """On glibc the engine makes malloc keep freed blocks: block-sized tensors allocated again and again then
    fault no fresh pages in (the default thresholds fault about 80,000 pages for this loop)."""
    import resource

    from tse_cli.devices import keep_cpu_memory

    if not keep_cpu_memory():
        pytest.skip("not glibc: the C library's allocator is left as it is")

    def faults_of_round() -> int:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(10):
            blocks = [torch.ones(1 << 21) for _ in range(4)]  # 4 x 8 MB, freed together
            del blocks
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

    faults_of_round()  # the first round grows the heap
    assert faults_of_round() < 2000
