"""Downloads against a local stand-in for the Hub (tests/hub_server.py): no test touches the network.

huggingface_hub reads HF_HUB_OFFLINE and its paths once at import; tse_cli.hub reads the environment at call
time, and the `hub_env` fixture also patches the import-time constants, so nothing here sees the user's cache
or token. The CLI tests run `tse` in a subprocess with a clean environment.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import hub_server
import pytest
from hub_server import FakeHub, closed_port_url, go_offline
from test_atomic import dead_pid

from tse_cli import hub, weights
from tse_cli.atomic import temp_owner

fake_hub, hub_env = hub_server.fake_hub, hub_server.hub_env  # fixtures

CONFIG = b'{"format": "tse-checkpoint", "arch": "waveformer-small", "config": {}}\n'
WEIGHTS = b"not really safetensors, never loaded by these tests" * 100


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """huggingface_hub retries a dead server with exponential sleeps (about 20 s); skip the waiting."""
    monkeypatch.setattr(time, "sleep", lambda seconds: None)


# ---- sources ----


def test_parse_source_forms():
    s = hub.parse_source("hf://datasets/Higobeatz/DPM-TSE@abc123/ckpts/base_v_1000.pt")
    assert (s.kind, s.repo_type, s.repo_id, s.revision, s.path) == (
        "hf",
        "dataset",
        "Higobeatz/DPM-TSE",
        "abc123",
        "ckpts/base_v_1000.pt",
    )
    m = hub.parse_source("hf://owner/repo/config.json")
    assert (m.repo_type, m.repo_id, m.revision, m.path) == ("model", "owner/repo", None, "config.json")
    assert hub.parse_source("https://example.org/a/b.pt").kind == "url"
    assert hub.parse_source("package:assets/demo/config.json").kind == "package"
    for bad in ("hf://owner/repo", "ftp://x/y", "package:../escape", "https://example.org/dir/"):
        with pytest.raises(ValueError):
            hub.parse_source(bad)


def test_env_is_read_at_call_time(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("TSE_CACHE", raising=False)
    assert hub.hub_cache() == tmp_path / "hub" and hub.tse_cache() == tmp_path / "tse"
    monkeypatch.setenv("HF_ENDPOINT", "http://mirror.local/")
    assert hub.endpoint() == "http://mirror.local"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert hub.is_offline()


# ---- Hub files ----


def test_hub_download_then_offline_reuse(hub_env, fake_hub: FakeHub, monkeypatch: pytest.MonkeyPatch):
    data = b"published weights" * 1000
    source = hub.parse_source(fake_hub.add_hub_file("Someone/Repo", "ckpts/w.pt", data, repo_type="dataset"))
    got = hub.fetch(source, sha(data))
    assert got.path.read_bytes() == data
    assert Path(hub_env["HF_HOME"]) / "hub" in got.path.parents
    assert ("GET", "/datasets/Someone/Repo/resolve/main/ckpts/w.pt") in fake_hub.requests
    assert hub.cached_path(source) == got.path

    go_offline(monkeypatch)
    seen = len(fake_hub.requests)
    again = hub.fetch(source, sha(data))
    assert again.path == got.path and again.identity == got.identity
    assert len(fake_hub.requests) == seen, "offline fetch must not touch the server"


def test_hub_checksum_mismatch_deletes_the_download(hub_env, fake_hub: FakeHub):
    data = b"tampered" * 100
    source = hub.parse_source(fake_hub.add_hub_file("Someone/Repo", "w.pt", data))
    with pytest.raises(hub.HubError, match="sha256 mismatch.*deleted") as err:
        hub.fetch(source, sha(b"the real thing"))
    assert "\n" not in str(err.value)
    assert hub.cached_path(source) is None
    blobs = Path(hub_env["HF_HOME"]) / "hub" / "models--Someone--Repo" / "blobs"
    assert not any(blobs.iterdir())


def test_hub_missing_file_and_repo(hub_env, fake_hub: FakeHub):
    fake_hub.add_hub_file("Someone/Repo", "w.pt", b"x")
    with pytest.raises(hub.HubError, match="file not found in the repo") as err:
        hub.fetch(hub.parse_source("hf://Someone/Repo/missing.pt"))
    assert "\n" not in str(err.value)
    with pytest.raises(hub.HubError, match="repo Nobody/Nothing not found"):
        hub.fetch(hub.parse_source("hf://Nobody/Nothing/w.pt"))


def test_hub_server_down(hub_env, fake_hub: FakeHub, monkeypatch: pytest.MonkeyPatch):
    data = b"weights" * 10
    cached = hub.fetch(hub.parse_source(fake_hub.add_hub_file("Someone/Repo", "w.pt", data)), sha(data))
    no_backoff(monkeypatch)
    monkeypatch.setenv("HF_ENDPOINT", closed_port_url())
    assert hub.fetch(hub.parse_source("hf://Someone/Repo/w.pt"), sha(data)).path == cached.path, "cache fallback"
    with pytest.raises(hub.OfflineError, match="cannot reach http://127.0.0.1") as err:
        hub.fetch(hub.parse_source("hf://Someone/Repo/other.pt"))
    assert "\n" not in str(err.value)


# ---- plain URLs ----


def test_url_download_then_offline_reuse(hub_env, fake_hub: FakeHub, monkeypatch: pytest.MonkeyPatch):
    ckpt, config = b"ckpt" * 500, b"{}"
    source = hub.parse_source(fake_hub.add_url("exp/default_ckpt.pt", ckpt))
    other = hub.parse_source(fake_hub.add_url("exp/default_config.json", config))
    got = hub.fetch(source)
    assert got.path.read_bytes() == ckpt and got.identity == f"sha256:{sha(ckpt)}"
    assert hub.fetch(other).path.parent == got.path.parent, "files of one URL folder stay siblings"
    assert not [p for p in got.path.parent.iterdir() if temp_owner(p.name) is not None], "no temporary is left"

    go_offline(monkeypatch)
    seen = len(fake_hub.requests)
    assert hub.fetch(source, sha(ckpt)).path == got.path
    assert len(fake_hub.requests) == seen


def test_a_download_a_killed_run_left_is_removed_by_the_next(hub_env, fake_hub: FakeHub):
    """A signal while the model loads exits at once (`signals.exit_at_once`): its `.part` stays until the next
    download into that cache folder, which removes it (its process is gone) and leaves other processes' alone."""
    source = hub.parse_source(fake_hub.add_url("exp/w.pt", b"w" * 1000))
    folder = hub._url_path(source).parent
    folder.mkdir(parents=True)
    stale = folder / f".w.pt.tse-{dead_pid()}-0123abcd.part"
    live = folder / f".w.pt.tse-{os.getppid()}-0123abcd.part"
    stale.write_bytes(b"w" * 300)
    live.write_bytes(b"w" * 300)
    assert hub.fetch(source).path.read_bytes() == b"w" * 1000
    assert not stale.exists() and live.exists()


def test_url_checksum_mismatch_and_errors(
    hub_env, fake_hub: FakeHub, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
):
    source = hub.parse_source(fake_hub.add_url("bad.pt", b"tampered"))
    with pytest.raises(hub.HubError, match="sha256 mismatch.*deleted"):
        hub.fetch(source, sha(b"the real thing"))
    assert hub.cached_path(source) is None
    assert not list(hub._url_path(source).parent.iterdir()), "no partial or bad file left behind"

    with pytest.raises(hub.HubError, match=r"file not found \(404\)"):
        hub.fetch(hub.parse_source(f"{fake_hub.endpoint}/files/missing.pt"))

    no_backoff(monkeypatch)
    with caplog.at_level(logging.WARNING), pytest.raises(hub.OfflineError, match="cannot download"):
        hub.fetch(hub.parse_source(f"{closed_port_url()}/files/w.pt"))
    assert not caplog.records, "a dead server gets our one-line error, not a warning per retry"


# ---- registry entries end to end ----


def write_registry(path: Path, fake_hub: FakeHub, pin: bool = True) -> Path:
    """A registry with one tse-checkpoint entry served by the fake hub."""
    cfg = fake_hub.add_hub_file("tse-test/tiny", "config.json", CONFIG)
    wts = fake_hub.add_hub_file("tse-test/tiny", "model.safetensors", WEIGHTS)
    pins = (f', sha256 = "{sha(CONFIG)}"', f', sha256 = "{sha(WEIGHTS)}"') if pin else ("", "")
    path.write_text(
        f"""[tiny]
description = "test entry"
architecture = "waveformer-small"
sample_rate = 44100
license = "MIT"
citation = "none"
format = "tse-checkpoint"
files.config = {{ source = "{cfg}"{pins[0]} }}
files.weights = {{ source = "{wts}"{pins[1]} }}
"""
    )
    return path


def test_empty_cache_offline_gives_instructions(hub_env, fake_hub: FakeHub, monkeypatch, tmp_path: Path):
    registry = weights.load_registry([write_registry(tmp_path / "reg.toml", fake_hub)])
    go_offline(monkeypatch)
    with pytest.raises(weights.WeightsError) as err:
        weights.resolve("tiny", registry)
    message = str(err.value)
    assert "HF_HUB_OFFLINE" in message and "tse models download tiny" in message and "--checkpoint DIR" in message
    assert "\n" not in message
    assert not fake_hub.requests


def run_tse(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tse_cli", *args], env=env, capture_output=True, text=True, timeout=120
    )


def test_cli_download_list_and_offline(hub_env, fake_hub: FakeHub, tmp_path: Path):
    env = {**hub_env, "TSE_REGISTRY": str(write_registry(tmp_path / "reg.toml", fake_hub))}
    offline = {**env, "HF_HUB_OFFLINE": "1"}

    empty = run_tse("models", "download", "tiny", env=offline)
    assert empty.returncode == 1
    assert "tse models download tiny" in empty.stderr and "Traceback" not in empty.stderr

    done = run_tse("models", "download", "tiny", env=env)
    assert done.returncode == 0, done.stderr
    folder = Path(done.stdout.strip().splitlines()[-1].split(": ", 1)[1])
    assert (folder / "config.json").read_bytes() == CONFIG

    listed = run_tse("models", "list", "--json", env=offline)
    assert listed.returncode == 0, listed.stderr
    rows = {row["name"]: row for row in json.loads(listed.stdout)}
    assert rows["tiny"]["cached"] == "yes" and rows["dpm-tse"]["cached"] == "no"
    again = run_tse("models", "download", "tiny", env=offline)
    assert again.returncode == 0 and str(folder) in again.stdout


def test_cli_download_reports_bad_checksum(hub_env, fake_hub: FakeHub, tmp_path: Path):
    registry = write_registry(tmp_path / "reg.toml", fake_hub)
    registry.write_text(registry.read_text().replace(sha(WEIGHTS), sha(b"other")))
    result = run_tse("models", "download", "tiny", env={**hub_env, "TSE_REGISTRY": str(registry)})
    assert result.returncode == 1
    assert "sha256 mismatch" in result.stderr and "Traceback" not in result.stderr


# ---- the cache is verified on every use ----


def same_stamp(path: Path) -> None:
    """Other bytes of the same size, with the old mtime put back (as `cp -p` or `touch -r` would)."""
    st = path.stat()
    path.write_bytes(bytes(255 - b for b in path.read_bytes()))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_a_replaced_or_cut_cached_file_is_caught_deleted_and_fetched_again(hub_env, fake_hub: FakeHub):
    data = b"the published weights" * 1000
    url = hub.parse_source(fake_hub.add_url("exp/w.pt", data))  # unpinned: checked against its recorded sha256
    lfs = hub.parse_source(fake_hub.add_hub_file("Someone/Repo", "w.pt", data))  # unpinned: its etag is its sha256
    for source in (url, lfs):
        cached = hub.fetch(source).path
        for damage in (
            lambda p: p.write_bytes(b"other weights" * 1000),
            lambda p: p.write_bytes(data[:1000]),
            same_stamp,
        ):
            blob = cached.resolve()
            damage(blob)
            with pytest.raises(hub.HubError, match="sha256 mismatch.*was changed or damaged after it was fetched") as e:
                hub.fetch(source)
            assert str(blob) in str(e.value) and "run again" in str(e.value) and "\n" not in str(e.value)
            assert hub.cached_path(source) is None, "the bad copy is deleted"
            cached = hub.fetch(source).path
            assert cached.read_bytes() == data, "the next fetch downloads it again"


def test_the_hash_is_recorded_and_recomputed_only_when_the_file_changes(
    hub_env, fake_hub: FakeHub, monkeypatch: pytest.MonkeyPatch
):
    data = b"weights" * 1000
    source = hub.parse_source(fake_hub.add_hub_file("Someone/Repo", "w.pt", data))
    path = hub.fetch(source, sha(data)).path.resolve()
    hashed: list[Path] = []
    real = hub.sha256_file
    monkeypatch.setattr(hub, "sha256_file", lambda p: hashed.append(Path(p)) or real(p))
    hub.fetch(source, sha(data))
    assert hashed == [], "an unchanged file is trusted from its verified-hash record"
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 1))  # same bytes, another mtime
    hub.fetch(source, sha(data))
    assert hashed == [path], "a file whose stamp changed is hashed again"


def test_a_failing_hub_is_tried_three_times_in_about_3_s(hub_env, fake_hub: FakeHub, monkeypatch):
    source = hub.parse_source(fake_hub.add_hub_file("Someone/Repo", "w.pt", b"x" * 100))
    fake_hub.faults["/Someone/Repo/resolve/main/w.pt"] = 500
    waits: list[float] = []
    monkeypatch.setattr(time, "sleep", waits.append)
    with pytest.raises(hub.HubError, match=r"the server answers HTTP 500 \(3 tries\); try again later") as err:
        hub.fetch(source)
    assert "\n" not in str(err.value)
    assert waits == list(hub.RETRY_WAITS) and sum(waits) <= 3
    assert [m for m, p in fake_hub.requests if p.endswith("/w.pt")] == ["HEAD"] * 3


def test_a_download_cut_halfway_is_one_line(hub_env, fake_hub: FakeHub, tmp_path: Path, monkeypatch):
    registry = write_registry(tmp_path / "reg.toml", fake_hub, pin=False)
    fake_hub.faults["/tse-test/tiny/resolve/main/model.safetensors"] = "cut"
    no_backoff(monkeypatch)
    with pytest.raises(hub.HubError, match="download interrupted .*run again to resume it") as err:
        hub.fetch(hub.parse_source("hf://tse-test/tiny/model.safetensors"))
    assert "\n" not in str(err.value)
    url = hub.parse_source(fake_hub.add_url("exp/w.pt", b"w" * 10_000))
    fake_hub.faults["/files/exp/w.pt"] = "cut"
    with pytest.raises(hub.HubError, match="download interrupted"):
        hub.fetch(url)
    assert hub.cached_path(url) is None
    result = run_tse("models", "download", "tiny", env={**hub_env, "TSE_REGISTRY": str(registry)})
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1 and "download interrupted" in result.stderr, result.stderr
