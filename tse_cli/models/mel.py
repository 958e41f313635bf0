"""DPM-TSE's log-mel front end (16 kHz, 64 slaney mels, hop 160) and its [-1, 1] normalisation.

The published front end: reflect-pad (n_fft - hop) / 2 = 432 samples on both sides, STFT with a periodic Hann
window (n_fft = win = 1024, hop 160, no centring), magnitude (power 1), 64 slaney-scale mel bands with slaney
area normalisation over 0-8 kHz, natural log of max(x, 1e-5). So `n` samples give `n // 160` frames, frame `i`
centred on sample `160 * i + 80`, and 10 s give 1000 frames. The diffusion model works on the log-mel clipped to
[-12, 2.5] and mapped linearly to [-1, 1]; `denormalize` maps back to the natural-log mel the vocoder takes.
"""

from __future__ import annotations

import torch
import torchaudio
from torch import Tensor, nn

SAMPLE_RATE = 16000
N_FFT = 1024
HOP = 160
N_MELS = 64
F_MAX = 8000.0
PAD = (N_FFT - HOP) // 2  # 432
LOG_FLOOR = 1e-5
LOG_MIN, LOG_MAX = -12.0, 2.5


def num_frames(samples: int) -> int:
    """Mel frames the front end gives for `samples` samples at 16 kHz (`samples // 160`)."""
    return samples // HOP


class LogMel(nn.Module):
    """Waveform (batch, samples) at 16 kHz -> natural-log mel (batch, 64, frames).

    `frames` pads the result on the right with the log floor (silence) up to that many frames, as the published
    front end pads every clip to its window. Signals too short to reflect-pad (<= 432 samples) are first
    extended with zeros. Computed in float32 whatever the module's dtype or autocast; the filterbank and window
    are fixed buffers, not saved in checkpoints.
    """

    def __init__(self) -> None:
        super().__init__()
        device = torch.get_default_device()
        with torch.device("cpu"):  # computed on the CPU even while building on the meta device
            fbank = torchaudio.functional.melscale_fbanks(
                n_freqs=N_FFT // 2 + 1,
                f_min=0.0,
                f_max=F_MAX,
                n_mels=N_MELS,
                sample_rate=SAMPLE_RATE,
                norm="slaney",
                mel_scale="slaney",
            )  # (freqs, mels)
        self.register_buffer("fbank", fbank.to(device), persistent=False)
        self.register_buffer("window", torch.hann_window(N_FFT), persistent=False)

    @torch.no_grad()
    def forward(self, wave: Tensor, frames: int | None = None) -> Tensor:
        with torch.autocast("cpu" if wave.is_meta else wave.device.type, enabled=False):
            return self._log_mel(wave.float(), frames)

    def _log_mel(self, wave: Tensor, frames: int | None) -> Tensor:
        if wave.shape[-1] <= PAD:
            wave = nn.functional.pad(wave, (0, PAD + 1 - wave.shape[-1]))
        padded = nn.functional.pad(wave.unsqueeze(1), (PAD, PAD), mode="reflect").squeeze(1)
        spec = torch.stft(
            padded,
            N_FFT,
            hop_length=HOP,
            win_length=N_FFT,
            window=self.window.float(),
            center=False,
            return_complex=True,
        ).abs()  # (batch, freqs, frames)
        mel = torch.matmul(spec.transpose(-1, -2), self.fbank.float()).transpose(-1, -2)
        if frames is not None and frames > mel.shape[-1]:
            mel = nn.functional.pad(mel, (0, frames - mel.shape[-1]))
        return torch.log(torch.clamp(mel, min=LOG_FLOOR))


def normalize(log_mel: Tensor) -> Tensor:
    """Natural-log mel -> the diffusion model's range: clip to [-12, 2.5], map linearly to [-1, 1]."""
    return 2 * (log_mel.clamp(LOG_MIN, LOG_MAX) - LOG_MIN) / (LOG_MAX - LOG_MIN) - 1


def denormalize(x: Tensor) -> Tensor:
    """The inverse of `normalize` (after clipping to [-1, 1]): natural-log mel for the vocoder."""
    return (x.clamp(-1.0, 1.0) + 1) / 2 * (LOG_MAX - LOG_MIN) + LOG_MIN
