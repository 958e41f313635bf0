"""Audio I/O: probing and validation, block reading, atomic writes, subtypes."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tse_cli.audio import (
    SUBTYPES,
    AtomicWriter,
    AudioError,
    BlockReader,
    check_subtype,
    default_subtype,
    probe,
)


def noise(channels: int, frames: int, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal((channels, frames)) * 0.2).astype(np.float32)


def test_probe_reads_the_header(tmp_path: Path) -> None:
    path = tmp_path / "a.flac"
    sf.write(str(path), noise(3, 1234).T, 22050, subtype="PCM_24")
    info = probe(path)
    assert (info.sample_rate, info.channels, info.frames, info.subtype, info.format) == (
        22050,
        3,
        1234,
        "PCM_24",
        "FLAC",
    )
    assert info.seconds == pytest.approx(1234 / 22050)


def test_probe_rejects_bad_inputs_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "empty.wav").write_bytes(b"")
    sf.write(str(tmp_path / "zero.wav"), np.zeros((0, 1), np.float32), 8000)
    (tmp_path / "text.wav").write_text("hello, not audio\n")
    (tmp_path / "corrupt.wav").write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt junkjunkjunk")
    (tmp_path / "folder.wav").mkdir()
    cases = {
        "missing.wav": "no such file",
        "empty.wav": "empty file",
        "zero.wav": "0 frames",
        "text.wav": "not a readable audio file",
        "corrupt.wav": "not a readable audio file",
        "folder.wav": "is a folder, not an audio file",
    }
    for name, reason in cases.items():
        with pytest.raises(AudioError) as err:
            probe(tmp_path / name)
        message = str(err.value)
        assert message.startswith(str(tmp_path / name)) and reason in message and "\n" not in message


def test_blocks_concatenate_to_the_file(tmp_path: Path) -> None:
    x = noise(2, 1000)
    path = tmp_path / "a.wav"
    sf.write(str(path), x.T, 8000, subtype="FLOAT")
    blocks = list(BlockReader(probe(path), 300))
    assert [b.shape for b in blocks] == [(2, 300)] * 3 + [(2, 100)]
    assert all(b.dtype == np.float32 for b in blocks)
    np.testing.assert_array_equal(np.concatenate(blocks, axis=1), x)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_blocks_reject_non_finite_samples(tmp_path: Path, bad: float) -> None:
    x = noise(2, 1000)
    x[1, 777] = bad
    path = tmp_path / "a.wav"
    sf.write(str(path), x.T, 8000, subtype="FLOAT")
    reader = BlockReader(probe(path), 256)
    with pytest.raises(AudioError, match=r"a\.wav: non-finite sample \(NaN or inf\) at frame 777"):
        list(reader)


def test_truncated_file_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "a.wav"
    sf.write(str(path), noise(1, 4000).T, 8000, subtype="PCM_16")
    info = probe(path)
    path.write_bytes(path.read_bytes()[:3000])  # header promises more than the file holds
    with pytest.raises(AudioError, match="truncated"):
        list(BlockReader(info, 1000))


@pytest.mark.parametrize("subtype", SUBTYPES)
def test_every_subtype_round_trips(tmp_path: Path, subtype: str) -> None:
    fmt = "WAV" if sf.check_format("WAV", subtype) else "FLAC"
    x = noise(2, 500)
    path = tmp_path / f"a.{fmt.lower()}"
    with AtomicWriter(path, 16000, 2, subtype, fmt) as w:
        w.write(x[:, :123])
        w.write(x[:, 123:])
    info = probe(path)
    assert (info.subtype, info.format, info.frames, info.channels) == (subtype, fmt, 500, 2)
    step = {"PCM_U8": 2**-7, "PCM_S8": 2**-7, "PCM_16": 2**-15, "PCM_24": 2**-23}.get(subtype, 1e-7)
    np.testing.assert_allclose(np.concatenate(list(BlockReader(info, 64)), axis=1), x, atol=step)


def test_atomic_writer_leaves_nothing_on_error(tmp_path: Path) -> None:
    target = tmp_path / "out.wav"
    for exc in (RuntimeError("disk full"), KeyboardInterrupt()):
        with pytest.raises(type(exc)), AtomicWriter(target, 8000, 1, "PCM_16", "WAV") as w:
            w.write(noise(1, 100))
            assert len(list(tmp_path.iterdir())) == 1  # only the hidden temporary file
            raise exc
        assert list(tmp_path.iterdir()) == []


def test_atomic_writer_keeps_old_file_until_success(tmp_path: Path) -> None:
    target = tmp_path / "out.wav"
    sf.write(str(target), np.zeros(10, np.float32), 8000)
    before = target.read_bytes()
    with pytest.raises(ValueError), AtomicWriter(target, 8000, 1, "FLOAT", "WAV") as w:
        w.write(noise(2, 10))  # wrong channel count
    assert target.read_bytes() == before and sorted(tmp_path.iterdir()) == [target]
    with AtomicWriter(target, 8000, 1, "FLOAT", "WAV") as w:
        w.write(noise(1, 50))
    assert probe(target).frames == 50 and sorted(tmp_path.iterdir()) == [target]
    umask = os.umask(0o022)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask


def test_clipping_is_counted_for_pcm_only(tmp_path: Path) -> None:
    x = np.array([[0.5, 1.5, -2.0, 1.0, -1.0]], np.float32)
    with AtomicWriter(tmp_path / "a.wav", 8000, 1, "PCM_16", "WAV") as pcm:
        pcm.write(x)
    with AtomicWriter(tmp_path / "b.wav", 8000, 1, "FLOAT", "WAV") as flt:
        flt.write(x)
    assert (pcm.clipped, flt.clipped) == (2, 0)
    np.testing.assert_allclose(sf.read(str(tmp_path / "a.wav"))[0], [0.5, 1, -1, 1, -1], atol=1e-4)
    np.testing.assert_array_equal(sf.read(str(tmp_path / "b.wav"), dtype="float32")[0], x[0])


def test_subtype_defaults_and_checks() -> None:
    assert default_subtype("PCM_24", "WAV") == "PCM_24"
    assert default_subtype("PCM_S8", "WAV") == "PCM_U8"
    assert default_subtype("PCM_U8", "FLAC") == "PCM_S8"
    assert default_subtype("FLOAT", "FLAC") == "PCM_24"
    assert default_subtype("VORBIS", "WAV") == "FLOAT"
    assert check_subtype("pcm_16", "FLAC") == "PCM_16"
    with pytest.raises(AudioError, match="FLAC cannot store FLOAT samples; use one of PCM_S8, PCM_16, PCM_24"):
        check_subtype("FLOAT", "FLAC")
    with pytest.raises(AudioError, match="unsupported subtype"):
        check_subtype("PCM_12", "WAV")


# ---- output formats, clip modes, pipes ----


def test_formats_include_the_common_ones_this_libsndfile_writes() -> None:
    from tse_cli.audio import FORMATS

    available = sf.available_formats()
    for name, major, codec in [("wav", "WAV", None), ("flac", "FLAC", None), ("ogg", "OGG", "VORBIS")]:
        assert FORMATS[name].major == major and FORMATS[name].codec == codec
    for name, major, codec in [("opus", "OGG", "OPUS"), ("mp3", "MP3", "MPEG_LAYER_III")]:
        writable = major in available and codec in sf.available_subtypes(major)
        assert (name in FORMATS) == writable, name


@pytest.mark.parametrize("name", ["wav", "flac", "ogg", "opus", "mp3", "aiff", "au", "caf", "w64", "rf64"])
def test_each_format_round_trips_through_soundfile(tmp_path: Path, name: str) -> None:
    from tse_cli.audio import FORMATS, format_of_major, format_of_suffix

    if name not in FORMATS:
        pytest.skip(f"this libsndfile does not write {name}")
    fmt = FORMATS[name]
    rate = fmt.storable_rate(44100)
    t = np.arange(rate) / rate
    x = np.stack([0.5 * np.sin(2 * np.pi * 440 * t), 0.3 * np.sin(2 * np.pi * 660 * t)]).astype(np.float32)
    path = tmp_path / f"a.{name}"
    subtype = fmt.subtype(None, "PCM_16")
    with AtomicWriter(path, rate, 2, subtype, fmt.major) as w:
        for start in range(0, x.shape[1], 5000):
            w.write(x[:, start : start + 5000])
    info = sf.info(str(path))
    assert (info.format, info.subtype, info.samplerate, info.channels) == (fmt.major, subtype, rate, 2)
    assert format_of_suffix(path) is fmt and format_of_major(info.format, info.subtype) is fmt
    y, _ = sf.read(str(path), dtype="float32", always_2d=True)
    if fmt.codec is None:
        np.testing.assert_allclose(y.T, x, atol=2**-15)
    else:  # lossy: the same tones, after the codec's delay
        assert abs(len(y) - x.shape[1]) < rate // 10
        spectrum = np.abs(np.fft.rfft(y[: rate // 2, 0] * np.hanning(rate // 2)))
        assert np.argmax(spectrum) * 2 == pytest.approx(440, abs=4)


def test_format_subtypes_and_rates() -> None:
    from tse_cli.audio import FORMATS

    assert FORMATS["wav"].subtype(None, "PCM_24") == "PCM_24"
    assert FORMATS["flac"].subtype("pcm_16", "FLOAT") == "PCM_16"
    assert FORMATS["ogg"].subtype(None, "PCM_16") == "VORBIS"
    with pytest.raises(AudioError, match="ogg is lossy"):
        FORMATS["ogg"].subtype("PCM_16", None)
    assert FORMATS["wav"].storable_rate(44100) == 44100
    if "opus" in FORMATS:
        opus = FORMATS["opus"]
        assert [opus.storable_rate(r) for r in (16000, 22050, 44100, 96000)] == [16000, 24000, 48000, 48000]


@pytest.mark.parametrize("subtype", ["PCM_16", "FLOAT"])
def test_clip_modes(tmp_path: Path, subtype: str) -> None:
    x = np.array([[0.5, 1.5, -2.0, 1.0, -1.0, 0.25]], np.float32)
    written = {}
    for mode in ("clamp", "rescale", "none"):
        path = tmp_path / f"{mode}.wav"
        with AtomicWriter(path, 8000, 1, subtype, "WAV", clip=mode) as w:
            w.write(x[:, :2])
            w.write(x[:, 2:])
        written[mode] = (w, sf.read(str(path), dtype="float32")[0])
        assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == [], "temporaries left"
    clamp, rescale, none = (written[m] for m in ("clamp", "rescale", "none"))
    step = 2**-15 if subtype == "PCM_16" else 0
    if subtype == "PCM_16":
        assert clamp[0].clipped == 2
        np.testing.assert_allclose(clamp[1], np.clip(x[0], -1, 1), atol=step)
    else:  # float keeps every value
        assert clamp[0].clipped == 0
        np.testing.assert_array_equal(clamp[1], x[0])
        np.testing.assert_array_equal(none[1], x[0])
    assert rescale[0].gain == pytest.approx(0.5) and rescale[0].peak == 2.0 and rescale[0].clipped == 0
    np.testing.assert_allclose(rescale[1], x[0] / 2, atol=step)
    assert none[0].clipped == 0


def test_rescale_leaves_nothing_on_error(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), AtomicWriter(tmp_path / "a.wav", 8000, 1, "PCM_16", "WAV", clip="rescale") as w:
        w.write(noise(1, 100) * 10)
        assert len(list(tmp_path.iterdir())) == 2  # the output's temporary and the held samples
        raise RuntimeError("disk full")
    assert list(tmp_path.iterdir()) == []


def test_spool_stdin_and_send_to_stdout(tmp_path: Path) -> None:
    import io

    from tse_cli.audio import send_to_stdout, spool_stdin

    source = tmp_path / "a.flac"
    sf.write(str(source), noise(2, 1000).T, 16000, subtype="PCM_16")
    spooled = spool_stdin(tmp_path, io.BytesIO(source.read_bytes()))
    assert spooled.read_bytes() == source.read_bytes() and probe(spooled).format == "FLAC"
    with pytest.raises(AudioError, match="standard input is empty"):
        spool_stdin(tmp_path, io.BytesIO(b""))
    out = io.BytesIO()
    send_to_stdout(source, out)
    assert out.getvalue() == source.read_bytes()
