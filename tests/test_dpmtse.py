"""DPM-TSE: the published network and sampler reproduced, the published loader, and extraction behaviour."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from tiny import tiny

from tse_cli.checkpoint import load_checkpoint
from tse_cli.classes import class_index, multi_hot
from tse_cli.models import create
from tse_cli.models.dpmtse import PublishedFormatError, config_from_yaml, load_published


def _relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


def _query(*names: str, batch: int = 1) -> torch.Tensor:
    return torch.tensor(multi_hot([class_index(n) for n in names])).expand(batch, -1)


@pytest.fixture(scope="module")
def published(fixtures: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The published files: checkpoint.pt + config.yaml, and a first_stage.pt holding the vocoder fixture."""
    folder = tmp_path_factory.mktemp("published")
    vocoder = load_file(fixtures / "hifigan16k_official_tiny" / "state_dict.safetensors")
    autoencoder_extra = {"encoder.conv_in.weight": torch.zeros(4, 1, 3, 3), "post_quant_conv.bias": torch.zeros(4)}
    torch.save({**autoencoder_extra, **vocoder}, folder / "first_stage.pt")
    for name in ("checkpoint.pt", "config.yaml"):
        shutil.copy(fixtures / "dpmtse_official_tiny" / name, folder / name)
    return {
        "checkpoint": folder / "checkpoint.pt",
        "config": folder / "config.yaml",
        "first_stage": folder / "first_stage.pt",
    }


@pytest.fixture(scope="module")
def model(published: dict[str, Path]) -> torch.nn.Module:
    return load_published(published["checkpoint"], published["first_stage"], published["config"])


@pytest.fixture(scope="module")
def io(fixtures: Path) -> dict[str, torch.Tensor]:
    return load_file(fixtures / "dpmtse_official_tiny" / "io.safetensors")


@pytest.fixture(scope="module")
def short_window(model: torch.nn.Module) -> torch.nn.Module:
    """The fixture model with the tiny config's 0.32 s window (32 frames) so that extraction tests stay fast."""
    small = tiny("dpm-tse")
    small.load_state_dict(model.state_dict())
    return small.eval()


# the published network and sampler


def test_scheduler_matches_published(model: torch.nn.Module, io: dict[str, torch.Tensor]) -> None:
    scheduler = model.scheduler()
    scheduler.set_timesteps(50)
    assert torch.equal(scheduler.timesteps, io["timesteps"])
    torch.testing.assert_close(scheduler.alphas_cumprod, io["alphas_cumprod"], rtol=1e-5, atol=1e-7)


def test_network_output_matches_published(model: torch.nn.Module, io: dict[str, torch.Tensor]) -> None:
    assert model.arch == "dpm-tse" and model.config["channels"] == [32, 32, 64, 64]
    with torch.no_grad():
        v = model.velocity(io["x_t"], torch.tensor(500), io["mixture_mel"], torch.tensor([class_index("Cough")]))
    assert _relative_error(v, io["v_pred_t500"]) < 1e-4


def test_ddim_sample_matches_published(model: torch.nn.Module, io: dict[str, torch.Tensor]) -> None:
    labels = torch.tensor([class_index("Cough")])
    x0 = model.sample(io["mixture_mel"], labels, steps=50, eta=0.0, noise=io["x_t"])
    assert _relative_error(x0, io["sample_50_steps_eta0"]) < 1e-4


def test_published_parameter_counts() -> None:
    with torch.device("meta"):
        base, large = create("dpm-tse"), create("dpm-tse-large")
    assert sum(p.numel() for p in base.unet.parameters()) == 106_397_569
    assert sum(p.numel() for p in large.unet.parameters()) == 239_296_321
    assert sum(p.numel() for p in base.vocoder.parameters()) == 55_264_897


def test_short_schedule_variant() -> None:
    with torch.device("meta"):
        variant = create("dpm-tse", train_steps=100, beta_end=0.05, steps=30)
    scheduler = variant.scheduler()
    scheduler.set_timesteps(variant.steps)
    assert len(scheduler.timesteps) == 30 and scheduler.timesteps[0] == 99
    assert scheduler.config.num_train_timesteps == 100 and scheduler.config.beta_end == 0.05
    assert scheduler.alphas_cumprod[-1] == 0  # zero terminal SNR


# the published file formats


def test_loader_reads_widths_from_the_weights(published: dict[str, Path]) -> None:
    model = load_published(published["checkpoint"], published["first_stage"])
    assert model.config["channels"] == [32, 32, 64, 64] and model.config["vocoder_channels"] == 64
    assert model.unet.config.attention_head_dim == 32  # not in the weights: the published value


def test_loader_lists_missing_and_unexpected_keys(published: dict[str, Path], tmp_path: Path) -> None:
    state = torch.load(published["checkpoint"], weights_only=True)["model"]
    state["unet.extra.weight"] = state.pop("unet.conv_out.bias")
    torch.save({"model": state}, tmp_path / "broken.pt")
    with pytest.raises(PublishedFormatError, match=r"broken\.pt.*missing: conv_out\.bias.*unexpected: extra\.weight"):
        load_published(tmp_path / "broken.pt", published["first_stage"], published["config"])


def test_loader_rejects_wrong_shapes(published: dict[str, Path], tmp_path: Path) -> None:
    vocoder = torch.load(published["first_stage"], weights_only=True)
    vocoder["vocoder.conv_post.bias"] = torch.zeros(2)
    torch.save(vocoder, tmp_path / "first_stage.pt")
    with pytest.raises(PublishedFormatError, match=r"first_stage\.pt.*wrong shape: conv_post\.bias"):
        load_published(published["checkpoint"], tmp_path / "first_stage.pt", published["config"])


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"not a pickle", "not a readable torch checkpoint"), (None, "no such file")],
)
def test_loader_rejects_unreadable_files(published: dict[str, Path], tmp_path: Path, content, message) -> None:
    path = tmp_path / "ckpt.pt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(PublishedFormatError, match=message):
        load_published(path, published["first_stage"])


def test_loader_rejects_the_wrong_file_kinds(published: dict[str, Path]) -> None:
    with pytest.raises(PublishedFormatError, match="expected a DPM-TSE checkpoint"):
        load_published(published["first_stage"], published["first_stage"])
    with pytest.raises(PublishedFormatError, match="no 'vocoder.' weights"):
        load_published(published["checkpoint"], published["checkpoint"])


def test_config_rejects_other_variants(published: dict[str, Path], tmp_path: Path) -> None:
    text = published["config"].read_text().replace("v_predictionn: true", "v_predictionn: false")
    (tmp_path / "eps.yaml").write_text(text)
    with pytest.raises(PublishedFormatError, match="unsupported DPM-TSE variant.*v_predictionn"):
        config_from_yaml(tmp_path / "eps.yaml")
    (tmp_path / "other.yaml").write_text("a: 1\n")
    with pytest.raises(PublishedFormatError, match="not a DPM-TSE config"):
        config_from_yaml(tmp_path / "other.yaml")


# extraction


def test_extracts_with_input_length_and_reports_progress(short_window: torch.nn.Module) -> None:
    mixture = torch.randn(2, 1, 3 * 1600 + 77)
    calls = []
    with torch.no_grad():
        out = short_window(
            mixture, _query("Bark", batch=2), steps=3, progress=lambda done, total: calls.append((done, total))
        )
    assert out.shape == mixture.shape and out.dtype == torch.float32 and torch.isfinite(out).all()
    assert calls == [(1, 3), (2, 3), (3, 3)]


def test_longer_than_window_runs_in_one_piece(short_window: torch.nn.Module) -> None:
    mixture = torch.randn(1, 1, short_window.window_samples + 500)
    with torch.no_grad():
        out = short_window(mixture, _query("Bark"), steps=1)
    assert out.shape == mixture.shape


def test_same_seed_same_audio_different_seed_different_audio(short_window: torch.nn.Module) -> None:
    mixture, clue = torch.randn(1, 1, 4000), _query("Cough")

    def run(seed: int) -> torch.Tensor:
        with torch.no_grad():
            return short_window(mixture, clue, steps=4, eta=1.0, generator=torch.Generator().manual_seed(seed))

    first, again, other = run(7), run(7), run(8)
    assert torch.equal(first, again)
    assert not torch.allclose(first, other)


def test_one_class_per_query(short_window: torch.nn.Module) -> None:
    mixture = torch.randn(1, 1, 1600)
    with pytest.raises(ValueError, match=r"exactly one class per query, got 2 \(Bark, Cough\)"):
        short_window(mixture, _query("Bark", "Cough"))
    with pytest.raises(ValueError, match="got 0"):
        short_window(mixture, torch.zeros(1, 41))


def test_rejects_bad_steps(short_window: torch.nn.Module) -> None:
    with pytest.raises(ValueError, match="steps must be between 1 and 1000"):
        short_window(torch.randn(1, 1, 1600), _query("Bark"), steps=0)


def test_runs_on_the_meta_device_for_compute_counting() -> None:
    with torch.device("meta"):
        model = tiny("dpm-tse")
        out = model(torch.zeros(2, 1, 3000), _query("Bark", batch=2), steps=3)
    assert out.shape == (2, 1, 3000) and out.is_meta


# tse convert dpm-tse


def test_convert_cli_writes_a_checkpoint_holding_both_networks(published: dict[str, Path], tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from tse_cli.cli import app

    out = tmp_path / "converted"
    args = ["convert", "dpm-tse", str(published["checkpoint"]), "--vocoder", str(published["first_stage"])]
    result = CliRunner().invoke(app, [*args, "-o", str(out)])
    assert result.exit_code == 0, result.output
    model = load_checkpoint(out)
    unet = torch.load(published["checkpoint"], weights_only=True)["model"]
    vocoder = torch.load(published["first_stage"], weights_only=True)
    for key, value in model.state_dict().items():
        assert torch.equal(value, (unet if key.startswith("unet.") else vocoder)[key]), key

    broken = CliRunner().invoke(
        app,
        [
            "convert",
            "dpm-tse",
            str(published["first_stage"]),
            "--vocoder",
            str(published["first_stage"]),
            "-o",
            str(tmp_path / "bad"),
        ],
    )
    assert broken.exit_code == 1 and "expected a DPM-TSE checkpoint" in broken.output
    assert not (tmp_path / "bad").exists()


@pytest.mark.parametrize("steps", [2, 3, 5, 10, 50])
def test_sampler_noise_never_exceeds_its_headroom(short_window: torch.nn.Module, steps: int) -> None:
    # sqrt(1 - alpha_prev - sigma^2) must stay real at eta 1, the first step (alpha_t = 0) included: it rounded to
    # -1e-8 on some CPUs and made every sample NaN.
    scheduler = short_window.scheduler()
    scheduler.set_timesteps(steps)
    for t in scheduler.timesteps:
        prev = int(t) - scheduler.config.num_train_timesteps // steps
        alpha_prev = scheduler.alphas_cumprod[prev] if prev >= 0 else scheduler.final_alpha_cumprod
        assert 1 - alpha_prev - (scheduler._get_variance(int(t), prev) ** 0.5) ** 2 >= 0
