"""A stand-in for the Hugging Face Hub and a plain file server on 127.0.0.1, for tests (no network).

Also the pytest fixtures `fake_hub` (a running server) and `hub_env` (HF_HOME in a temp dir, HF_ENDPOINT at the
server, online, no user token), and `go_offline`. huggingface_hub reads HF_HUB_OFFLINE and its paths once at
import; tse_cli.hub reads the environment at call time, and `hub_env` also patches the import-time constants.

It answers the requests `huggingface_hub.hf_hub_download` makes (HEAD then GET on
`/{datasets/|spaces/}{owner}/{repo}/resolve/{revision}/{path}` with ETag, X-Repo-Commit and Content-Length;
404s carry X-Error-Code EntryNotFound or RepoNotFound as the Hub's do) and plain GETs on `/files/{path}`.
"""

from __future__ import annotations

import hashlib
import os
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote

import pytest

_PREFIXES = {"model": "", "dataset": "datasets/", "space": "spaces/"}


class FakeHub:
    """Serve files the test adds; `requests` records (method, path) of every request.

    `faults` maps a request path (as in `requests`) to a misbehaviour: an HTTP status (e.g. 500) answered to
    every request for it, or "cut": the headers announce the whole file but the body stops halfway and the
    connection closes (a download interrupted mid-transfer).
    """

    def __init__(self) -> None:
        self.repos: dict[str, dict[str, bytes]] = {}  # "{prefix}{owner}/{repo}" -> path -> content
        self.urls: dict[str, bytes] = {}
        self.requests: list[tuple[str, str]] = []
        self.faults: dict[str, int | str] = {}
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        """The base URL to put in HF_ENDPOINT."""
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def add_hub_file(self, repo_id: str, path: str, data: bytes, repo_type: str = "model") -> str:
        """Serve `data` as `path` in a Hub repo; returns its hf:// source string."""
        self.repos.setdefault(_PREFIXES[repo_type] + repo_id, {})[path] = data
        return f"hf://{_PREFIXES[repo_type]}{repo_id}/{path}"

    def add_url(self, path: str, data: bytes) -> str:
        """Serve `data` at a plain URL; returns that URL."""
        self.urls[path] = data
        return f"{self.endpoint}/files/{path}"

    def start(self) -> FakeHub:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:  # keep test output clean
                pass

            def do_HEAD(self) -> None:
                self._serve(body=False)

            def do_GET(self) -> None:
                self._serve(body=True)

            def _serve(self, body: bool) -> None:
                path = unquote(self.path.split("?")[0])
                hub.requests.append((self.command, path))
                fault = hub.faults.get(path)
                if isinstance(fault, int):
                    return self._reply(fault, b"server error", {}, body)
                if path.startswith("/files/"):
                    data = hub.urls.get(path[len("/files/") :])
                    return self._reply(200 if data is not None else 404, data, {}, body)
                repo, sep, rest = path.lstrip("/").partition("/resolve/")
                if not sep or repo not in hub.repos:
                    return self._reply(404, None, {"X-Error-Code": "RepoNotFound"}, body)
                revision, _, filename = rest.partition("/")
                commit = hashlib.sha1(f"{repo}@{revision}".encode()).hexdigest()
                data = hub.repos[repo].get(filename)
                if data is None:
                    return self._reply(404, None, {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": commit}, body)
                etag = f'"{hashlib.sha256(data).hexdigest()}"'
                self._reply(200, data, {"ETag": etag, "X-Repo-Commit": commit}, body)

            def _reply(self, status: int, data: bytes | None, headers: dict[str, str], body: bool) -> None:
                payload = data if data is not None else b"not found"
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if body and hub.faults.get(unquote(self.path.split("?")[0])) == "cut":
                    self.wfile.write(payload[: len(payload) // 2])
                    self.close_connection = True
                elif body:
                    self.wfile.write(payload)

        return Handler


def closed_port_url() -> str:
    """A URL on 127.0.0.1 where nothing listens (a server that is down)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


# ---- fixtures ----


@pytest.fixture
def fake_hub():
    server = FakeHub().start()
    yield server
    server.stop()


@pytest.fixture
def hub_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_hub: FakeHub) -> dict[str, str]:
    """HF_HOME in a temp dir, HF_ENDPOINT at the fake hub, online; returns the environment for subprocesses."""
    from huggingface_hub import constants

    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "TSE_CACHE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("TSE_REGISTRY", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_ENDPOINT", fake_hub.endpoint)
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "hf" / "token"))
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(tmp_path / "hf" / "stored_tokens"))
    return dict(os.environ)


def go_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
