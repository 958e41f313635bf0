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
