"""`tse stream` over real pipes (subprocesses) equals `tse extract` on the same audio for any chunk size, on WAV
and raw input, with and without resampling; it writes output before its input ends, flushes the tail at the end
of the input and on SIGINT, and refuses window models and bad streams in one line. WAV stream headers and the
byte loop are also checked in-process."""

from __future__ import annotations

import io
import os
import signal
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from typer.testing import CliRunner

from tse_cli.checkpoint import load_checkpoint
from tse_cli.cli import app
from tse_cli.streamio import CausalChain, Meter, run
from tse_cli.wavstream import DTYPES, ByteSink, ByteSource, Encoder, PcmFormat, StreamError, read_wav_header, wav_header

ROOT = Path(__file__).resolve().parents[1]
RATE = 44100
TIMEOUT = 300  # seconds for one subprocess (several start at once on a loaded 2-core machine)


@pytest.fixture(scope="module")
def ckpt(tiny_checkpoint) -> dict[str, Path]:
    """Tiny random checkpoints: the two causal families and a window model."""
    return {name: tiny_checkpoint(name) for name in ("waveformer-large", "wavemamba-large", "av-sepformer-small")}


def noise(frames: int, channels: int, seed: int = 0) -> np.ndarray:
    """(frames, channels) float32 noise, a tenth of full scale."""
    return (0.1 * np.random.default_rng(seed).standard_normal((frames, channels))).astype(np.float32)


def wav_bytes(x: np.ndarray, rate: int, subtype: str) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, x, rate, subtype=subtype, format="WAV")
    return buffer.getvalue()


def command(*args: object) -> list[str]:
    return [sys.executable, "-m", "tse_cli", "stream", *map(str, args)]


ENV = {**os.environ, "OMP_NUM_THREADS": "1"}  # as the in-process extract below (tests run on one thread)


def tse_stream(*args: object, data: bytes) -> subprocess.CompletedProcess:
    """`tse stream ARGS` in a subprocess, `data` piped to stdin, stdout read from a pipe."""
    return subprocess.run(command(*args), input=data, capture_output=True, timeout=TIMEOUT, env=ENV, cwd=ROOT)


def extract(tmp_path: Path, x: np.ndarray, rate: int, *args: object, subtype: str = "FLOAT") -> np.ndarray:
    """`tse extract` (in-process) on x (frames, channels) at `rate`, read back as float32 (frames, channels)."""
    mix, out = tmp_path / "extract-in.wav", tmp_path / "extract-out.wav"
    sf.write(str(mix), x, rate, subtype=subtype)
    result = CliRunner().invoke(app, ["extract", str(mix), "-o", str(out), "--overwrite", "-q", *map(str, args)])
    assert result.exit_code == 0, result.stderr
    return sf.read(str(out), dtype="float32", always_2d=True)[0]


def read_wav(data: bytes) -> tuple[np.ndarray, int]:
    return sf.read(io.BytesIO(data), dtype="float32", always_2d=True)


# equal to tse extract ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("chunk", [1, 37, 1001])
def test_wav_pipe_equals_extract(tmp_path: Path, ckpt: dict[str, Path], chunk: int) -> None:
    """Stereo WAV through a pipe in odd chunks equals extract (whose blocks are 65536 samples)."""
    x = noise(4410, 2)
    args = ("-c", "Cough", "-c", "Bark", "--checkpoint", ckpt["waveformer-large"])
    expected = extract(tmp_path, x, RATE, *args)
    result = tse_stream(*args, "--chunk", chunk, "--out-dtype", "float32", data=wav_bytes(x, RATE, "FLOAT"))
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout[:4] == b"RIFF" and struct.unpack("<I", result.stdout[40:44])[0] == 0xFFFFFFFF  # a pipe
    streamed, rate = read_wav(result.stdout)
    assert rate == RATE and streamed.shape == x.shape and np.abs(expected).max() > 1e-3
    assert np.abs(streamed - expected).max() < 1e-5


def test_default_chunk_is_bit_identical_to_extract_blocks(tmp_path: Path, ckpt: dict[str, Path]) -> None:
    """At 416-sample blocks on both sides the 16-bit samples are identical, and -v reports latency and RTF."""
    x = noise(11025, 1, seed=1)
    args = ("-c", "Cough", "--checkpoint", ckpt["wavemamba-large"])
    expected = extract(tmp_path, x, RATE, *args, "--block-size", 416, subtype="PCM_16")
    result = tse_stream(*args, "-v", data=wav_bytes(x, RATE, "PCM_16"))
    assert result.returncode == 0, result.stderr.decode()
    streamed, _ = read_wav(result.stdout)
    assert np.array_equal(streamed, expected)
    stderr = result.stderr.decode()
    assert "chunk 416 frames (9.4 ms) + model latency 1.5 ms" in stderr and "RTF" in stderr
    assert "latency" in stderr and "11025 frames in, 11025 frames out" in stderr


@pytest.mark.parametrize(("chunk", "dtype"), [(128, "int24"), (333, "float32")])
def test_raw_pipe_equals_extract(tmp_path: Path, ckpt: dict[str, Path], chunk: int, dtype: str) -> None:
    x = noise(9000, 2, seed=2)
    subtype = DTYPES[dtype][0]
    args = ("-c", "Laughter", "--checkpoint", ckpt["wavemamba-large"])
    expected = extract(tmp_path, x, RATE, *args, "--subtype", "FLOAT", subtype=subtype)
    raw = sf.read(io.BytesIO(wav_bytes(x, RATE, subtype)), dtype="float32")[0]  # what the raw bytes hold
    fmt = PcmFormat(RATE, 2, dtype)
    data, _ = Encoder(fmt).encode(raw.T)
    raw_args = ("--raw", "--rate", RATE, "--channels", 2, "--dtype", dtype, "--format", "raw", "--chunk", chunk)
    result = tse_stream(*args, *raw_args, "--out-dtype", "float32", data=data)
    assert result.returncode == 0, result.stderr.decode()
    streamed = np.frombuffer(result.stdout, "<f4").reshape(-1, 2)
    assert streamed.shape == x.shape and np.abs(streamed - expected).max() < 1e-5


@pytest.mark.parametrize("sample_rate", ["keep", "model"])
def test_resampled_stream_equals_extract(tmp_path: Path, ckpt: dict[str, Path], sample_rate: str) -> None:
    """48 kHz input: streamed through the same streaming resamplers as extract, both ways (or to 44.1 kHz)."""
    x = noise(9600, 1, seed=3)
    args = ("-c", "Cough", "--checkpoint", ckpt["waveformer-large"], "--sample-rate", sample_rate)
    expected = extract(tmp_path, x, 48000, *args)
    result = tse_stream(*args, "--chunk", 100, data=wav_bytes(x, 48000, "FLOAT"))
    assert result.returncode == 0, result.stderr.decode()
    streamed, rate = read_wav(result.stdout)
    assert rate == (48000 if sample_rate == "keep" else RATE) and streamed.shape == expected.shape
    assert np.abs(streamed - expected).max() < 1e-5


# live behaviour ------------------------------------------------------------------------------------------------


class Reader(threading.Thread):
    """Collects a pipe's bytes as they arrive."""

    def __init__(self, pipe: io.BufferedReader) -> None:
        super().__init__(daemon=True)
        self.pipe, self.data = pipe, bytearray()

    def run(self) -> None:
        while chunk := self.pipe.read1(1 << 16):
            self.data += chunk

    def wait_for(self, size: int, process: subprocess.Popen) -> None:
        deadline = time.monotonic() + TIMEOUT
        while len(self.data) < size:
            assert process.poll() is None, process.stderr.read().decode()
            assert time.monotonic() < deadline, f"only {len(self.data)} of {size} bytes arrived"
            time.sleep(0.01)


def emitted(checkpoint: Path, sizes: list[int]) -> int:
    """Output samples the checkpoint's streamer has returned after feeding chunks of `sizes`."""
    streamer = load_checkpoint(checkpoint).streamer(torch.eye(41)[:1])
    return sum(streamer.feed(torch.zeros(1, 1, n)).shape[-1] for n in sizes)


def test_writes_as_it_reads_and_sigint_flushes_the_tail(tmp_path: Path, ckpt: dict[str, Path]) -> None:
    """Output for the audio written so far arrives while stdin stays open; SIGINT then writes the held-back tail
    (the model's lookahead and its decoder group) and exits 130, the output equal to extract on what was sent."""
    checkpoint, chunk = ckpt["waveformer-large"], 416
    x = noise(12 * chunk, 1, seed=4)
    pcm, _ = Encoder(PcmFormat(RATE, 1, "int16")).encode(x.T)
    args = ("-c", "Cough", "--checkpoint", checkpoint)
    process = subprocess.Popen(
        command(*args, "--raw", "--rate", RATE, "--format", "raw"),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=ENV,
        cwd=ROOT,
    )
    reader = Reader(process.stdout)
    reader.start()
    try:
        process.stdin.write(pcm[: 2 * 5 * chunk])
        process.stdin.flush()
        reader.wait_for(2 * emitted(checkpoint, [chunk] * 5), process)  # 4 * 13 frames of 32 samples
        process.stdin.write(pcm[2 * 5 * chunk :])
        process.stdin.flush()
        reader.wait_for(2 * emitted(checkpoint, [chunk] * 12), process)  # all of it was read
        process.send_signal(signal.SIGINT)
        assert process.wait(TIMEOUT) == 130, process.stderr.read().decode()
        reader.join(TIMEOUT)
    finally:
        process.kill()
        process.stdin.close()
    streamed = np.frombuffer(bytes(reader.data), "<i2").astype(np.float32)[:, None] / 32768
    expected = extract(tmp_path, x, RATE, *args, "--block-size", chunk, subtype="PCM_16")
    assert streamed.shape == expected.shape and np.array_equal(streamed, expected)


def test_closed_stdout_exits_141_quietly(ckpt: dict[str, Path]) -> None:
    """`tse stream | head -c 100`: tse stops when its reader has gone, without a traceback."""
    process = subprocess.Popen(
        command("-c", "Cough", "--checkpoint", ckpt["wavemamba-large"], "--raw", "--rate", RATE),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=ENV,
        cwd=ROOT,
    )

    def feed() -> None:
        try:
            while process.poll() is None:
                process.stdin.write(bytes(2 * 4410))
                process.stdin.flush()
        except BrokenPipeError:
            pass

    writer = threading.Thread(target=feed, daemon=True)
    writer.start()
    try:
        assert len(process.stdout.read(100)) == 100
        process.stdout.close()
        assert process.wait(TIMEOUT) == 141
        assert process.stderr.read() == b""
    finally:
        process.kill()
        writer.join(TIMEOUT)


# errors --------------------------------------------------------------------------------------------------------


def invoke(*args: object):
    return CliRunner().invoke(app, ["stream", *map(str, args)], catch_exceptions=False)


def test_window_models_are_refused(ckpt: dict[str, Path]) -> None:
    """A window model's checkpoint is refused once loaded (an audio-visual one here: the check comes first)."""
    path = ckpt["av-sepformer-small"]
    result = invoke("-c", "Cough", "--checkpoint", path)
    assert result.exit_code == 2
    assert result.stderr == (
        f"error: model {str(path)!r} is not causal (it extracts whole windows); tse stream needs a causal "
        "model such as waveformer or wavemamba; use tse extract for this one\n"
    )


def test_registry_window_model_is_refused_before_download(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """DPM-TSE from the registry: refused from its architecture, without fetching its weights."""
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # a download attempt would fail with exit 1
    result = invoke("-c", "Cough", "--model", "dpm-tse")
    assert result.exit_code == 2 and "error: model 'dpm-tse' is not causal" in result.stderr
    assert not (tmp_path / "hf").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--raw",), "--raw needs --rate HZ"),
        (("--rate", "8000"), "--rate, --channels and --dtype describe raw input; add --raw"),
        (("--raw", "--rate", "8000", "--dtype", "int12"), "--dtype 'int12': choose one of uint8, int16"),
        (("--format", "flac"), "--format must be wav or raw, not 'flac'"),
        (("--model", "a", "--checkpoint", "b"), "give either --model or --checkpoint, not both"),
        (("-c", "Nothing"), "Nothing"),
    ],
)
def test_usage_errors(args: tuple[str, ...], message: str) -> None:
    result = invoke(*(args if "-c" in args else ("-c", "Cough", *args)))
    assert result.exit_code == 2 and message in result.stderr and result.stderr.count("\n") == 1


def test_bad_sample_ends_the_stream_in_one_line(ckpt: dict[str, Path]) -> None:
    data = wav_bytes(np.array([[0.1], [np.nan]], np.float32), RATE, "FLOAT")
    result = tse_stream("-c", "Cough", "--checkpoint", ckpt["wavemamba-large"], data=data)
    assert result.returncode == 1
    assert result.stderr.decode() == "error: stdin: non-finite sample (NaN or inf) at frame 1\n"


# in-process: WAV stream headers and the loop -------------------------------------------------------------------


@pytest.mark.parametrize("container", ["WAV", "WAVEX", "RF64"])
@pytest.mark.parametrize("dtype", list(DTYPES))
def test_wav_headers_and_samples_decode_like_libsndfile(container: str, dtype: str) -> None:
    subtype = DTYPES[dtype][0]
    if not sf.check_format(container, subtype):
        pytest.skip(f"libsndfile writes no {container} {subtype}")
    x = noise(300, 3)
    buffer = io.BytesIO()
    sf.write(buffer, x, 22050, subtype=subtype, format=container)
    buffer.seek(0)
    fmt, size = read_wav_header(buffer.read)
    assert fmt == PcmFormat(22050, 3, dtype)
    if container != "RF64":  # RF64 keeps the real size in its ds64 chunk: unknown here, read to the end
        assert size == 300 * fmt.frame_bytes
    decoded = fmt.decode(buffer.read(300 * fmt.frame_bytes))
    expected = sf.read(io.BytesIO(buffer.getvalue()), dtype="float32")[0].T
    assert np.array_equal(decoded, expected)
    encoder = Encoder(fmt)  # block by block through one writer, as the whole file was written
    encoded = b"".join(encoder.encode(decoded[:, a : a + 70])[0] for a in range(0, 300, 70))
    assert encoded == buffer.getvalue()[-len(encoded) :] and len(encoded) == 300 * fmt.frame_bytes


def test_encoder_clips_integer_formats_and_counts() -> None:
    x = np.array([[0.5, 2.0, -3.0, -1.0]], np.float32)
    data, clipped = Encoder(PcmFormat(8000, 1, "int16")).encode(x)
    assert clipped == 2 and data == wav_bytes(np.clip(x, -1, 1).T, 8000, "PCM_16")[-8:]  # as libsndfile writes
    data, clipped = Encoder(PcmFormat(8000, 1, "float32")).encode(x)
    assert clipped == 0 and np.array_equal(np.frombuffer(data, "<f4"), x[0])


def fmt_chunk(tag: int, channels: int, rate: int, bits: int) -> bytes:
    align = channels * bits // 8
    return b"fmt " + struct.pack("<IHHIIHH", 16, tag, channels, rate, rate * align, align, bits)


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (b"", "stdin: no input (empty stream)"),
        (b"OggS" + bytes(40), "stdin: not a WAV stream (starts with b'OggS"),
        (b"RIFF\0\0\0\0WAVE" + fmt_chunk(7, 1, 8000, 8) + b"data\0\0\0\0", "unsupported WAV sample format (format tag"),
        (b"RIFF\0\0\0\0WAVE" + fmt_chunk(1, 1, 8000, 12), "unsupported WAV sample format (integer PCM, 12 bits)"),
        (b"RIFF\0\0\0\0WAVEdata\0\0\0\0", "WAV data chunk before the fmt chunk"),
        (b"RIFF\0\0\0\0WAVE" + fmt_chunk(1, 1, 8000, 16), "WAV stream ends before its audio data"),
        (b"RIFF\0\0\0\0WAVELIST\xff\xff\xff\xff", "WAV chunk b'LIST' of 4294967295 bytes before the audio data"),
        (b"RIFF\0\0\0\0WAVEfmt \x10\0\0\0\1\0", "WAV stream ends inside its b'fmt ' chunk"),
    ],
)
def test_bad_wav_headers(header: bytes, message: str) -> None:
    with pytest.raises(StreamError, match="^stdin: ") as error:
        read_wav_header(io.BytesIO(header).read)
    assert message in str(error.value)


def test_streamed_header_sizes() -> None:
    fmt = PcmFormat(16000, 2, "int24")
    assert read_wav_header(io.BytesIO(wav_header(fmt)).read) == (fmt, None)
    assert read_wav_header(io.BytesIO(wav_header(fmt, 600)).read) == (fmt, 600)


def test_loop_stops_at_the_declared_size_and_completes_a_file_header(tmp_path: Path, ckpt: dict[str, Path]) -> None:
    """A known data size ends the audio before a trailing chunk; into a regular file the header gets its sizes."""
    data = wav_bytes(noise(3000, 1, seed=5), RATE, "PCM_16") + b"LIST\4\0\0\0abcd"
    x = read_wav(data)[0]
    (tmp_path / "in.wav").write_bytes(data)
    net = load_checkpoint(ckpt["wavemamba-large"])
    clue = np.eye(41, dtype=np.float32)[3]
    with open(tmp_path / "in.wav", "rb") as f_in, open(tmp_path / "out.wav", "wb") as f_out:
        source, sink = ByteSource(f_in.fileno()), ByteSink(f_out.fileno())
        fmt, size = read_wav_header(source.read)
        outcome = run(source, sink, CausalChain(net, clue, 1, RATE), fmt, fmt, chunk=500, wav=True, data_bytes=size)
        source.close()
    assert (outcome.frames_in, outcome.frames_out, outcome.interrupted) == (3000, 3000, False)
    info = sf.info(str(tmp_path / "out.wav"))
    assert (info.frames, info.samplerate, info.subtype) == (3000, RATE, "PCM_16")
    with torch.no_grad():
        expected = net(torch.from_numpy(x.T)[None], torch.from_numpy(clue)[None])[0, 0].numpy()
    assert np.abs(sf.read(str(tmp_path / "out.wav"), dtype="float32")[0] - expected).max() <= 1 / 32768


def test_meter_reports_and_warns_when_behind() -> None:
    lines: list[str] = []
    meter = Meter(1000, lines.append)
    meter.block(100, 0.05, 0.02)
    meter.emit()
    first = "stream: 0.1 s of audio, RTF 0.500, latency 70.0 ms mean, 70.0 ms max (compute 50.00 ms per output block)"
    assert lines == [first]
    meter.block(100, 0.3, None)
    meter.emit()
    assert lines[1].startswith("stream: 0.2 s of audio, RTF 3.000") and "latency" not in lines[1]
    assert lines[2].startswith("warning: compute falls behind real time (RTF 3.00 over the last")
    meter.block(100, 0.3, None)
    meter.emit(warn=False)
    assert len(lines) == 4 and lines[3].startswith("stream: 0.3 s of audio, RTF 3.000")
