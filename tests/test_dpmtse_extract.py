"""`tse extract --model dpm-tse` end to end: registry download (local stand-in Hub), conversion, engine, seed."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import hub_server
import numpy as np
import soundfile as sf
import torch
from hub_server import FakeHub
from safetensors.torch import load_file

fake_hub, hub_env = hub_server.fake_hub, hub_server.hub_env  # fixtures


def _pickled(obj: object) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def test_registry_model_extracts_deterministically(hub_env, fake_hub: FakeHub, fixtures: Path, tmp_path: Path):
    """The published file pair (tiny stand-ins) is downloaded, converted once and run with --steps/--seed."""
    repo = "Higobeatz/DPM-TSE"  # the packaged registry's dpm-tse entry
    checkpoint = (fixtures / "dpmtse_official_tiny" / "checkpoint.pt").read_bytes()
    vocoder = _pickled(load_file(fixtures / "hifigan16k_official_tiny" / "state_dict.safetensors"))
    fake_hub.add_hub_file(repo, "ckpts/base_v_1000.pt", checkpoint, repo_type="dataset")
    fake_hub.add_hub_file(repo, "ckpts/first_stage.pt", vocoder, repo_type="dataset")
    mixture = 0.1 * np.random.default_rng(0).standard_normal(22050).astype(np.float32)
    sf.write(tmp_path / "mix.wav", mixture, 22050, subtype="FLOAT")

    env = {**hub_env, "OMP_NUM_THREADS": "1", "TSE_CACHE": str(tmp_path / "cache")}
    outputs = []
    for name in ("a.wav", "b.wav"):
        args = ["extract", str(tmp_path / "mix.wav"), "--model", "dpm-tse", "--class", "Cough", "--device", "cpu"]
        args += ["--steps", "2", "--eta", "1", "--seed", "7", "-o", str(tmp_path / name)]
        done = subprocess.run(
            [sys.executable, "-m", "tse_cli", *args], env=env, capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, done.stderr
        audio, rate = sf.read(tmp_path / name, dtype="float32")
        assert rate == 22050 and audio.shape == mixture.shape and np.abs(audio).max() > 0
        outputs.append(audio)
    assert np.array_equal(*outputs)
    downloads = [path for method, path in fake_hub.requests if method == "GET"]
    assert len(downloads) == 2, "the published files are downloaded (and converted) once"
    assert os.listdir(tmp_path / "cache" / "converted")
