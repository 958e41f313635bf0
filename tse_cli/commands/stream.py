"""`tse stream`: extract a target sound from audio on stdin to stdout as it arrives, with a causal model.

This module checks arguments, loads the model (`tse_cli.commands.load_model_or_exit`, as `tse extract` does) and
maps outcomes to exit codes; `tse_cli.streamio` runs the loop and `tse_cli.wavstream` reads and writes the bytes.
Usage errors (exit 2) are found before any audio is read: classes, raw-format options, the device, a window
model (checked from the registry before any download). Bad input (not WAV, unsupported format, NaN samples)
ends the stream with exit 1.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Any

import typer

from tse_cli.commands import (
    DEFAULT_MODEL,
    ENGINE_HELP,
    check_engine,
    fail,
    known_causal,
    load_model_or_exit,
    refuse_window_model,
)
from tse_cli.signals import EXIT_CLOSED

if TYPE_CHECKING:
    import numpy as np
    import torch

    from tse_cli.wavstream import PcmFormat

DEFAULT_CHUNK = 416  # the published Waveformer hop: 13 frames of 32 samples, 9.4 ms at 44.1 kHz
EXIT_INTERRUPTED = 130  # 128 + SIGINT


def stream(
    classes: list[str] = typer.Option(
        None, "-c", "--class", help="Target sound class (repeat for a union; `tse classes` lists them)."
    ),
    model: str | None = typer.Option(None, "--model", "-m", help=f"Registry model name \\[default: {DEFAULT_MODEL}]."),
    checkpoint: str | None = typer.Option(
        None, "--checkpoint", help="A checkpoint directory or a Hub repo `owner/repo\\[@revision]`."
    ),
    raw: bool = typer.Option(False, "--raw", help="stdin is raw PCM (interleaved, little-endian), not WAV."),
    rate: int | None = typer.Option(None, "--rate", min=1, help="Raw input: sample rate in Hz (required)."),
    channels: int | None = typer.Option(None, "--channels", min=1, help="Raw input: channels \\[default: 1]."),
    dtype: str | None = typer.Option(
        None, "--dtype", help="Raw input: uint8 int16 int24 int32 float32 float64 \\[default: int16]."
    ),
    out_format: str = typer.Option("wav", "--format", help="Output: wav (streamed header, length unknown) or raw."),
    out_dtype: str | None = typer.Option(
        None, "--out-dtype", help="Output sample format, as --dtype \\[default: the input's]."
    ),
    chunk: int = typer.Option(
        DEFAULT_CHUNK, "--chunk", min=1, help="Input frames per block (9.4 ms at 44.1 kHz); any value is exact."
    ),
    sample_rate: str = typer.Option("keep", "--sample-rate", help="keep: the input's rate; model: the model's."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda, cuda:N or auto."),
    engine: str = typer.Option("torch", "--engine", help=ENGINE_HELP),
    verbose: bool = typer.Option(
        False, "-v", "--verbose", help="Report latency and real-time factor on stderr every few seconds."
    ),
) -> None:
    """Extract a target sound from audio on stdin to stdout as it arrives, with a causal model.

    Live: `arecord -f S16_LE -r 44100 | tse stream -c Bark | aplay`; files: `tse stream -c Bark < in.wav > out.wav`.

    WAV (or raw PCM, --raw) on stdin, WAV (or raw) on stdout: each block of --chunk frames is written once read.

    Delay: one chunk, the model's lookahead, compute. The output equals `tse extract` on the same audio.

    End of input or Ctrl-C: the rest of the output is written, then tse exits. Causal models only.

    Exit codes: 0 the input ended, 1 bad input or model, 2 usage error, 130 interrupted, 141 stdout closed.
    """
    from tse_cli.classes import UnknownClassError, class_indices, multi_hot
    from tse_cli.wavstream import DTYPES, PcmFormat

    if model is not None and checkpoint is not None:
        raise fail("give either --model or --checkpoint, not both", code=2)
    if sample_rate not in ("keep", "model"):
        raise fail(f"--sample-rate must be keep or model, not {sample_rate!r}", code=2)
    if out_format not in ("wav", "raw"):
        raise fail(f"--format must be wav or raw, not {out_format!r}", code=2)
    if raw and rate is None:
        raise fail("--raw needs --rate HZ (and --channels, --dtype unless 1 and int16)", code=2)
    if not raw and (rate, channels, dtype) != (None, None, None):
        raise fail("--rate, --channels and --dtype describe raw input; add --raw (WAV input has a header)", code=2)
    for name, value in (("--dtype", dtype), ("--out-dtype", out_dtype)):
        if value is not None and value not in DTYPES:
            raise fail(f"{name} {value!r}: choose one of {', '.join(DTYPES)}", code=2)
    try:
        indices = class_indices(classes or [])
    except UnknownClassError as err:
        raise fail(str(err), code=2) from None
    if not indices:
        raise fail("give at least one --class (`tse classes` lists them)", code=2)

    from tse_cli import console
    from tse_cli.devices import DeviceError, resolve_device
    from tse_cli.models.protocol import model_kind
    from tse_cli.runinfo import report_run

    try:
        torch_device = resolve_device(check_engine(engine, device))
    except DeviceError as err:
        raise fail(str(err), code=2) from None
    raw_format = PcmFormat(rate, channels or 1, dtype or "int16") if raw else None
    spec = checkpoint or model or DEFAULT_MODEL
    try:
        refuse_window_model(spec, known_causal(spec), "tse stream", "use tse extract for this one")  # no download
        net = load_model_or_exit(spec, str(torch_device), indices, default=not (model or checkpoint), engine=engine)
        refuse_window_model(spec, model_kind(net) == "stream", "tse stream", "use tse extract for this one")
        if verbose:  # `tse stream -v` is `tse -v stream`: what it runs with, then latency and RTF
            console.set_verbose(True)
        verbose = console.verbose()
        report_run(net, torch_device, spec=spec)
        for name, fd, advice in (("stdin", 0, "pipe audio in"), ("stdout", 1, "redirect it to a file or a player")):
            if os.isatty(fd):
                raise fail(f"{name} is a terminal; {advice}", code=2)
        settings = {"chunk": chunk, "wav": out_format == "wav", "keep_rate": sample_rate == "keep"}
        code = _run(net, multi_hot(indices), raw_format, out_dtype, torch_device, verbose, **settings)
    except KeyboardInterrupt:  # before the stream started (loading the model)
        code = EXIT_INTERRUPTED
    if code:
        raise typer.Exit(code)


def _run(
    net: Any,
    clue: np.ndarray,
    raw_format: PcmFormat | None,
    out_dtype: str | None,
    device: torch.device,
    verbose: bool,
    *,
    chunk: int,
    wav: bool,
    keep_rate: bool,
) -> int:
    """Stream stdin (WAV, or raw PCM in `raw_format`) to stdout; return the exit code."""
    from tse_cli.streamio import CausalChain, Meter, run
    from tse_cli.wavstream import ByteSink, ByteSource, PcmFormat, StreamError, read_wav_header

    def say(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    source, sink = ByteSource(0), ByteSink(1)
    try:
        with source.catch_sigint():
            in_format, data_bytes = (raw_format, None) if raw_format else read_wav_header(source.read)
            if source.interrupted:
                return EXIT_INTERRUPTED
            chain = CausalChain(net, clue, in_format.channels, in_format.sample_rate, keep_rate, device)
            out = PcmFormat(chain.out_rate, in_format.channels, out_dtype or in_format.dtype)
            if verbose:
                say(
                    f"stream: {in_format.sample_rate} Hz, {in_format.channels} channel(s), {in_format.dtype} in; "
                    f"{out.sample_rate} Hz {out.dtype} {'wav' if wav else 'raw'} out; chunk {chunk} frames "
                    f"({1e3 * chunk / in_format.sample_rate:.1f} ms) + model latency "
                    f"{1e3 * chain.latency_samples / chain.model_rate:.1f} ms"
                )
            meter = Meter(in_format.sample_rate, say) if verbose else None
            outcome = run(source, sink, chain, in_format, out, chunk=chunk, wav=wav, data_bytes=data_bytes, meter=meter)
    except StreamError as err:
        say(f"error: {err}")
        return 1
    except BrokenPipeError:  # the reader of stdout has gone (`| head`, or the player died with Ctrl-C)
        return EXIT_INTERRUPTED if source.interrupted else EXIT_CLOSED
    finally:
        source.close()
    if outcome.dropped_bytes:
        say(f"warning: stdin: ignored {outcome.dropped_bytes} bytes of an incomplete last frame")
    if outcome.clipped:
        say(f"warning: stdout: {outcome.clipped} samples clipped to [-1, 1] (use --out-dtype float32 to keep them)")
    if verbose:
        say(f"stream: {outcome.frames_in} frames in, {outcome.frames_out} frames out")
    return EXIT_INTERRUPTED if outcome.interrupted else 0


def register(app: typer.Typer) -> None:
    """Add `tse stream` to the app."""
    app.command("stream")(stream)
