"""The extraction engine: files in, files out, in constant memory, through any model of the protocol.

Models stay pure (tensors in, tensors out, see `tse_cli.models`); the engine owns the rest. Per group of up to
`batch_size` files it reads blocks (`tse_cli.audio.BlockReader`), resamples them to the model's rate
(`StreamResampler`), stacks every channel of every file as one batch row (mono models, channels as batch),
runs the model block by block, resamples the estimate back (or keeps the model's rate) and appends it to an
atomic writer, so neither a file nor its output is ever held whole on the device or in memory:

- causal models (`model.streamer(clue)`): each block is fed to one streamer with carried state and the rest
  flushed at the end, so the output equals `model.forward` on the whole signal for any block size;
- window models (`model.window_samples`): windows of that length with a quarter overlap, linear crossfades
  summing to one, each window through `model.forward(x, clue, **options)` (DPM-TSE's steps/eta/generator);
  visual clues (`model.clue_rate` frames per second) are sliced to each window, never beyond the frames the
  file has (a window running past the end gets fewer frames; the model aligns them). A file shorter than a
  window goes through in one piece.

Files of a group run in lockstep and have one model-rate length (and one clue length), so each file's result
equals running it alone; failures (a NaN mid-file, a truncated file) drop only their own file. `jobs > 1` reads
the next blocks and writes the previous ones in a thread pool while the model runs. Planning reads headers only
(and checks visual clues chunk by chunk); a file's reader, resamplers and clue exist only while its group runs,
and resampling kernels are shared per rate pair, so memory does not grow with the number of files.

Modules: `records` (the `Task` of each input, from plan to result, and `Progress`), `files` (one task's reader,
resamplers and writers), `windows` (blocks, windows and crossfades as pure functions of lengths), `runner` (the
`Engine`).
"""

from tse_cli.engine.records import Progress, Task
from tse_cli.engine.runner import Engine

__all__ = ["Engine", "Progress", "Task"]
