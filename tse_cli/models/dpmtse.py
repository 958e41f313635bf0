"""DPM-TSE (Hai et al. 2024): target sound extraction by DDIM sampling over log-mel spectrograms, then HiFi-GAN.

The network is diffusers' `UNet2DModel` on two stacked mel images, cat(noisy target mel, mixture mel), each
(batch, 1, 64 mels, frames) in [-1, 1]; the target class is an integer label whose embedding is added to the
timestep embedding. It predicts the velocity v (v-prediction) under a linear beta schedule rescaled to zero
terminal SNR, sampled with DDIM (trailing timestep spacing, x0 clipped to [-1, 1]). The extracted mel goes back
to natural-log scale and through the 16 kHz HiFi-GAN vocoder; the result is trimmed to the input length.

One model holds the U-Net and the vocoder, so one checkpoint directory holds both. `load_published` reads the
authors' files (the `{"model": state_dict}` checkpoint of the diffusers 0.18 era and the autoencoder
`first_stage.pt` whose `vocoder.` weights are the vocoder) with every key checked.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from diffusers import DDIMScheduler, UNet2DModel
from diffusers.utils.torch_utils import randn_tensor
from torch import Tensor, nn

from tse_cli.classes import FSD_CLASSES, NUM_CLASSES
from tse_cli.models.hifigan import HiFiGAN
from tse_cli.models.mel import HOP, N_MELS, SAMPLE_RATE, LogMel, denormalize, normalize
from tse_cli.models.protocol import Progress
from tse_cli.models.published import PublishedFormatError, load_strict, read_torch_file

BASE_CHANNELS = (128, 256, 512, 512)
LARGE_CHANNELS = (192, 384, 768, 768)
DOWN_BLOCKS = ("DownBlock2D", "DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D")
UP_BLOCKS = ("AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D", "UpBlock2D")
LAYERS_PER_BLOCK = 2


def class_labels(clue: Tensor) -> Tensor:
    """The (batch,) int64 class labels of a (batch, 41) multi-hot query; DPM-TSE takes exactly one class each."""
    if clue.ndim != 2 or clue.shape[-1] != NUM_CLASSES:
        raise ValueError(f"DPM-TSE expects a (batch, {NUM_CLASSES}) class query, got shape {tuple(clue.shape)}")
    if not clue.is_meta:  # no values to check on the meta device (shape-only counting)
        wrong = (clue.ne(0).sum(-1) != 1).nonzero()  # one device-to-host read per batch, not one per row
        if wrong.numel():
            active = clue[wrong[0, 0]].nonzero().flatten().tolist()
            names = ", ".join(FSD_CLASSES[i] for i in active) or "none"
            raise ValueError(f"DPM-TSE extracts exactly one class per query, got {len(active)} ({names})")
    return clue.argmax(-1)


# the model


class DPMTSE(nn.Module):
    """Mixture (batch, 1, samples) at 16 kHz + one class -> the extracted sound (batch, 1, samples).

    `channels` are the U-Net's block widths (published base (128, 256, 512, 512), large (192, 384, 768, 768)),
    `vocoder_channels` HiFi-GAN's initial width (1024). The schedule: `train_steps` linear betas from
    `beta_start` to `beta_end` (published 1000 / 1e-4 / 0.02, or the 100-step variant with 0.05) and `steps`
    DDIM steps by default (50; 30 for the variant). `window_seconds` is the clip length the model was run on
    (10 s): shorter inputs are padded to it with silent mel frames, as published. The vocoder is pretrained and
    frozen (no gradients); training fits the U-Net only.
    """

    # the model protocol (tse_cli.models.protocol): a window model (`window_samples`, set from the config)
    sample_rate = SAMPLE_RATE
    clue_kind = "class"
    clue_rate = None
    max_classes = 1  # one class label per query, as trained; a front end can refuse unions before running
    inference_options = ("steps", "eta", "generator")  # keyword arguments of `forward`
    takes_progress = True  # `forward(..., progress=)` reports every diffusion step

    def __init__(
        self,
        channels: Sequence[int] = BASE_CHANNELS,
        attention_head_dim: int = 32,
        vocoder_channels: int = 1024,
        train_steps: int = 1000,
        beta_start: float = 1e-4,
        beta_end: float = 0.02,
        steps: int = 50,
        window_seconds: float = 10.0,
    ) -> None:
        super().__init__()
        self.mel = LogMel()
        self.unet = UNet2DModel(
            in_channels=2,
            out_channels=1,
            layers_per_block=LAYERS_PER_BLOCK,
            block_out_channels=tuple(channels),
            down_block_types=DOWN_BLOCKS,
            up_block_types=UP_BLOCKS,
            attention_head_dim=attention_head_dim,
            num_class_embeds=NUM_CLASSES,
        )
        self.vocoder = HiFiGAN(num_mels=N_MELS, upsample_initial_channel=vocoder_channels).requires_grad_(False)
        self.schedule = {"num_train_timesteps": train_steps, "beta_start": beta_start, "beta_end": beta_end}
        self.steps = steps
        self.window_samples = round(window_seconds * SAMPLE_RATE)
        self.frame_multiple = 2 ** (len(channels) - 1)  # the U-Net halves the frame axis this many times

    def scheduler(self) -> DDIMScheduler:
        """A fresh DDIM scheduler with the published settings (zero terminal SNR, trailing, v, clipped x0)."""
        return _BoundedVarianceDDIM(
            **self.schedule,
            beta_schedule="linear",
            rescale_betas_zero_snr=True,
            timestep_spacing="trailing",
            prediction_type="v_prediction",
            clip_sample=True,
        )

    def velocity(self, noisy: Tensor, timestep: Tensor | int, mixture_mel: Tensor, labels: Tensor) -> Tensor:
        """The network: v for noisy target mels (batch, 1, 64, frames) given the mixture's (same shape), in [-1, 1]."""
        return self.unet(torch.cat([noisy, mixture_mel], dim=1), timestep, class_labels=labels).sample

    def mixture_mel(self, mixture: Tensor, frames: int | None = None) -> Tensor:
        """Normalised mel (batch, 1, 64, frames) of a waveform (batch, 1, samples), padded to `frames` if given."""
        return normalize(self.mel(mixture[:, 0], frames)).unsqueeze(1)

    @torch.no_grad()
    def sample(
        self,
        mixture_mel: Tensor,
        labels: Tensor,
        steps: int | None = None,
        eta: float = 1.0,
        generator: torch.Generator | None = None,
        progress: Progress | None = None,
        noise: Tensor | None = None,
    ) -> Tensor:
        """DDIM sampling: the target's normalised mel (batch, 1, 64, frames) from the mixture's.

        `noise` is the starting x_T (drawn from `generator` when omitted); `eta` 0 is deterministic DDIM, 1 the
        published setting. `progress(done, total)` is called after every step.
        """
        steps = self.steps if steps is None else steps
        train_steps = self.schedule["num_train_timesteps"]
        if not 1 <= steps <= train_steps:
            raise ValueError(f"steps must be between 1 and {train_steps}, got {steps}")
        if eta < 0:
            raise ValueError(f"eta must be >= 0, got {eta}")
        scheduler = self.scheduler()
        scheduler.set_timesteps(steps)  # timesteps stay on the CPU, as do the schedule's tables
        x = noise
        if x is None:
            x = randn_tensor(mixture_mel.shape, generator=generator, device=mixture_mel.device, dtype=mixture_mel.dtype)
        for done, t in enumerate(scheduler.timesteps, start=1):
            v = self.velocity(x, t, mixture_mel, labels)
            x = scheduler.step(v, t, x, eta=eta, generator=generator).prev_sample
            if progress is not None:
                progress(done, len(scheduler.timesteps))
        return x

    def vocode(self, mel: Tensor, samples: int) -> Tensor:
        """Normalised mel (batch, 1, 64, frames) -> waveform (batch, 1, samples), trimmed (160 * frames >= samples)."""
        weight = self.vocoder.conv_pre.weight
        return self.vocoder(denormalize(mel[:, 0]).to(weight.dtype))[..., :samples].float()

    def frames_for(self, samples: int, window: bool = True) -> int:
        """Mel frames run for `samples` input samples, padded to a multiple of the U-Net's stride.

        With `window`, at least the model's window (shorter inputs padded with silence, as published).
        """
        frames = math.ceil(samples / HOP)
        if window:
            frames = max(frames, self.window_samples // HOP)
        return math.ceil(frames / self.frame_multiple) * self.frame_multiple

    def velocity_loss(self, mixture: Tensor, target: Tensor, labels: Tensor) -> Tensor:
        """Training loss: MSE between predicted and true velocity of the target's mel at uniform random timesteps.

        `mixture`, `target`: (batch, 1, samples) at 16 kHz; `labels`: (batch,) class indices. Noise and timesteps
        come from the global torch RNG.
        """
        frames = self.frames_for(mixture.shape[-1], window=False)
        mixture_mel, target_mel = self.mixture_mel(mixture, frames), self.mixture_mel(target, frames)
        scheduler = self.scheduler()
        noise = torch.randn_like(target_mel)
        t = torch.randint(0, scheduler.config.num_train_timesteps, (target_mel.shape[0],), device=target_mel.device)
        noisy = scheduler.add_noise(target_mel, noise, t)
        predicted = self.velocity(noisy, t, mixture_mel, labels)
        return nn.functional.mse_loss(predicted.float(), scheduler.get_velocity(target_mel, noise, t))

    def forward(
        self,
        mixture: Tensor,
        clue: Tensor,
        steps: int | None = None,
        eta: float = 1.0,
        generator: torch.Generator | None = None,
        progress: Progress | None = None,
        target: Tensor | None = None,
    ) -> Tensor:
        """Extract the one class set in `clue` (batch, 41) from `mixture` (batch, 1, samples) at 16 kHz.

        Deterministic for a given `generator` state and device. Returns (batch, 1, samples) float32. With
        `target` (the clean sound, same shape as `mixture`) it returns `velocity_loss` instead, so that training
        goes through `forward` (as DistributedDataParallel needs).
        """
        labels = class_labels(clue).to(mixture.device)
        if target is not None:
            return self.velocity_loss(mixture, target, labels)
        samples = mixture.shape[-1]
        dtype = self.unet.dtype
        mixture_mel = self.mixture_mel(mixture, self.frames_for(samples)).to(dtype)
        mel = self.sample(mixture_mel, labels, steps=steps, eta=eta, generator=generator, progress=progress)
        return self.vocode(mel, samples)


class _BoundedVarianceDDIM(DDIMScheduler):
    """diffusers' DDIM with sigma_t^2 kept within 1 - alpha_prev, so that sqrt(1 - alpha_prev - sigma_t^2) is real.

    With zero terminal SNR the first step has alpha_t = 0, where sigma_t^2 equals 1 - alpha_prev exactly; in float32
    it can round a few ulps above (it does on some CPUs: cumprod's rounding differs by instruction set), and the
    step's square root of that -1e-8 made the whole sample NaN at eta > 0. Elsewhere sigma_t^2 < 1 - alpha_prev by
    far and nothing changes.
    """

    def _get_variance(self, timestep: int, prev_timestep: int) -> Tensor:
        variance = super()._get_variance(timestep, prev_timestep)
        alpha_prev = self.alphas_cumprod[prev_timestep] if prev_timestep >= 0 else self.final_alpha_cumprod
        headroom = 1 - alpha_prev
        variance = torch.minimum(variance, headroom)
        while not variance.is_meta and headroom - (variance**0.5) ** 2 < 0:  # at most a few ulps
            variance = torch.nextafter(variance, torch.zeros_like(variance))
        return variance


# published files -> model


def _prefixed(state: Any, prefix: str, source: Path, what: str) -> dict[str, Tensor]:
    """The entries of a state dict under `prefix`, with the prefix removed; an error if there are none."""
    if not isinstance(state, dict):
        raise PublishedFormatError(f"{source}: expected {what}, found a {type(state).__name__}")
    found = {k[len(prefix) :]: v for k, v in state.items() if isinstance(k, str) and k.startswith(prefix)}
    if not found:
        raise PublishedFormatError(f"{source}: no {prefix!r} weights in it (expected {what})")
    return found


def _unet_channels(unet: dict[str, Tensor]) -> list[int]:
    """Block widths of a U-Net state dict: the output channels of each down block's first resnet."""
    channels = []
    while (key := f"down_blocks.{len(channels)}.resnets.0.conv1.weight") in unet:
        channels.append(int(unet[key].shape[0]))
    return channels


def _vocoder_state(source: Path) -> dict[str, Tensor]:
    """The `vocoder.` weights (prefix removed) of a first_stage.pt or of a DPM-TSE checkpoint directory."""
    if source.is_dir():
        weights = source / "model.safetensors"
        if not weights.is_file():
            raise PublishedFormatError(f"{source}: no model.safetensors (not a checkpoint directory)")
        from safetensors.torch import load_file

        state: Any = load_file(weights)
    else:
        state = read_torch_file(source)
    vocoder = _prefixed(state, "vocoder.", source, "the HiFi-GAN vocoder")
    if "conv_pre.weight" not in vocoder:
        raise PublishedFormatError(f"{source}: vocoder weights lack conv_pre.weight")
    return vocoder


def load_vocoder(model: DPMTSE, source: str | Path) -> None:
    """Load the vocoder of `model` from a published first_stage.pt or a DPM-TSE checkpoint directory (strictly)."""
    load_strict(model.vocoder, _vocoder_state(Path(source)), source, "HiFiGAN")


def config_from_yaml(path: str | Path) -> dict[str, Any]:
    """Constructor arguments of `DPMTSE` from a published config (`src/config/DiffTSE_cls_v_*.yaml`).

    Only the variant this model implements is accepted: concat fusion, no timbre/event inputs, v-prediction.
    """
    import yaml  # PyYAML, a dependency of huggingface-hub

    path = Path(path)
    try:
        config = yaml.safe_load(path.read_text())
        ddim, wrap = config["ddim"], config["diffwrap"]
        unet = wrap["unet"]
        unsupported = [
            name
            for name, ok in (
                ("v_predictionn", ddim["v_predictionn"] is True),
                ("fusion", wrap["fusion"] == "concat"),
                ("use_timbre_feature", not wrap["use_timbre_feature"]),
                ("use_timbre_model", not wrap["use_timbre_model"]),
                ("use_event_ppg", not wrap["use_event_ppg"]),
                ("layers_per_block", unet["layers_per_block"] == LAYERS_PER_BLOCK),
                ("down_block_types", tuple(unet["down_block_types"]) == DOWN_BLOCKS),
                ("up_block_types", tuple(unet["up_block_types"]) == UP_BLOCKS),
                ("num_class_embeds", unet["num_class_embeds"] == NUM_CLASSES),
            )
            if not ok
        ]
        args = {
            "channels": [int(c) for c in unet["block_out_channels"]],
            "attention_head_dim": int(unet["attention_head_dim"]),
            "train_steps": int(ddim["num_train"]),
            "beta_start": float(ddim["beta_start"]),
            "beta_end": float(ddim["beta_end"]),
            "steps": int(ddim["num_inference"]),
        }
    except (OSError, yaml.YAMLError) as err:
        raise PublishedFormatError(f"{path}: cannot read the config ({err})") from None
    except (KeyError, TypeError, ValueError) as err:
        raise PublishedFormatError(f"{path}: not a DPM-TSE config (bad or missing entry {err})") from None
    if unsupported:
        raise PublishedFormatError(f"{path}: unsupported DPM-TSE variant (settings: {', '.join(unsupported)})")
    return args


def load_published(
    checkpoint_path: str | Path, first_stage_path: str | Path, config_path: str | Path | None = None
) -> DPMTSE:
    """Build a DPM-TSE from the authors' files, in eval mode.

    `checkpoint_path`: `{"model": state_dict}` with the U-Net under `unet.` (e.g. ckpts/base_v_1000.pt);
    `first_stage_path`: the AudioLDM autoencoder state dict whose `vocoder.` entries are the HiFi-GAN (its
    other entries are not used); `config_path`: the published YAML, else the published settings with the block
    widths read off the checkpoint (base or large). Diffusers 0.18.2 and the pinned version name every
    UNet2DModel parameter alike, so keys map by prefix (`unet.` -> `unet.`, `vocoder.` -> `vocoder.`); every
    key is checked. Files are read with `torch.load(weights_only=True)`.
    """
    from tse_cli.models import create

    checkpoint_path, first_stage_path = Path(checkpoint_path), Path(first_stage_path)
    published = read_torch_file(checkpoint_path)
    if not isinstance(published, dict) or "model" not in published:
        raise PublishedFormatError(f"{checkpoint_path}: expected a DPM-TSE checkpoint {{'model': state_dict}}")
    unet = _prefixed(published["model"], "unet.", checkpoint_path, "the DPM-TSE U-Net")
    vocoder = _vocoder_state(first_stage_path)

    args = config_from_yaml(config_path) if config_path is not None else {"channels": _unet_channels(unet)}
    if not args["channels"]:
        raise PublishedFormatError(f"{checkpoint_path}: no U-Net down blocks found (not a DPM-TSE checkpoint)")
    args["vocoder_channels"] = int(vocoder["conv_pre.weight"].shape[0])
    arch = "dpm-tse-large" if tuple(args["channels"]) == LARGE_CHANNELS else "dpm-tse"
    model = create(arch, **args)
    load_strict(model.unet, unet, checkpoint_path, "UNet2DModel")
    load_strict(model.vocoder, vocoder, first_stage_path, "HiFiGAN")
    return model.eval()
