"""The contract every architecture in the registry keeps, checked on its tiny build (tests/tiny.py).

It follows the model protocol (`tse_cli.models.protocol`) and is exactly one kind; `forward` keeps the shape of
short and odd-length inputs, batch rows are independent (for deterministic models) and the clue matters; its
training loss sends finite gradients to every trainable parameter; a causal model's streamer,
fed chunks of any size, equals `forward`; the engine runs a long file as `forward` does (whole for causal models;
window by window, each with its own clue frames, for window models); and a checkpoint directory gives back the
same model. Family-specific behaviour stays in the family's own test file.

Names whose tiny builds are the same network (`-large` / `-small`: the tiny config sets the widths in which they
differ) are checked once, under an id naming them all.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import torch
from tiny import tiny, tiny_config
from torch import nn

from tse_cli.checkpoint import load_checkpoint
from tse_cli.classes import NUM_CLASSES
from tse_cli.engine import Engine, Task
from tse_cli.engine.windows import plan_windows, window_frames
from tse_cli.models import ARCHITECTURES, architectures
from tse_cli.models.protocol import CausalModel, ExtractionModel, WindowModel, model_kind
from tse_cli.train.tasks import family_of, get_task
from tse_cli.visual import EMBED_DIM, clue_frames, frames_covering


def _groups() -> dict[str, list[str]]:
    """First name -> every registry name whose tiny build is the same class with the same arguments."""
    groups: dict[str, list[str]] = {}
    for name in architectures():
        key = json.dumps(
            [ARCHITECTURES[name].cls, {**ARCHITECTURES[name].defaults, **tiny_config(name)}], sort_keys=True
        )
        groups.setdefault(key, []).append(name)
    return {names[0]: names for names in groups.values()}


GROUPS = _groups()
with torch.device("meta"):
    KINDS = {name: model_kind(tiny(name)) for name in GROUPS}
ALL = [pytest.param(name, id="+".join(names)) for name, names in GROUPS.items()]
CAUSAL = [p for p in ALL if KINDS[p.values[0]] == "stream"]


@pytest.fixture(scope="module")
def checkpointed(tiny_checkpoint: Callable[..., Path]) -> Callable[[str], nn.Module]:
    """`checkpointed(name)`: the tiny checkpoint of `name` loaded (eval mode), once for the module; tests must
    not change it."""
    models: dict[str, nn.Module] = {}

    def get(name: str) -> nn.Module:
        if name not in models:
            models[name] = load_checkpoint(tiny_checkpoint(name))
        return models[name]

    return get


def clue(model: nn.Module, rows: int, samples: int, seed: int = 0) -> torch.Tensor:
    """A clue per row, each different: lip embeddings covering `samples`, or a query of as many classes as the
    model takes (up to two)."""
    g = torch.Generator().manual_seed(seed)
    if model.clue_kind == "visual":
        return torch.randn(rows, frames_covering(samples, model.sample_rate, model.clue_rate), EMBED_DIM, generator=g)
    classes = min(2, model.max_classes or 2)
    query = torch.zeros(rows, NUM_CLASSES)
    for row in range(rows):
        query[row, torch.randperm(NUM_CLASSES, generator=g)[:classes]] = 1.0
    return query


def options(model: nn.Module, seed: int = 0) -> dict[str, Any]:
    """Fast, deterministic inference options among those the model declares (DPM-TSE: 1 step, seeded)."""
    declared = model.inference_options
    return {
        **({"steps": 1} if "steps" in declared else {}),
        **({"generator": torch.Generator().manual_seed(seed)} if "generator" in declared else {}),
    }


def run(model: nn.Module, mixture: torch.Tensor, clue: torch.Tensor, seed: int = 0) -> torch.Tensor:
    with torch.no_grad():
        return model(mixture, clue, **options(model, seed))


# protocol and shapes -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL)
def test_follows_the_protocol_and_keeps_shapes(name: str, checkpointed) -> None:
    model = checkpointed(name)
    assert isinstance(model, ExtractionModel) and model_kind(model) == KINDS[name]
    assert isinstance(model, CausalModel) != isinstance(model, WindowModel)
    torch.manual_seed(0)
    for samples in (1, 7, 32, 33, 837, 3202):  # around and across frame, chunk and decoder boundaries
        out = run(model, 0.3 * torch.randn(2, 1, samples), clue(model, 2, samples))
        assert out.shape == (2, 1, samples) and out.dtype == torch.float32, samples
        assert torch.isfinite(out).all(), samples


@pytest.mark.parametrize("name", ALL)
def test_the_clue_matters_and_rows_are_independent(name: str, checkpointed) -> None:
    model = checkpointed(name)
    torch.manual_seed(1)
    mixture, clues = 0.3 * torch.randn(2, 1, 2400), clue(model, 2, 2400)
    both = run(model, mixture, clues)
    other = run(model, mixture[1:], clues[:1])
    alone = run(model, mixture[1:], clues[1:])
    assert (alone - other).abs().max() > 1e-6  # tiny at initialisation, but there
    if "generator" not in model.inference_options:  # a sampler draws its noise for the whole batch
        assert torch.allclose(both[1:], alone, atol=1e-5)


# training ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL)
def test_training_loss_has_gradients_everywhere(name: str) -> None:
    # the bare "waveformer" (any published config) has no training task; its group's sized names do
    trainable_as = [n for n in GROUPS[name] if family_of(n)]
    assert trainable_as, f"no name of {GROUPS[name]} has a training task"
    task = get_task(trainable_as[0])
    torch.manual_seed(2)
    model = tiny(name).train()
    samples = 1600
    mixture = 0.3 * torch.randn(2, 1, samples)
    batch = {
        "mixture": mixture,
        "target": 0.5 * mixture,
        "clue": clue(model, 2, samples),
        "length": torch.tensor([samples, samples - 100]),
        "label": ["a", "b"],
    }
    loss = task.loss(model, batch, dict(task.options))
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert trainable
    for n, p in trainable:  # a detached path leaves the parameters before it without a gradient
        assert p.grad is not None and torch.isfinite(p.grad).all(), n
    assert sum(p.grad.abs().sum() for _, p in trainable) > 0


# streaming -----------------------------------------------------------------------------------------------------


def chunk_sizes(total: int, seed: int) -> list[int]:
    """Single samples, an empty chunk, random sizes, then one big chunk, covering `total` samples."""
    g = torch.Generator().manual_seed(seed)
    sizes = [1] * min(total, 70) + [0]
    while sum(sizes) < total - 1500:
        sizes.append(int(torch.randint(1, 700, (1,), generator=g)))
    return sizes + [max(0, total - sum(sizes))]


@pytest.mark.parametrize("samples", [0, 1, 65, 6001])
@pytest.mark.parametrize("name", CAUSAL)
def test_streamer_fed_any_chunks_equals_forward(name: str, samples: int, checkpointed) -> None:
    model = checkpointed(name)
    torch.manual_seed(samples)
    x, query = 0.5 * torch.randn(2, 1, samples), clue(model, 2, samples)
    offline = run(model, x, query)
    streamer, parts, start = model.streamer(query), [], 0
    with torch.no_grad():
        for n in chunk_sizes(samples, samples):
            parts.append(streamer.feed(x[..., start : start + n]))
            assert parts[-1].shape[:2] == (2, 1)
            start += n
        parts.append(streamer.flush())
    streamed = torch.cat(parts, dim=-1)
    torch.testing.assert_close(streamed, offline, rtol=0, atol=1e-5)


# the engine ----------------------------------------------------------------------------------------------------


def write_input(model: nn.Module, folder: Path, samples: int) -> tuple[Task, np.ndarray, np.ndarray]:
    """A mono float32 file at the model's rate and its clue (a query, or a .npy of lip embeddings)."""
    audio = (0.3 * np.random.default_rng(3).standard_normal(samples)).astype(np.float32)
    sf.write(folder / "mix.wav", audio, model.sample_rate, subtype="FLOAT")
    task = Task(folder / "mix.wav", folder / "out.wav")
    if model.clue_kind == "visual":
        frames = clue_frames(samples, model.sample_rate, model.clue_rate)
        values = np.random.default_rng(4).standard_normal((frames, EMBED_DIM)).astype(np.float32)
        np.save(folder / "mix.npy", values)
        task.visual = folder / "mix.npy"
    else:
        values = clue(model, 1, samples)[0].numpy()
        task.clue = values
    return task, audio, values


@pytest.mark.parametrize("name", ALL)
def test_engine_runs_a_long_file_as_forward_does(name: str, checkpointed, tmp_path: Path) -> None:
    model = checkpointed(name)
    causal = isinstance(model, CausalModel)
    frame = model.sample_rate / model.clue_rate if model.clue_rate else 1.0
    if causal:
        samples = 6001
    else:
        window = model.window_samples
        samples = window + plan_windows(2 * window, window, frame).hop // 2
        plan = plan_windows(samples, window, frame)
        assert plan.count == 2  # the second window reaches past the end
    task, audio, values = write_input(model, tmp_path, samples)
    declared = model.inference_options
    engine_options = {
        **({"steps": 1} if "steps" in declared else {}),
        **({"seed": 0} if "generator" in declared else {}),
    }
    (result,) = Engine(model, block_frames=1111, options=engine_options).run([task])
    assert result.status == "done", result.error
    estimate = sf.read(task.output, dtype="float32")[0]
    assert estimate.shape == (samples,)

    def forward(start: int, length: int, generator: torch.Generator | None = None) -> np.ndarray:
        """The model on input samples [start, start + length) (zero-padded past the end) with their clue."""
        x = torch.from_numpy(np.pad(audio[start:], (0, max(0, start + length - samples)))[:length])
        if model.clue_kind == "visual":
            c = torch.from_numpy(values[window_frames(start, length, model.sample_rate, model.clue_rate)])
        else:
            c = torch.from_numpy(values)
        extra = {**options(model), **({"generator": generator} if generator else {})}
        with torch.no_grad():
            return model(x[None, None], c[None], **extra)[0, 0].numpy()

    if causal:
        assert np.abs(estimate - forward(0, samples)).max() < 1e-5
        return
    generator = torch.Generator().manual_seed(0) if "seed" in engine_options else None  # one per file, in turn
    first, second = forward(0, window, generator), forward(plan.hop, window, generator)
    assert np.abs(estimate[: plan.hop] - first[: plan.hop]).max() < 1e-5  # before the crossfade
    assert np.abs(estimate[window:] - second[window - plan.hop : samples - plan.hop]).max() < 1e-5  # after it


# checkpoints ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL)
def test_checkpoint_gives_back_the_same_model(name: str, tiny_checkpoint) -> None:
    folder = tiny_checkpoint(name)
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    torch.manual_seed(0)  # the seed tiny_checkpoint draws the weights with
    built = tiny(name).eval()
    loaded = load_checkpoint(folder)
    assert type(loaded) is type(built) and not loaded.training
    assert (loaded.arch, loaded.config) == (name, built.config)
    state, expected = loaded.state_dict(), built.state_dict()
    assert list(state) == list(expected)
    assert all(torch.equal(state[k], expected[k]) for k in expected)
    mixture = 0.3 * torch.randn(1, 1, 1000)
    clues = clue(built, 1, 1000)
    assert torch.equal(run(loaded, mixture, clues), run(built, mixture, clues))
    other = load_checkpoint(tiny_checkpoint(name, seed=1))
    assert not torch.equal(run(other, mixture, clues), run(built, mixture, clues))
