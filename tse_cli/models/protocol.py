"""The model protocol: what the extraction engine and the CLI may rely on in any `tse_cli.models` architecture.

Models are `torch.nn.Module`s, tensors in and tensors out; they never touch files. Every one declares, as
class attributes or properties (never guessed by the caller with `getattr` or `inspect`):

- `sample_rate: int`: the rate (Hz) of the mixture it takes and the estimate it returns;
- `clue_kind: str`: `"class"` (a (batch, 41) multi-hot float query over `tse_cli.classes.FSD_CLASSES`) or
  `"visual"` (the target speaker's lip embeddings, (batch, frames, 512) at `clue_rate` frames per second);
- `clue_rate: float | None`: clue frames per second for visual clues (25.0), None for class queries;
- `max_classes: int | None`: how many classes one query may name (DPM-TSE: 1), None for no limit (and for
  visual models), so that a front end can refuse a union before any work;
- `inference_options: tuple[str, ...]`: the extra keyword arguments `forward` accepts at inference
  (DPM-TSE: `steps`, `eta`, `generator`), `()` for none; `check_options` validates a request against it;
- `takes_progress: bool`: whether `forward` also accepts `progress(done, total)`, called after each step of a
  long computation (DPM-TSE's diffusion steps), which the engine then passes;
- `forward(mixture (batch, 1, samples), clue, **options) -> (batch, 1, samples)`: the offline estimate.

Each model is also exactly one of two kinds, which decides how the engine runs a long input:

- `CausalModel` (Waveformer, WaveMamba): `streamer(clue) -> Streamer`, whose `feed(chunk (batch, 1, n))`
  returns the next finished output samples (batch, 1, m) for chunks of any size and whose `flush()` returns the
  rest, so that the concatenation equals `forward` on the whole signal; `latency_samples`, its algorithmic
  latency. Causal models take no inference options.
- `WindowModel` (DPM-TSE, AV-SepFormer, AV-SepMamba): `window_samples: int`, the native window that the engine
  runs and overlap-adds.

What can be known about an architecture without importing its module (and so without torch), its sample rate,
clue kind, clue rate and class limit, is in its registry entry, `tse_cli.models.ARCHITECTURES[name]` (an
`Architecture`); tests check that it agrees with the class. This module imports no torch at run time either.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

if TYPE_CHECKING:
    from torch import Tensor

CLUE_KINDS = ("class", "visual")
# the attributes every model declares (those of `ExtractionModel` besides forward)
DECLARED = ("sample_rate", "clue_kind", "clue_rate", "max_classes", "inference_options", "takes_progress")
ModelKind = Literal["stream", "window"]
Progress = Callable[[int, int], None]  # (steps done, total steps)


@runtime_checkable
class Streamer(Protocol):
    """Chunk-by-chunk inference of a `CausalModel` for one clue (see `CausalModel.streamer`)."""

    def feed(self, chunk: Tensor) -> Tensor:
        """Append input samples (batch, 1, n), n >= 0; return the output samples (batch, 1, m) now final."""
        ...

    def flush(self) -> Tensor:
        """End the stream; return the remaining output samples (batch, 1, rest). No `feed` may follow."""
        ...


@runtime_checkable
class ExtractionModel(Protocol):
    """Any architecture (see the module docstring for the meaning of each attribute)."""

    sample_rate: int
    clue_kind: str
    clue_rate: float | None
    max_classes: int | None
    inference_options: tuple[str, ...]
    takes_progress: bool

    def forward(self, mixture: Tensor, clue: Tensor, **options: Any) -> Tensor:
        """mixture (batch, 1, samples) at `sample_rate`, clue (class query or lip embeddings) -> (batch, 1, samples)."""
        ...

    def __call__(self, mixture: Tensor, clue: Tensor, **options: Any) -> Tensor:
        """`forward` (through `nn.Module.__call__`)."""
        ...


@runtime_checkable
class CausalModel(ExtractionModel, Protocol):
    """A model that streams: `streamer(clue).feed(...)` + `flush()` equals `forward` on the whole input."""

    @property
    def latency_samples(self) -> int:
        """Algorithmic latency in samples: input sample s is final in the output once sample
        s + latency_samples - 1 has been fed."""
        ...

    def streamer(self, clue: Tensor) -> Streamer:
        """A fresh `Streamer` for this (batch, ...) clue, starting from silence."""
        ...


@runtime_checkable
class WindowModel(ExtractionModel, Protocol):
    """A model that runs on windows of `window_samples` samples (the engine overlap-adds them)."""

    window_samples: int


def model_kind(model: object) -> ModelKind:
    """`"stream"` for a `CausalModel`, `"window"` for a `WindowModel`; ValueError for anything else (naming the
    attributes it lacks)."""
    if isinstance(model, CausalModel):
        return "stream"
    if isinstance(model, WindowModel):
        return "window"
    lacking = [name for name in DECLARED if not hasattr(model, name)]
    detail = f"lacks {', '.join(lacking)}" if lacking else "declares neither streamer() nor window_samples"
    raise ValueError(f"{type(model).__name__} does not follow the model protocol: {detail}")


def check_options(model: ExtractionModel, options: Mapping[str, Any]) -> None:
    """Raise ValueError unless every inference option in `options` (e.g. `steps`) is one the model declares
    in `inference_options` (causal models take none). The message names the model and the options."""
    unknown = [name for name in options if name not in model.inference_options]
    if unknown:
        name = getattr(model, "arch", None) or type(model).__name__  # `arch` is set by `create`, not by a class
        raise ValueError(f"model {name} takes no option(s): {', '.join(unknown)}")
