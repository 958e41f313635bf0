"""Fetching weight files: Hugging Face Hub repos (`hf://`), plain https URLs and files inside the package.

Hub files go through `huggingface_hub.hf_hub_download` and live in its cache (`HF_HUB_CACHE`, default
`$HF_HOME/hub`); `HF_ENDPOINT`, `HF_HUB_OFFLINE` and a Hub token are honoured. URL files are downloaded with
huggingface_hub's HTTP helper into tse's own cache (`$TSE_CACHE`, default `$HF_HOME/tse`), atomically.
Every file with a pinned sha256 is checked; a mismatching download is deleted. The environment is read at
call time (huggingface_hub reads some of it once at import), so setting it after import works too.

Source syntax: `hf://[datasets/|spaces/]owner/repo[@revision]/path/in/repo`, `https://host/path` (or
`http://`), `package:relative/path` (a file shipped inside `tse_cli/`).
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from tse_cli.atomic import atomic_file, write_text

PACKAGE_DIR = Path(__file__).resolve().parent
_REPO_TYPES = {"datasets": "dataset", "spaces": "space", "models": "model"}
_TRUE = {"1", "on", "yes", "true"}


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


def _mismatch(source: Source, expected: str, actual: str, delete: list[Path]) -> HubError:
    """Delete `delete` (a bad download) and return the error to raise."""
    for p in delete:
        p.unlink(missing_ok=True)
    removed = " (the downloaded file was deleted)" if delete else ""
    return HubError(f"{source}: sha256 mismatch: expected {expected}, got {actual}{removed}")


def _check(path: Path, expected: str | None, source: Source, delete: list[Path]) -> None:
    """Raise HubError (after deleting `delete`) when `expected` is given and `path` does not hash to it."""
    if expected and (actual := sha256_file(path)) != expected:
        raise _mismatch(source, expected, actual, delete)


# ---- Hugging Face Hub ----


def _fetch_hf(source: Source, sha256: str | None) -> Fetched:
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
    try:
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
    except (HfHubHTTPError, ValueError) as err:  # other HTTP statuses; ValueError: an invalid repo id or path
        raise HubError(f"{where}: {_one_line(err)}") from None
    link = Path(path)
    blob = link.resolve()
    _check(blob, sha256, source, delete=[link, blob])
    return Fetched(link, f"etag:{blob.name}")


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
        recorded = sidecar.read_text().strip()
        if sha256 and recorded != sha256:
            raise _mismatch(source, sha256, recorded, delete=[path, sidecar])
        return Fetched(path, f"sha256:{recorded}")
    if is_offline():
        raise OfflineError(f"{source}: not in the cache ({path.parent}) and HF_HUB_OFFLINE is set")
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as tmp:
        with tmp.open("wb") as f:
            _http_download(source, f)
        actual = sha256_file(tmp)
        if sha256 and actual != sha256:
            raise _mismatch(source, sha256, actual, delete=[tmp])
    write_text(sidecar, actual + "\n")
    return Fetched(path, f"sha256:{actual}")


def _http_download(source: Source, f) -> None:
    """GET `source` into the open file `f` with huggingface_hub's helper, as a one-line HubError on failure."""
    import httpx2
    from huggingface_hub.errors import HfHubHTTPError
    from huggingface_hub.file_download import http_get

    # http_get resumes a broken transfer a few times and logs a warning for each try; the user gets our one line
    hub_log = logging.getLogger("huggingface_hub.file_download")
    level = hub_log.level
    hub_log.setLevel(logging.ERROR)
    try:
        http_get(source.path, f, displayed_filename=source.path.rpartition("/")[2])
    except HfHubHTTPError as err:
        status = err.response.status_code if err.response is not None else "?"
        detail = "file not found (404)" if status == 404 else f"HTTP {status}"
        raise HubError(f"{source}: {detail}") from None
    except (httpx2.TransportError, OSError) as err:
        raise OfflineError(f"{source}: cannot download ({_one_line(err)})") from None
    finally:
        hub_log.setLevel(level)


# ---- package files ----


def _fetch_package(source: Source, sha256: str | None) -> Fetched:
    path = PACKAGE_DIR / source.path
    if not path.is_file():
        raise HubError(f"{source}: {path} is missing from the installed package")
    if not sha256:
        raise HubError(f"{source}: no sha256 pinned for this packaged file in weights.toml")
    _check(path, sha256, source, delete=[])
    return Fetched(path, f"sha256:{sha256}")


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return text if len(text) <= 200 else text[:197] + "..."
