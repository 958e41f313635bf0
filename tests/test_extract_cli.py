"""`tse extract` through the real CLI on wavs written here: inputs, outputs, errors, safety, exit codes, --json."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from torch import nn
from typer.testing import CliRunner

from tse_cli.cli import app

ROOT = Path(__file__).resolve().parents[1]


def run(*args: str | Path):
    """Invoke `tse` in-process; stdout and stderr are kept apart."""
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


def write(path: Path, channels: int = 1, frames: int = 4410, rate: int = 44100, subtype: str = "PCM_16", seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    x = (np.random.default_rng(seed).standard_normal((frames, channels)) * 0.1).astype(np.float32)
    sf.write(str(path), x, rate, subtype=subtype)
    return path


def files(folder: Path) -> list[str]:
    """Every file under `folder`, relative, sorted (hidden temporary files included)."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines()]


# inputs and outputs --------------------------------------------------------------------------------------------


def test_one_file_keeps_rate_channels_subtype(tmp_path: Path, tiny: Path) -> None:
    mix = write(tmp_path / "mix.wav", channels=2, frames=11025, rate=22050, subtype="PCM_24")
    result = run("extract", mix, "--class", "cough", "--checkpoint", tiny, "-o", tmp_path / "out.wav")
    assert result.exit_code == 0, result.stderr
    info = sf.info(str(tmp_path / "out.wav"))
    assert (info.samplerate, info.channels, info.frames, info.subtype) == (22050, 2, 11025, "PCM_24")
    assert files(tmp_path) == ["mix.wav", "out.wav"]
    assert "1 done, 0 skipped, 0 failed" in result.stderr


def test_folder_tree_is_mirrored(tmp_path: Path, tiny: Path) -> None:
    src = tmp_path / "rec"
    for name in ("a.wav", "sub/b.flac", "sub/deep/c.wav"):
        write(src / name, frames=2000)
    (src / "notes.txt").write_text("not audio")
    out = src / "out"  # inside the input folder: never taken as input
    args = ("--class", "Bark", "--class", "cough", "--checkpoint", tiny, "-O", out)
    assert run("extract", src, *args).exit_code == 0
    assert files(out) == ["a_Bark+Cough.wav"]
    result = run("extract", src, *args, "--recursive", "--batch-size", "2", "--jobs", "1")
    assert result.exit_code == 0, result.stderr
    assert files(out) == ["a_Bark+Cough.wav", "sub/b_Bark+Cough.flac", "sub/deep/c_Bark+Cough.wav"]
    assert sf.info(str(out / "sub/b_Bark+Cough.flac")).format == "FLAC"
    again = run("extract", src, *args, "--recursive", "--json")
    assert [r["status"] for r in json_lines(again.stdout)] == ["skipped"] * 3


def test_globs_and_filename_template(tmp_path: Path, tiny: Path) -> None:
    for name in ("x/one.wav", "y/two.wav", "y/skip.flac"):
        write(tmp_path / "in" / name, frames=1500)
    pattern = str(tmp_path / "in" / "*" / "*.wav")
    template = "{model}/{stem}-{target}.{ext}"
    args = ("-c", "Meow", "--checkpoint", tiny, "-O", tmp_path / "out", "--filename", template)
    result = run("extract", pattern, *args, "--format", "flac")
    assert result.exit_code == 0, result.stderr
    assert files(tmp_path / "out") == [f"x/{tiny.name}/one-Meow.flac", f"y/{tiny.name}/two-Meow.flac"]  # {model}


@pytest.mark.parametrize(
    ("template", "message"),
    [("../{stem}.wav", "inside the output folder"), ("/tmp/{stem}.wav", "inside"), ("{name}.wav", "unknown field")],
)
def test_template_cannot_escape_or_invent_fields(tmp_path: Path, template: str, message: str) -> None:
    mix = write(tmp_path / "mix.wav")
    result = run(
        "extract", mix, "-c", "Bark", "--checkpoint", tmp_path / "none", "-O", tmp_path / "o", "--filename", template
    )
    assert result.exit_code == 2 and message in result.stderr
    assert not (tmp_path / "o").exists()


def test_residual_and_union_of_classes(tmp_path: Path, tiny: Path) -> None:
    mix = write(tmp_path / "mix.wav", channels=3, frames=3000, rate=16000, subtype="FLOAT")
    result = run("extract", mix, "-c", "Cough", "-c", "bark", "--checkpoint", tiny, "-O", tmp_path / "o", "--residual")
    assert result.exit_code == 0, result.stderr
    est, res = (sf.read(str(tmp_path / "o" / f"mix_{t}.wav"))[0] for t in ("Bark+Cough", "Bark+Cough_residual"))
    assert est.shape == res.shape == (3000, 3)
    np.testing.assert_allclose(res, sf.read(str(mix))[0] - est, atol=1e-6)
    one = run("extract", mix, "-c", "Cough", "--checkpoint", tiny, "-o", tmp_path / "cough.wav", "--residual")
    assert one.exit_code == 0 and (tmp_path / "cough_residual.wav").is_file()
    assert np.abs(sf.read(str(tmp_path / "cough.wav"))[0] - est).max() > 1e-4  # the query matters


def test_sample_rate_model_format_and_subtype(tmp_path: Path, tiny: Path) -> None:
    mix = write(tmp_path / "mix.wav", frames=8000, rate=16000, subtype="PCM_U8")
    args = ("-c", "Cough", "--checkpoint", tiny)
    assert run("extract", mix, *args, "-o", tmp_path / "a.wav", "--sample-rate", "model").exit_code == 0
    info = sf.info(str(tmp_path / "a.wav"))
    assert (info.samplerate, info.frames, info.subtype) == (44100, 22050, "PCM_U8")
    assert run("extract", mix, *args, "-o", tmp_path / "b.flac").exit_code == 0
    assert sf.info(str(tmp_path / "b.flac")).subtype == "PCM_S8"  # FLAC's 8-bit is signed
    assert run("extract", mix, *args, "-o", tmp_path / "c.wav", "--subtype", "double").exit_code == 0
    assert sf.info(str(tmp_path / "c.wav")).subtype == "DOUBLE"
    bad = run("extract", mix, *args, "-o", tmp_path / "d.flac", "--subtype", "FLOAT")
    assert bad.exit_code == 2 and "FLAC cannot store FLOAT" in bad.stderr
    mismatch = run("extract", mix, *args, "-o", tmp_path / "e.wav", "--format", "flac")
    assert mismatch.exit_code == 2 and "does not end in .flac" in mismatch.stderr
    assert not any((tmp_path / n).exists() for n in ("d.flac", "e.wav", "e.flac"))


# errors --------------------------------------------------------------------------------------------------------


def test_bad_inputs_fail_alone(tmp_path: Path, tiny: Path) -> None:
    src = tmp_path / "in"
    write(src / "good.wav", frames=3000)
    (src / "empty.wav").write_bytes(b"")
    sf.write(str(src / "zero.wav"), np.zeros((0, 1), np.float32), 44100)
    (src / "text.wav").write_text("not audio at all")
    (src / "corrupt.wav").write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(20))
    nan = np.zeros((3000, 1), np.float32)
    nan[2000] = np.nan
    sf.write(str(src / "nan.wav"), nan, 44100, subtype="FLOAT")
    out = tmp_path / "out"
    result = run("extract", src, src / "missing.wav", "-c", "Cough", "--checkpoint", tiny, "-O", out, "--json")
    assert result.exit_code == 1
    records = {Path(r["input"]).name: r for r in json_lines(result.stdout)}
    assert {k: r["status"] for k, r in records.items()} == {
        "corrupt.wav": "failed",
        "empty.wav": "failed",
        "good.wav": "done",
        "missing.wav": "failed",
        "nan.wav": "failed",
        "text.wav": "failed",
        "zero.wav": "failed",
    }
    reasons = {k: r["error"] for k, r in records.items() if r["error"]}
    for name, reason in {
        "missing.wav": "no such file",
        "empty.wav": "empty file",
        "zero.wav": "0 frames",
        "text.wav": "not a readable audio file",
        "corrupt.wav": "not a readable audio file",
        "nan.wav": "NaN",
    }.items():
        assert name in reasons[name] and reason in reasons[name]
        assert f"error: {reasons[name]}\n" in result.stderr  # one line each
    assert set(records["good.wav"]) >= {"input", "output", "seconds", "status", "error"}
    assert records["good.wav"]["seconds"] == pytest.approx(3000 / 44100, abs=1e-5)
    assert files(out) == ["good_Cough.wav"]


def test_unknown_class_fails_before_any_work(tmp_path: Path) -> None:
    mix = write(tmp_path / "mix.wav")
    result = run("extract", mix, "-c", "Coughing", "--checkpoint", tmp_path / "no-such-model", "-o", tmp_path / "o.wav")
    assert result.exit_code == 2
    assert "unknown class 'Coughing'; did you mean Cough" in result.stderr
    assert files(tmp_path) == ["mix.wav"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["-o", "a.wav", "-O", "dir"], "not both"),
        ([], "give -o FILE"),
        (["-o", "a.wav", "--model", "x", "--checkpoint", "y"], "not both"),
        (["-o", "a.wav", "--sample-rate", "fast"], "--sample-rate"),
        (["-o", "a.wav", "--format", "m4a"], "unsupported output format"),
        (["-o", "a.wav", "--subtype", "PCM_12"], "unsupported subtype"),
        (["-o", "a.m4a"], "cannot write .m4a"),
        (["-o", "a.wav", "--device", "tpu"], "invalid device"),
        (["-o", "mix.wav", "--overwrite"], "would overwrite its own input"),
    ],
)
def test_usage_errors_exit_2(tmp_path: Path, tiny: Path, extra: list[str], message: str) -> None:
    mix = write(tmp_path / "mix.wav")
    extra = [str(tmp_path / e) if e.endswith((".wav", ".m4a")) or e == "dir" else e for e in extra]
    checkpoint = [] if "--checkpoint" in extra else ["--checkpoint", str(tiny)]
    result = run("extract", mix, "-c", "Cough", *checkpoint, *extra)
    assert result.exit_code == 2, result.stderr
    assert message in result.stderr
    assert files(tmp_path) == ["mix.wav"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_missing_gpu_fails_before_any_work(tmp_path: Path) -> None:
    mix = write(tmp_path / "mix.wav")
    result = run("extract", mix, "-c", "Cough", "--device", "cuda:1", "-o", tmp_path / "o.wav")
    assert result.exit_code == 2 and "CUDA is not available" in result.stderr


def test_several_inputs_need_output_dir(tmp_path: Path, tiny: Path) -> None:
    a, b = write(tmp_path / "a.wav"), write(tmp_path / "b.wav")
    result = run("extract", a, b, "-c", "Cough", "--checkpoint", tiny, "-o", tmp_path / "o.wav")
    assert result.exit_code == 2 and "-o takes one input file" in result.stderr


def test_two_inputs_one_output_is_refused(tmp_path: Path, tiny: Path) -> None:
    a, b = write(tmp_path / "x" / "a.wav"), write(tmp_path / "y" / "a.wav")
    result = run("extract", a, b, "-c", "Cough", "--checkpoint", tiny, "-O", tmp_path / "o")
    assert result.exit_code == 2 and "would both write" in result.stderr


def test_unloadable_model_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "ckpt").mkdir()
    result = run(
        "extract", write(tmp_path / "m.wav"), "-c", "Cough", "--checkpoint", tmp_path / "ckpt", "-o", tmp_path / "o.wav"
    )
    assert result.exit_code == 1
    assert result.stderr.startswith("error: cannot load model") and result.stderr.count("\n") == 1


# safety --------------------------------------------------------------------------------------------------------


def test_skip_existing_unless_overwrite(tmp_path: Path, tiny: Path) -> None:
    mix = write(tmp_path / "mix.wav")
    out = tmp_path / "out.wav"
    out.write_bytes(b"precious")
    args = ("extract", mix, "-c", "Cough", "--checkpoint", tiny, "-o", out)
    skipped = run(*args, "--json")
    assert skipped.exit_code == 0 and json_lines(skipped.stdout)[0]["status"] == "skipped"
    assert out.read_bytes() == b"precious"
    done = run(*args, "--overwrite", "--json")
    assert done.exit_code == 0 and json_lines(done.stdout)[0]["status"] == "done"
    assert sf.info(str(out)).frames == 4410


@pytest.mark.parametrize("error", [OSError("No space left on device"), KeyboardInterrupt()])
def test_failure_mid_write_leaves_no_partial_file(
    tmp_path: Path, tiny: Path, monkeypatch: pytest.MonkeyPatch, error: BaseException
) -> None:
    from tse_cli.audio import AtomicWriter

    write_block = AtomicWriter.write

    def failing(self, block):
        if self.frames and self.path.name.startswith("mix"):  # mix's second block
            raise error
        write_block(self, block)

    monkeypatch.setattr(AtomicWriter, "write", failing)
    mix = write(tmp_path / "in" / "mix.wav", frames=8000)
    other = write(tmp_path / "in" / "other.wav", frames=500)  # fits in one block: unaffected
    args = ("-c", "Cough", "--checkpoint", tiny, "-O", tmp_path / "out", "--block-size", "1000", "--residual")
    result = run("extract", mix, other, *args)
    if isinstance(error, KeyboardInterrupt):
        assert result.exit_code == 130 and "interrupted" in result.stderr
        assert not (tmp_path / "out").exists() or files(tmp_path / "out") == []
    else:
        assert result.exit_code == 1 and "No space left on device" in result.stderr
        assert files(tmp_path / "out") == ["other_Cough.wav", "other_Cough_residual.wav"]


# model options -------------------------------------------------------------------------------------------------


class NoisyWindow(nn.Module):
    """A window model whose output depends on `steps` and on the generator (like a diffusion sampler)."""

    sample_rate = 16000
    clue_kind = "class"
    clue_rate = None
    max_classes = None
    inference_options = ("steps", "eta", "generator")
    takes_progress = False
    window_samples = 4000

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[dict] = []

    def forward(self, mixture, clue, steps: int = 50, eta: float = 0.0, generator=None):
        self.seen.append({"steps": steps, "eta": eta})
        noise = torch.randn(mixture.shape, generator=generator, device=mixture.device)
        return mixture * 0.5 + 0.01 * noise


class LipGain(nn.Module):
    """A visual window model: scales the audio by the clue's first value per 25 fps frame."""

    sample_rate = 16000
    clue_kind = "visual"
    clue_rate = 25.0
    max_classes = None
    inference_options = ()
    takes_progress = False
    window_samples = 16000

    def forward(self, mixture, clue):
        gain = clue[:, :, 0].repeat_interleave(640, dim=1)[:, : mixture.shape[-1]]
        return mixture * gain[:, None]


def test_diffusion_options_reach_the_model(tmp_path: Path, stand_in) -> None:
    model = NoisyWindow()
    asked = stand_in(model)
    mix = write(tmp_path / "mix.wav", frames=10000, rate=16000)
    outs = []
    for name, seed in (("a", 7), ("b", 7), ("c", 8)):
        out = tmp_path / f"{name}.wav"
        args = ("-c", "Cough", "-o", out, "--steps", "3", "--eta", "0.5", "--seed", str(seed), "--subtype", "FLOAT")
        assert run("extract", mix, *args).exit_code == 0
        outs.append(sf.read(str(out))[0])
    assert asked == ["waveformer"] * 3  # the default model
    assert model.seen and all(s == {"steps": 3, "eta": 0.5} for s in model.seen)
    np.testing.assert_array_equal(outs[0], outs[1])
    assert np.abs(outs[0] - outs[2]).max() > 1e-4


def test_options_a_model_does_not_take_are_usage_errors(tmp_path: Path, tiny: Path) -> None:
    result = run(
        "extract",
        write(tmp_path / "m.wav"),
        "-c",
        "Cough",
        "--checkpoint",
        tiny,
        "-o",
        tmp_path / "o.wav",
        "--steps",
        "5",
    )
    assert result.exit_code == 2 and "takes no option" in result.stderr


def test_visual_clues_pair_by_stem(tmp_path: Path, stand_in) -> None:
    stand_in(LipGain())
    src = tmp_path / "in"
    src.mkdir()
    for stem, gain in (("s1", 0.5), ("s2", 2.0), ("s3", 1.0)):
        sf.write(str(src / f"{stem}.wav"), np.full((16000, 1), 0.25, np.float32), 16000, subtype="FLOAT")
        if stem != "s3":
            np.save(src / f"{stem}.npy", np.full((25, 512), gain, np.float32))
    result = run("extract", src, "-O", tmp_path / "out", "--json")
    assert result.exit_code == 1
    status = {Path(r["input"]).stem: r for r in json_lines(result.stdout)}
    assert status["s1"]["status"] == status["s2"]["status"] == "done"
    assert status["s3"]["status"] == "failed" and "s3.npy" in status["s3"]["error"]
    np.testing.assert_allclose(sf.read(str(tmp_path / "out" / "s2_visual.wav"))[0], 0.5, atol=1e-6)
    with_class = run("extract", src / "s1.wav", "-c", "Cough", "-o", tmp_path / "x.wav")
    assert with_class.exit_code == 2 and "visual clue" in with_class.stderr


# end to end ----------------------------------------------------------------------------------------------------


def test_published_waveformer_fixture_any_block_size(tmp_path: Path, fixtures: Path) -> None:
    pytest.importorskip("tse_cli.models.waveformer", reason="Waveformer not built yet")
    src = fixtures / "waveformer_official_tiny"
    converted = tmp_path / "converted"
    result = run("convert", "waveformer", src / "checkpoint.pt", "--config", src / "config.json", "-o", converted)
    assert result.exit_code == 0, result.stderr
    target = json.loads((src / "meta.json").read_text())["targets"]
    expected, rate = sf.read(str(src / "expected.wav"), dtype="float32")
    for block in (1255, 1 << 16):  # odd blocks straddling chunks, and the whole second at once
        out = tmp_path / f"out{block}.wav"
        args = [a for t in target for a in ("-c", t)]
        result = run("extract", src / "mixture.wav", *args, "--checkpoint", converted, "-o", out, "--block-size", block)
        assert result.exit_code == 0, result.stderr
        info = sf.info(str(out))
        assert (info.subtype, info.samplerate) == ("FLOAT", rate)
        y, _ = sf.read(str(out), dtype="float32")
        assert np.abs(y - expected).max() < 1e-5, block


def test_console_script_subprocess(tmp_path: Path, tiny: Path) -> None:
    mix = write(tmp_path / "mix.wav", frames=2000)
    cmd = [str(ROOT / ".venv/bin/tse"), "extract", str(mix), "-c", "Cough", "--checkpoint", str(tiny)]
    done = subprocess.run([*cmd, "-O", str(tmp_path / "o"), "--json"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    (record,) = json_lines(done.stdout)
    assert record["status"] == "done" and Path(record["output"]).is_file()
    usage = subprocess.run(
        [*cmd, "-c", "Nope", "-o", str(tmp_path / "x.wav")], capture_output=True, text=True, timeout=300
    )
    assert usage.returncode == 2 and "unknown class 'Nope'" in usage.stderr


def test_input_headers_are_read_only_when_they_choose_the_format(tmp_path, monkeypatch):
    from tse_cli.commands.extract import DEFAULT_TEMPLATE
    from tse_cli.engine import Task
    from tse_cli.planning import plan_outputs

    inputs = [write(tmp_path / "in" / f"{i}.flac", frames=100, rate=8000) for i in range(3)]
    calls = []
    info = sf.info
    monkeypatch.setattr(sf, "info", lambda path, *a, **k: calls.append(path) or info(path, *a, **k))

    def plan(**options) -> list[Task]:
        planned = [Task(path, base=tmp_path / "in", target="speech") for path in inputs]
        fields = {"out_dir": tmp_path / "out", "template": DEFAULT_TEMPLATE, "model_name": "m"}
        plan_outputs(planned, **fields, subtype=None, residual=False, overwrite=False, **options)
        return planned

    assert [p.format for p in plan(output=None, fmt="wav")] == ["wav"] * 3
    assert [p.format for p in plan(output=None, fmt=None)] == ["flac"] * 3  # the inputs'
    assert calls == [str(path) for path in inputs]  # only for the second plan


def test_a_run_reads_each_header_once(tmp_path, tiny, monkeypatch):
    """Planning reads the headers that decide the output format and the engine uses them, never reading again."""
    inputs = [write(tmp_path / "in" / f"{i}.flac", frames=300) for i in range(3)]
    calls = []
    info = sf.info
    monkeypatch.setattr(sf, "info", lambda path, *a, **k: calls.append(path) or info(path, *a, **k))
    for extra in ([], ["--format", "wav"]):  # the format from the inputs' headers, or given
        out = tmp_path / f"out{len(extra)}"
        result = run("extract", tmp_path / "in", "-c", "Cough", "--checkpoint", tiny, "-O", out, *extra)
        assert result.exit_code == 0, result.stderr
        assert sorted(calls) == sorted(str(path) for path in inputs)
        calls.clear()
    assert sorted(p.name for p in (tmp_path / "out0").iterdir()) == [f"{i}_Cough.flac" for i in range(3)]
