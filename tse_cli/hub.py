"""Fetching weight files: Hugging Face Hub repos (`hf://`), plain https URLs and files inside the package.

Hub files go through `huggingface_hub.hf_hub_download` and live in its cache (`HF_HUB_CACHE`, default
`$HF_HOME/hub`); `HF_ENDPOINT`, `HF_HUB_OFFLINE` and a Hub token are honoured. URL files are downloaded with
huggingface_hub's HTTP helper into tse's own cache (`$TSE_CACHE`, default `$HF_HOME/tse`), atomically.
The environment is read at call time (huggingface_hub reads some of it once at import), so setting it after
import works too.

Verification, on every fetch: a file is checked against its pinned sha256, else against what it is known to
be (a Hub LFS file's etag is its sha256; a URL download's sha256 was recorded when it was fetched). The hash is
not recomputed each time: `verified_sha256` keeps a record per file in `$TSE_CACHE/verified/` bound to the
file's size, mtime, ctime and inode, and hashes again whenever any of them changed (a replaced, edited, cut or
copied file). A file that does not match is deleted and the error says so, in one line.

A Hub server that fails (HTTP 5xx or 429, a timeout, no connection) is tried `len(RETRY_WAITS) + 1` times
over about 3 s before the one-line error, instead of huggingface_hub's 20-odd seconds of backoff.

Source syntax: `hf://[datasets/|spaces/]owner/repo[@revision]/path/in/repo`, `https://host/path` (or
`http://`), `package:relative/path` (a file shipped inside `tse_cli/`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tse_cli.atomic import atomic_file, remove_stale, write_text
from tse_cli.errors import os_reason

PACKAGE_DIR = Path(__file__).resolve().parent
RETRY_WAITS = (1.0, 2.0)  # seconds before the 2nd and 3rd try of a Hub server that fails
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
_REPO_TYPES = {"datasets": "dataset", "spaces": "space", "models": "model"}
_TRUE = {"1", "on", "yes", "true"}
_SHA256 = re.compile(r"[0-9a-f]{64}")


class HubError(RuntimeError):
    """A weight file that cannot be fetched or fails its checksum; the message is one line for the user."""


class OfflineError(HubError):
    """Offline (HF_HUB_OFFLINE=1 or no connection) and the file is not in the cache."""


# ---- environment (read at call time) ----


def hf_home() -> Path:
    """`$HF_HOME`, else `$XDG_CACHE_HOME/huggingface`, else `~/.cache/huggingface` (huggingface_hub's rule)."""
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache")
    return Path(os.path.expanduser(os.environ.get("HF_HOME") or os.path.join(xdg, "huggingface")))


def hub_cache() -> Path:
    """The huggingface_hub cache folder: `$HF_HUB_CACHE`, else `$HF_HOME/hub`."""
    explicit = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
    return Path(os.path.expanduser(explicit)) if explicit else hf_home() / "hub"


def tse_cache() -> Path:
    """tse's cache (URL downloads, converted checkpoints): `$TSE_CACHE`, else `$HF_HOME/tse`."""
    explicit = os.environ.get("TSE_CACHE")
    return Path(os.path.expanduser(explicit)) if explicit else hf_home() / "tse"


def is_offline() -> bool:
    """True when `HF_HUB_OFFLINE` (or `TRANSFORMERS_OFFLINE`) is set to a true value."""
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return value.strip().lower() in _TRUE


def endpoint() -> str:
    """The Hub endpoint: `$HF_ENDPOINT`, else https://huggingface.co."""
    return (os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")


# ---- sources ----


@dataclass(frozen=True)
class Source:
    """Where one file comes from: `kind` is "hf", "url" or "package"."""

    kind: str
    text: str
    repo_id: str = ""
    repo_type: str = "model"
    revision: str | None = None
    path: str = ""

    def __str__(self) -> str:
        return self.text


def parse_source(text: str) -> Source:
    """Parse a source string (see the module docstring); raises ValueError naming the problem."""
    if text.startswith("hf://"):
        parts = text[len("hf://") :].split("/")
        repo_type = _REPO_TYPES.get(parts[0])
        if repo_type is not None:
            parts = parts[1:]
        if len(parts) < 3 or not all(parts):
            raise ValueError(f"{text!r}: expected hf://[datasets/]owner/repo[@revision]/path")
        repo, _, revision = parts[1].partition("@")
        return Source("hf", text, f"{parts[0]}/{repo}", repo_type or "model", revision or None, "/".join(parts[2:]))
    if text.startswith(("https://", "http://")):
        if text.endswith("/"):
            raise ValueError(f"{text!r}: a URL source must name a file")
        return Source("url", text, path=text)
    if text.startswith("package:"):
        relative = text[len("package:") :]
        if not relative or relative.startswith("/") or ".." in Path(relative).parts:
            raise ValueError(f"{text!r}: expected package:relative/path inside tse_cli")
        return Source("package", text, path=relative)
    raise ValueError(f"{text!r}: a source must start with hf://, https:// or package:")


@dataclass(frozen=True)
class Fetched:
    """A local copy of a source: `path`, and `identity`, a string that changes whenever the content does
    (the Hub's etag, the sha256 of a URL download, or the sha256 of a package file)."""

    path: Path
    identity: str


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def fetch(source: Source, sha256: str | None = None) -> Fetched:
    """A local path for `source`, downloading it if needed, checked against `sha256` when given."""
    fetcher = {"hf": _fetch_hf, "url": _fetch_url, "package": _fetch_package}[source.kind]
    return fetcher(source, sha256.lower() if sha256 else None)


def cached_path(source: Source) -> Path | None:
    """The local copy of `source` if it is already there (no network), else None."""
    if source.kind == "package":
        path = PACKAGE_DIR / source.path
        return path if path.is_file() else None
    if source.kind == "url":
        path = _url_path(source)
        return path if path.is_file() and _url_sidecar(path).is_file() else None
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(
        source.repo_id, source.path, cache_dir=hub_cache(), revision=source.revision, repo_type=source.repo_type
    )
    return Path(found) if isinstance(found, str) else None


def verified_sha256(path: Path) -> str:
    """The sha256 of `path`: from its record in `$TSE_CACHE/verified/` when the file's size, mtime, ctime and
    inode are those recorded, else hashed (and recorded, when the file did not change while it was read)."""
    resolved = path.resolve()
    record = tse_cache() / "verified" / f"{hashlib.sha256(str(resolved).encode()).hexdigest()[:32]}.json"
    before = _stamp(resolved)
    try:
        saved = json.loads(record.read_text())
        if saved["path"] == str(resolved) and saved["stamp"] == before:
            return saved["sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    digest = sha256_file(resolved)
    if _stamp(resolved) == before:
        with contextlib.suppress(OSError):  # a read-only cache: hash again next time
            record.parent.mkdir(parents=True, exist_ok=True)
            write_text(record, json.dumps({"path": str(resolved), "stamp": before, "sha256": digest}) + "\n")
    return digest


def _stamp(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


def _check(path: Path, expected: str | None, source: Source, delete: list[Path]) -> str | None:
    """`path`'s sha256 from `verified_sha256` (None when there is nothing to check it against); raises
    `_mismatch(..., cached=True)` when it is not `expected`."""
    if not expected:
        return None
    actual = verified_sha256(path)
    if actual != expected:
        raise _mismatch(source, expected, actual, delete, path)
    return actual


def _mismatch(source: Source, expected: str, actual: str, delete: list[Path], cached: Path | None) -> HubError:
    """Delete `delete` and return the error: for a fresh download (`cached` None) or for the file `cached`
    that was already in the cache (or the package) and changed since."""
    for p in delete:
        p.unlink(missing_ok=True)
    mismatch = f"{source}: sha256 mismatch: expected {expected}, got {actual}"
    if cached is None:
        return HubError(f"{mismatch} (the downloaded file was deleted)")
    fix = "it was deleted: run again to download it afresh" if delete else "reinstall tse"
    return HubError(f"{mismatch}: the file {cached} was changed or damaged after it was fetched; {fix}")


# ---- Hugging Face Hub ----


def _fetch_hf(source: Source, sha256: str | None) -> Fetched:
    import httpx2
    from huggingface_hub import constants, hf_hub_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RemoteEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    offline = is_offline() or constants.HF_HUB_OFFLINE
    where = f"{source} ({endpoint()})"
    cached = cached_path(source) is not None
    try:
        if not offline and not cached:
            _probe(source)  # a failing server: a few seconds of retries, not huggingface_hub's backoff
        with _quiet_hub_logs():
            path = hf_hub_download(
                source.repo_id,
                source.path,
                repo_type=source.repo_type,
                revision=source.revision,
                cache_dir=hub_cache(),
                endpoint=endpoint(),
                local_files_only=offline,
            )
    except RemoteEntryNotFoundError:
        raise HubError(f"{where}: file not found in the repo (404)") from None
    except GatedRepoError:
        raise HubError(f"{where}: gated repo; accept its terms on the Hub and log in (hf auth login)") from None
    except RevisionNotFoundError:
        raise HubError(f"{where}: revision {source.revision!r} not found") from None
    except RepositoryNotFoundError:
        raise HubError(f"{where}: {source.repo_type} repo {source.repo_id} not found (or private)") from None
    except LocalEntryNotFoundError as err:
        if offline:
            raise OfflineError(f"{source}: not in the cache ({hub_cache()}) and HF_HUB_OFFLINE is set") from None
        cause = err.__cause__
        reason = f" ({_one_line(cause)})" if cause else ""
        raise OfflineError(f"{source}: cannot reach {endpoint()}{reason} and the file is not cached") from None
    except HfHubHTTPError as err:  # other HTTP statuses
        status = err.response.status_code if err.response is not None else None
        if status in RETRY_STATUSES:
            tries = len(RETRY_WAITS) + 1
            raise HubError(f"{where}: the server answers HTTP {status} ({tries} tries); try again later") from None
        raise HubError(f"{where}: {_one_line(err)}") from None
    except ValueError as err:  # an invalid repo id or path
        raise HubError(f"{where}: {_one_line(err)}") from None
    except (httpx2.ConnectError, httpx2.ConnectTimeout) as err:
        reason = _one_line(err)
        raise OfflineError(f"{source}: cannot reach {endpoint()} ({reason}) and the file is not cached") from None
    except httpx2.TransportError as err:  # the connection broke during the transfer
        raise HubError(f"{where}: download interrupted ({_one_line(err)}); run again to resume it") from None
    except OSError as err:
        raise HubError(f"{where}: cannot write to the cache {hub_cache()} ({os_reason(err)})") from None
    link = Path(path)
    blob = link.resolve()
    known = sha256 or (blob.name if _SHA256.fullmatch(blob.name) else None)  # an LFS file's etag is its sha256
    if cached:
        _check(blob, known, source, [link, blob])
    elif known and (actual := verified_sha256(blob)) != known:
        raise _mismatch(source, known, actual, [link, blob], None)
    return Fetched(link, f"etag:{blob.name}")


def _probe(source: Source) -> None:
    """HEAD `source` on the Hub, trying again after each of `RETRY_WAITS` when the server fails (5xx, 429,
    timeouts, no connection); raises huggingface_hub's (or httpx's) error of the last try."""
    import httpx2
    from huggingface_hub import get_hf_file_metadata, hf_hub_url
    from huggingface_hub.errors import HfHubHTTPError

    url = hf_hub_url(
        source.repo_id, source.path, repo_type=source.repo_type, revision=source.revision, endpoint=endpoint()
    )
    for wait in (*RETRY_WAITS, None):
        try:
            get_hf_file_metadata(url, endpoint=endpoint())
            return
        except HfHubHTTPError as err:
            if wait is None or (err.response is not None and err.response.status_code not in RETRY_STATUSES):
                raise
        except httpx2.TransportError:
            if wait is None:
                raise
        time.sleep(wait)


@contextlib.contextmanager
def _quiet_hub_logs() -> Iterator[None]:
    """huggingface_hub logs a warning for each retry and resumed transfer; the user gets our one line instead."""
    hub_log = logging.getLogger("huggingface_hub")
    level = hub_log.level
    hub_log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        hub_log.setLevel(level)


# ---- plain URLs ----


def _url_path(source: Source) -> Path:
    """Cache path of a URL: files from the same URL folder share a cache folder (so they stay siblings)."""
    folder, _, name = source.path.rpartition("/")
    key = hashlib.sha256(folder.encode()).hexdigest()[:16]
    return tse_cache() / "urls" / key / name


def _url_sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _fetch_url(source: Source, sha256: str | None) -> Fetched:
    path = _url_path(source)
    sidecar = _url_sidecar(path)
    if path.is_file() and sidecar.is_file():
        actual = _check(path, sha256 or sidecar.read_text().strip(), source, [path, sidecar])
        return Fetched(path, f"sha256:{actual}")
    if is_offline():
        raise OfflineError(f"{source}: not in the cache ({path.parent}) and HF_HUB_OFFLINE is set")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale(path.parent)  # downloads a signal or a kill cut short (start-up exits at once: no cleanup)
        with atomic_file(path) as tmp:
            with tmp.open("wb") as f:
                _http_download(source, f)
            actual = sha256_file(tmp)
            if sha256 and actual != sha256:
                raise _mismatch(source, sha256, actual, [tmp], None)
        write_text(sidecar, actual + "\n")
        verified_sha256(path)  # records the hash against the file's final stamp (renaming changes its ctime)
    except OSError as err:
        raise HubError(f"{source}: cannot write to the cache {path.parent} ({os_reason(err)})") from None
    return Fetched(path, f"sha256:{actual}")


def _http_download(source: Source, f) -> None:
    """GET `source` into the open file `f` with huggingface_hub's helper, as a one-line HubError on failure."""
    import httpx2
    from huggingface_hub.errors import HfHubHTTPError
    from huggingface_hub.file_download import http_get

    try:
        with _quiet_hub_logs():  # http_get resumes a broken transfer a few times, with a warning for each try
            http_get(source.path, f, displayed_filename=source.path.rpartition("/")[2])
    except HfHubHTTPError as err:
        status = err.response.status_code if err.response is not None else "?"
        detail = "file not found (404)" if status == 404 else f"HTTP {status}"
        raise HubError(f"{source}: {detail}") from None
    except (httpx2.ConnectError, httpx2.ConnectTimeout) as err:
        raise OfflineError(f"{source}: cannot download ({_one_line(err)})") from None
    except httpx2.TransportError as err:  # the connection broke during the transfer
        raise HubError(f"{source}: download interrupted ({_one_line(err)}); run again") from None


# ---- package files ----


def _fetch_package(source: Source, sha256: str | None) -> Fetched:
    path = PACKAGE_DIR / source.path
    if not path.is_file():
        raise HubError(f"{source}: {path} is missing from the installed package")
    if not sha256:
        raise HubError(f"{source}: no sha256 pinned for this packaged file in weights.toml")
    if (actual := sha256_file(path)) != sha256:  # small files in the package: hashed on every use, no record
        raise _mismatch(source, sha256, actual, [], path)
    return Fetched(path, f"sha256:{sha256}")


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return text if len(text) <= 200 else text[:197] + "..."
