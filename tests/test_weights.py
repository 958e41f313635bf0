"""The weights registry: both copies of weights.toml, entry validation, name resolution, `tse models`."""

from __future__ import annotations

import hashlib
import inspect
import json
from importlib import import_module
from pathlib import Path

import pytest
import torch
from tiny import tiny
from typer.testing import CliRunner

from tse_cli import hub, weights
from tse_cli.checkpoint import read_config, save_checkpoint
from tse_cli.cli import app
from tse_cli.model_info import describe
from tse_cli.models import ARCHITECTURES

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()

ENTRY = """[tiny]
description = "d"
architecture = "waveformer-small"
sample_rate = 44100
license = "MIT"
citation = "c"
format = "waveformer-published"
files.checkpoint_path = { source = "hf://datasets/o/r@v1/ckpt.pt", sha256 = "%s" }
files.config_path = { source = "https://example.org/x/config.json" }
"""


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Point every cache at a temp dir and block the network (HF_HUB_OFFLINE) for these tests."""
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "TSE_CACHE", "TSE_REGISTRY"):
        monkeypatch.delenv(var, raising=False)


def test_package_copy_is_identical_to_top_level():
    top, packaged = ROOT / "weights.toml", ROOT / "tse_cli" / "weights.toml"
    assert top.read_bytes() == packaged.read_bytes(), "edit weights.toml and copy it to tse_cli/weights.toml"
    assert packaged.resolve() == weights.REGISTRY_PATH


def test_published_entries():
    registry = weights.load_registry()
    assert {"waveformer", "dpm-tse", "demo"} <= set(registry)
    wf, dpm = registry["waveformer"], registry["dpm-tse"]
    assert wf.format == "waveformer-published" and wf.sample_rate == 44100
    assert str(wf.files["checkpoint_path"].source) == "https://targetsound.cs.washington.edu/files/default_ckpt.pt"
    assert str(wf.files["config_path"].source) == "https://targetsound.cs.washington.edu/files/default_config.json"
    assert wf.architecture == "waveformer" and "default_config.json" in wf.description  # no size guessed
    assert dpm.format == "dpm-tse-published" and dpm.sample_rate == 16000
    for role, path in (("checkpoint_path", "ckpts/base_v_1000.pt"), ("first_stage_path", "ckpts/first_stage.pt")):
        source = dpm.files[role].source
        assert (source.kind, source.repo_type, source.repo_id, source.path) == (
            "hf",
            "dataset",
            "Higobeatz/DPM-TSE",
            path,
        )
    for entry in registry.values():
        assert entry.license and entry.citation and entry.description


@pytest.mark.parametrize("name", ["waveformer", "dpm-tse", "demo"])
def test_entries_match_architectures_and_converters(name: str):
    entry = weights.load_registry()[name]
    assert entry.architecture in ARCHITECTURES, f"{name}: unknown architecture {entry.architecture}"
    roles, converter = weights.FORMATS[entry.format].roles, weights.FORMATS[entry.format].converter
    if converter is not None:
        module, _, function = converter.partition(":")
        parameters = inspect.signature(getattr(import_module(module), function)).parameters
        assert set(roles) <= set(parameters), f"{converter} does not take the roles {roles}"
    info = describe(name)  # builds the architecture on the meta device: no weights needed
    assert info["sample_rate"] == entry.sample_rate
    assert info["parameters"] > 0 if "size" not in info else entry.format == "waveformer-published"
    assert info["cached"] in ("yes", "partial", "no")


def test_demo_entry_matches_packaged_files():
    entry = weights.load_registry()["demo"]
    folder = hub.PACKAGE_DIR / "assets" / "demo"
    if not (folder / "model.safetensors").is_file():
        pytest.skip("the demo model is not trained into tse_cli/assets/demo yet (issue 5)")
    for role, spec in entry.files.items():
        assert spec.sha256, f"demo: files.{role}.sha256 must be pinned"
        assert hashlib.sha256((hub.PACKAGE_DIR / spec.source.path).read_bytes()).hexdigest() == spec.sha256
    saved = read_config(folder)
    assert (saved["arch"], saved["config"]) == (entry.architecture, {**saved["config"], **entry.config})
    assert weights.cache_state(entry) == "yes"
    assert weights.load_model("demo").sample_rate == entry.sample_rate


@pytest.mark.parametrize(
    "edit, problem",
    [
        (lambda t: t.replace('format = "waveformer-published"', 'format = "pickle"'), "unknown format"),
        (lambda t: t.replace('license = "MIT"\n', ""), "missing license"),
        (lambda t: t.replace("files.config_path", "files.config"), "needs files checkpoint_path, config_path"),
        (lambda t: t.replace("hf://datasets/o/r@v1/ckpt.pt", "ftp://x/y"), "must start with hf://"),
        (lambda t: t.replace("[tiny]", '["Tiny Model"]'), "names are lowercase"),
        (lambda t: t + "\n[broken", "invalid TOML"),
    ],
)
def test_registry_errors_name_the_entry(edit, problem: str):
    with pytest.raises(weights.WeightsError, match=problem):
        weights.parse_registry(edit(ENTRY % ("0" * 64)), "reg.toml")
    with pytest.raises(weights.WeightsError, match="not 64 hex digits"):
        weights.parse_registry(ENTRY % "abc", "reg.toml")


def test_extra_registry_adds_and_overrides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    extra = tmp_path / "mine.toml"
    extra.write_text(ENTRY % ("A" * 64) + (ENTRY % ("b" * 64)).replace("[tiny]", "[waveformer]"))
    monkeypatch.setenv("TSE_REGISTRY", str(extra))
    registry = weights.load_registry()
    assert registry["tiny"].files["checkpoint_path"].sha256 == "a" * 64, "sha256 is normalised to lowercase"
    assert registry["tiny"].files["checkpoint_path"].source.revision == "v1"
    assert str(registry["waveformer"].files["config_path"].source) == "https://example.org/x/config.json"
    assert "dpm-tse" in registry


def test_unknown_names_suggest_close_ones():
    with pytest.raises(weights.UnknownModelError, match="did you mean waveformer[?]$"):
        weights.load_model("wavefomer")
    with pytest.raises(weights.UnknownModelError) as err:
        weights.resolve("dpm_tse")
    assert (
        str(err.value)
        == "unknown model 'dpm_tse': not a checkpoint directory or a registry name; did you mean dpm-tse?"
    )
    with pytest.raises(weights.UnknownModelError, match="; registry names: demo, dpm-tse, waveformer$"):
        weights.resolve("xyz")


def test_load_model_from_checkpoint_directory(tmp_path: Path):
    model = tiny("waveformer-small")
    folder = save_checkpoint(model, tmp_path / "ckpt")
    loaded = weights.load_model(str(folder))
    assert not loaded.training
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    with pytest.raises(weights.WeightsError, match="is a file"):
        weights.load_model(str(folder / "config.json"))
    with pytest.raises(weights.WeightsError, match="model.safetensors is missing"):
        (folder / "model.safetensors").unlink()
        weights.load_model(str(folder))


def test_mistyped_local_checkpoint_is_a_local_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A spec that can only be a path never reaches the Hub: `runs/bestt` beside `runs/best` is one line at once."""
    monkeypatch.chdir(tmp_path)
    save_checkpoint(tiny("waveformer-small"), tmp_path / "runs" / "best")
    monkeypatch.setattr(hub, "fetch", lambda *a, **k: pytest.fail("looked up on the Hub"))
    cases = {
        "runs/bestt": "runs/bestt: no such checkpoint directory; did you mean runs/best?",
        "./ckpt": "./ckpt: no such checkpoint directory",
        "~/no-such-tse-checkpoint": "~/no-such-tse-checkpoint: no such checkpoint directory",
        "runs/x/best": "runs/x/best: no such checkpoint directory (runs exists, runs/x does not)",
        "runs/": None,  # exists: a folder without config.json, which loading reports
    }
    for spec, message in cases.items():
        assert weights.looks_local(spec), spec
        if message is not None:
            with pytest.raises(weights.WeightsError) as err:
                weights.resolve(spec)
            assert str(err.value) == message
    assert not weights.looks_local("owner/repo") and not weights.looks_local("owner/repo@v1")
    assert not weights.looks_local("waveformer")
    (tmp_path / "mix.wav").write_bytes(b"")
    result = runner.invoke(
        app, ["extract", "mix.wav", "--checkpoint", "runs/bestt", "-c", "Cough", "-o", "out.wav", "-q"]
    )
    assert result.exit_code == 2  # names nothing: a usage error
    assert result.output == "error: runs/bestt: no such checkpoint directory; did you mean runs/best?\n"


def test_lazy_package_export():
    import tse_cli

    assert tse_cli.load_model is weights.load_model


def test_offline_registry_entry_explains_how_to_get_weights():
    with pytest.raises(weights.WeightsError) as err:
        weights.load_model("waveformer")
    assert "tse models download waveformer" in str(err.value) and "--checkpoint DIR" in str(err.value)


# ---- tse models ----


def test_models_list_json_and_table():
    result = runner.invoke(app, ["models", "list", "--json"])
    assert result.exit_code == 0, result.output
    rows = {row["name"]: row for row in json.loads(result.output)}
    assert rows["waveformer"]["cached"] == "no" and rows["dpm-tse"]["architecture"] == "dpm-tse"
    assert set(rows["demo"]) == {"name", "architecture", "sample_rate", "cached", "license", "description"}
    table = runner.invoke(app, ["models", "list"])
    assert table.exit_code == 0 and "waveformer" in table.output and "dpm-tse" in table.output


def test_models_info_without_weights():
    result = runner.invoke(app, ["models", "info", "waveformer", "--json"])
    assert result.exit_code == 0, result.output
    published = json.loads(result.output)  # its size is in default_config.json, not downloaded here
    assert "parameters" not in published and "tse models download waveformer" in published["size"]
    assert published["license"] == "MIT" and "default_ckpt.pt" in published["source"]["checkpoint_path"]
    info = json.loads(runner.invoke(app, ["models", "info", "waveformer-large", "--json"]).output)
    assert info["parameters"] == 3_878_144 and info["sample_rate"] == 44100 and info["classes"] == 41
    assert info["latency_ms"] == pytest.approx(448 / 44.1)
    mamba = json.loads(runner.invoke(app, ["models", "info", "wavemamba-large", "--json"]).output)
    assert mamba["parameters"] == 3_656_704 and mamba["latency_ms"] < info["latency_ms"]
    assert 0 < mamba["gmac_per_second"] < info["gmac_per_second"], "WaveMamba is cheaper than Waveformer"
    table = runner.invoke(app, ["models", "info", "waveformer-large"])
    assert table.exit_code == 0 and "3,878,144" in table.output


def test_models_info_dpm_tse_counts_unet_and_vocoder():
    info = describe("dpm-tse")
    assert info["parameters"] == 106_397_569 + 55_264_897 and info["window_seconds"] == 10.0
    assert info["source"]["first_stage_path"].startswith("hf://datasets/Higobeatz/DPM-TSE/")


def test_models_info_and_download_errors():
    result = runner.invoke(app, ["models", "info", "wavemamba-smal"])  # info describes bare architectures too
    assert result.exit_code == 2 and "or an architecture; did you mean wavemamba-small" in result.output
    result = runner.invoke(app, ["extract", "x.wav", "--model", "wavemamba-smal", "-c", "Cough", "-o", "o.wav"])
    assert result.exit_code == 2 and "registry name; registry names: demo" in result.output
    assert runner.invoke(app, ["models", "download"]).exit_code == 2
    offline = runner.invoke(app, ["models", "download", "waveformer"])
    assert offline.exit_code == 1 and "tse models download waveformer" in offline.output


@pytest.mark.parametrize(
    "name, hint, info_hint",
    [
        ("wavefomer", "did you mean waveformer?", "did you mean waveformer, waveformer-small, waveformer-large?"),
        ("Demo", "did you mean demo?", "did you mean demo?"),
        ("zzz", "registry names: demo, dpm-tse, waveformer", "registry names: demo, dpm-tse, waveformer"),
    ],
)
def test_unknown_model_reads_the_same_in_every_command(tmp_path: Path, name: str, hint: str, info_hint: str):
    """One line, one wording, exit 2 (a usage error), nothing written; `models info` also accepts architectures."""
    line = f"error: unknown model {name!r}: not a checkpoint directory or a registry name; {hint}\n"
    info_line = f"error: unknown model {name!r}: not a checkpoint directory, a registry name or an architecture; "
    info_line += f"{info_hint}\n"
    commands = {
        "info": ["models", "info", name],
        "download": ["models", "download", name],
        "extract": [
            "extract",
            str(tmp_path / "mix.wav"),
            "--model",
            name,
            "-c",
            "Cough",
            "-o",
            str(tmp_path / "o.wav"),
        ],
    }
    for command, args in commands.items():
        result = runner.invoke(app, args)
        expected = info_line if command == "info" else line
        assert (result.exit_code, result.stderr, result.stdout) == (2, expected, ""), command
    assert not list(tmp_path.iterdir())


def test_extract_reads_each_registry_file_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """`tse extract --model NAME` checks the class limit and loads the model from one reading of the registry."""
    import soundfile as sf

    extra = tmp_path / "mine.toml"
    extra.write_text(ENTRY % ("0" * 64))
    monkeypatch.setenv("TSE_REGISTRY", str(extra))
    parsed: list[str] = []
    parse = weights.parse_registry
    monkeypatch.setattr(weights, "parse_registry", lambda text, origin: parsed.append(origin) or parse(text, origin))
    sf.write(tmp_path / "mix.wav", 0.1 * torch.randn(4410).numpy(), 44100)
    out = tmp_path / "out.wav"
    for source in ("--model", "demo"), ("--checkpoint", str(hub.PACKAGE_DIR / "assets" / "demo")):
        parsed.clear()
        result = runner.invoke(app, ["extract", str(tmp_path / "mix.wav"), *source, "-c", "Cough", "-o", str(out)])
        assert result.exit_code == 0 and out.is_file(), result.output
        out.unlink()
        assert sorted(parsed) == (sorted([str(weights.REGISTRY_PATH), str(extra)]) if source[0] == "--model" else [])


def test_a_damaged_converted_checkpoint_says_how_to_convert_it_again(tmp_path, monkeypatch):
    from tse_cli.checkpoint import save_checkpoint
    from tse_cli.models import create

    monkeypatch.setenv("TSE_CACHE", str(tmp_path / "cache"))
    folder = save_checkpoint(create("waveformer-small", enc_dim=16, dec_dim=8, num_enc_layers=2),
                             weights.tse_cache_converted() / "tiny-0123456789abcdef")  # fmt: skip
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(weights.WeightsError, match=f"truncated or damaged.*delete {folder} to convert it again"):
        weights.load_model(str(folder))
