"""Streaming with ONNX Runtime: a graph written by `tse export` behind tse's causal-model protocol.

`OnnxModel(path)` reads `<name>.onnx` and its sidecar `<name>.json` (see `tse_cli.onnx_export`) and is a
`tse_cli.models.protocol.CausalModel`: `streamer(query)` gives an `OnnxStreamer` whose `feed(chunk (batch, 1, n))`
and `flush()` behave as the PyTorch `CausalStreamer`'s (any chunk sizes; the concatenation equals the model's
offline forward), `forward` runs a whole signal through one, so `tse extract` and `tse stream` run it like any
model (`--engine onnx`). CPU only; the graph is for one batch row, so each row of a batch is its own stream.

Driving the step (the rules of `tse_cli.models.step.StreamingStep`): the first L input samples go into the end
of the `samples` state, then chunks of `chunk_samples` follow from input sample L, each giving `chunk_samples`
output samples; at the end, zero chunks complete the last frames (with `valid` 0 past the input's end where the
graph takes it) and the output is cut at the input's length. Input shorter than a chunk waits in a buffer, so the
latency is the model's plus up to one chunk.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

FORMAT, VERSION = "tse-onnx-stream", 1


def sidecar_path(onnx_path: str | Path) -> Path:
    """The JSON sidecar of an exported graph: `x.onnx` -> `x.json`."""
    return Path(onnx_path).with_suffix(".json")


def read_sidecar(onnx_path: str | Path) -> dict[str, Any]:
    """The sidecar of an exported graph, checked to be one (ValueError naming the file otherwise)."""
    sidecar = sidecar_path(onnx_path)
    try:
        meta = json.loads(sidecar.read_text())
    except OSError as err:
        raise ValueError(
            f"{sidecar}: cannot read the sidecar of {Path(onnx_path).name} ({err.strerror or err})"
        ) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{sidecar}: not valid JSON ({err})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"{sidecar}: not a tse ONNX stream sidecar (one that `tse export` writes)")
    if meta.get("version") != VERSION:
        raise ValueError(f"{sidecar}: sidecar version {meta.get('version')!r}; this tse reads version {VERSION}")
    return meta


def _session(path: str | Path, threads: int) -> Any:
    try:
        import onnxruntime as ort
    except ImportError:
        raise ValueError("ONNX Runtime is not installed: pip install 'tse-cli[onnx]'") from None
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime's own exception types (a corrupt or foreign file)
        raise ValueError(f"{path}: ONNX Runtime cannot load it ({str(err).strip().splitlines()[0]})") from None


class OnnxModel:
    """An exported streaming step as a causal model (see the module docstring). `meta`: the sidecar, when already
    read; `threads`: ONNX Runtime's intra-op threads (default: torch's count)."""

    clue_kind = "class"
    clue_rate = None
    max_classes = None
    inference_options = ()
    takes_progress = False

    def __init__(self, path: str | Path, meta: dict[str, Any] | None = None, threads: int | None = None):
        self.path = Path(path)
        self.meta = read_sidecar(self.path) if meta is None else meta
        self.sample_rate = int(self.meta["sample_rate"])
        self.label_len = int(self.meta["label_len"])
        self.arch = f"{self.meta['architecture']} (onnx)"
        self.session = _session(self.path, threads or torch.get_num_threads())

    @property
    def latency_samples(self) -> int:
        """The model's algorithmic latency (input waiting for a whole chunk comes on top of it)."""
        return int(self.meta["latency_samples"])

    def streamer(self, clue: Tensor) -> OnnxStreamer:
        """A fresh `OnnxStreamer` for this (batch, 41) query."""
        return OnnxStreamer(self, clue)

    def forward(self, mixture: Tensor, clue: Tensor) -> Tensor:
        """mixture (batch, 1, samples) -> estimate (batch, 1, samples), through one stream."""
        streamer = self.streamer(clue)
        return torch.cat([streamer.feed(mixture), streamer.flush()], dim=-1)

    __call__ = forward

    def to(self, device: Any = None, dtype: Any = None) -> OnnxModel:
        """CPU float32 only (the graph's); anything else is a ValueError."""
        if device is not None and torch.device(device).type != "cpu":
            raise ValueError(f"the ONNX engine runs on the CPU only, not {device}")
        if dtype is not None and dtype != torch.float32:
            raise ValueError(f"the ONNX engine computes in float32, not {dtype}")
        return self

    def eval(self) -> OnnxModel:
        return self


class OnnxStreamer:
    """`feed`/`flush` over an exported step, one state set per batch row (see the module docstring)."""

    def __init__(self, model: OnnxModel, query: Tensor):
        meta = model.meta
        if query.dim() != 2 or query.shape[1] != meta["label_len"]:
            raise ValueError(f"query must be (batch, {meta['label_len']}), got {tuple(query.shape)}")
        self.session, self.meta = model.session, meta
        self.batch = query.shape[0]
        self.L, self.chunk = int(meta["hop_samples"]), int(meta["chunk_samples"])
        self.frames = int(meta["frames_per_chunk"])
        self.queries = [q[None] for q in query.detach().float().cpu().numpy()]
        self.states = [[np.zeros(s["shape"], dtype=np.float32) for s in meta["states"]] for _ in range(self.batch)]
        self.state_names = [s["name"] for s in meta["states"]]
        self.lead = np.zeros((self.batch, 0), dtype=np.float32)  # the first L samples, before any step
        self.pending = np.zeros((self.batch, 0), dtype=np.float32)  # input waiting for a whole chunk
        self.received = self.emitted = self.steps = 0
        self.finished = False

    def _step(self, chunk: np.ndarray, valid: np.ndarray | None) -> np.ndarray:
        """One step on chunk (batch, chunk_samples) -> output (batch, chunk_samples); the states move on."""
        outs = []
        for row in range(self.batch):
            feeds = {"chunk": chunk[row : row + 1], "query": self.queries[row]}
            if valid is not None:
                feeds["valid"] = valid
            feeds.update(zip(self.state_names, self.states[row], strict=True))
            out, *self.states[row] = self.session.run(None, feeds)
            outs.append(out)
        self.steps += 1
        return np.concatenate(outs, axis=0)

    def _start(self, x: np.ndarray) -> np.ndarray:
        """Put the first L samples into the `samples` state; return the rest of x."""
        need = self.L - self.lead.shape[1]
        if need > 0:
            self.lead = np.concatenate([self.lead, x[:, :need]], axis=1)
            x = x[:, need:]
            if self.lead.shape[1] == self.L:
                for row in range(self.batch):
                    self.states[row][0][0, self.L :] = self.lead[row]
        return x

    def _run(self, final_frames: int | None) -> list[np.ndarray]:
        """Steps over every whole chunk pending; `final_frames` (at the end): frames of the input in all."""
        outs = []
        while self.pending.shape[1] >= self.chunk:
            valid = None
            if self.meta["takes_valid"]:
                first = self.steps * self.frames
                limit = self.frames if final_frames is None else final_frames - first
                valid = (np.arange(self.frames) < limit).astype(np.float32)
            outs.append(self._step(self.pending[:, : self.chunk], valid))
            self.pending = self.pending[:, self.chunk :]
        return outs

    def _output(self, outs: list[np.ndarray], limit: int) -> Tensor:
        y = np.concatenate(outs, axis=1) if outs else np.zeros((self.batch, 0), dtype=np.float32)
        y = y[:, : max(0, limit - self.emitted)]
        self.emitted += y.shape[1]
        return torch.from_numpy(np.ascontiguousarray(y))[:, None]

    def feed(self, chunk: Tensor) -> Tensor:
        """Append input samples (batch, 1, n); return the output samples (batch, 1, m) that are now final."""
        if self.finished:
            raise RuntimeError("this streamer was flushed; start a new one with model.streamer(query)")
        if chunk.dim() != 3 or chunk.shape[:2] != (self.batch, 1):
            raise ValueError(f"chunk must be ({self.batch}, 1, samples), got {tuple(chunk.shape)}")
        x = chunk[:, 0].detach().float().cpu().numpy()
        self.received += x.shape[1]
        x = self._start(x)
        self.pending = np.concatenate([self.pending, x], axis=1) if self.pending.size else x
        return self._output(self._run(None), self.received)

    def flush(self) -> Tensor:
        """End the stream: the remaining output samples (batch, 1, rest)."""
        if self.finished:
            raise RuntimeError("this streamer was already flushed")
        self.finished = True
        if self.received == 0:
            return torch.zeros(self.batch, 1, 0)
        self._start(np.zeros((self.batch, self.L), dtype=np.float32))  # an input shorter than L
        frames = -(-self.received // self.L)  # `forward` computes this many frames
        steps = max(0, -(-frames // self.frames) - self.steps)  # the steps that compute the last of them
        if steps:
            pad = steps * self.chunk - self.pending.shape[1]
            self.pending = np.concatenate([self.pending, np.zeros((self.batch, pad), dtype=np.float32)], axis=1)
        return self._output(self._run(frames), self.received)
