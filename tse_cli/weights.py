"""The weights registry (`weights.toml`) and `load_model`: from a name, a folder or a Hub repo to a model.

An entry names an architecture, its files (each a role -> source + optional sha256) and the `format` that
turns them into a model. `tse-checkpoint` files (config.json + model.safetensors) load as they are;
published upstream formats are converted once by the model module's `load_published(**files)` (which reads
pickles only with `torch.load(weights_only=True)`) and cached as a checkpoint directory under
`$TSE_CACHE/converted/`, keyed by the identity (etag or sha256) of every source file. Nothing else is
ever unpickled. Extra registries can be layered on the packaged one with `TSE_REGISTRY=path[:path...]`.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import re
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import import_module
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from tse_cli import hub

if TYPE_CHECKING:
    from torch import nn

REGISTRY_PATH = hub.PACKAGE_DIR / "weights.toml"
CHECKPOINT_FORMAT = "tse-checkpoint"


class Format(NamedTuple):
    """A weights format: the file `roles` an entry names (the converter's keyword arguments) and the
    "module:function" `converter` that builds a model from them (None: already a checkpoint directory).

    `config_role`/`config_reader`: for formats whose model size is in a published config file (Waveformer's
    default_config.json), that file's role and the "module:function" reading it into (architecture, config), so
    the size comes from the file, not from the entry."""

    roles: tuple[str, ...]
    converter: str | None
    config_role: str | None = None
    config_reader: str | None = None


FORMATS: dict[str, Format] = {
    CHECKPOINT_FORMAT: Format(("config", "weights"), None),
    "waveformer-published": Format(
        ("checkpoint_path", "config_path"),
        "tse_cli.models.waveformer:load_published",
        "config_path",
        "tse_cli.models.waveformer:published_architecture",
    ),
    "dpm-tse-published": Format(("checkpoint_path", "first_stage_path"), "tse_cli.models.dpmtse:load_published"),
    "av-sepformer-published": Format(("checkpoint_path",), "tse_cli.models.avsepformer:load_published"),
}
_CHECKPOINT_FILES = {"config": "config.json", "weights": "model.safetensors"}
_NAME = re.compile(r"[a-z0-9][a-z0-9._-]*")
_HUB_REPO = re.compile(r"(?P<repo>[\w.-]+/[\w.-]+)(@(?P<rev>[\w.-]+))?")
_REQUIRED = ("architecture", "format", "files", "sample_rate", "license", "citation", "description")
_SHA256 = re.compile(r"[0-9a-f]{64}")


class WeightsError(ValueError):
    """A registry, name or checkpoint problem; the message is one line for the user."""


class UnknownModelError(WeightsError):
    """A model name that is none of the accepted kinds; the message suggests registry names (`unknown_model`)."""


@dataclass(frozen=True)
class FileSpec:
    """One file of an entry: its `role` (a converter keyword), `source` and pinned `sha256` (or None)."""

    role: str
    source: hub.Source
    sha256: str | None


@dataclass(frozen=True)
class Entry:
    """A named checkpoint of the registry (see weights.toml and docs/weights.md)."""

    name: str
    architecture: str
    format: str
    files: dict[str, FileSpec]
    sample_rate: int
    license: str
    citation: str
    description: str
    config: dict[str, Any] = field(default_factory=dict)


# ---- registry ----


def registry_paths() -> list[Path]:
    """The packaged registry, then any files listed in `$TSE_REGISTRY` (later files override entries)."""
    extra = [Path(p) for p in os.environ.get("TSE_REGISTRY", "").split(os.pathsep) if p]
    return [REGISTRY_PATH, *extra]


def load_registry(paths: list[Path] | None = None) -> dict[str, Entry]:
    """All entries of the registry files `paths` (default `registry_paths()`), by name."""
    entries: dict[str, Entry] = {}
    for path in paths if paths is not None else registry_paths():
        try:
            entries.update(parse_registry(Path(path).read_text(), str(path)))
        except OSError as err:
            raise WeightsError(f"{path}: cannot read registry ({err.strerror})") from None
    return entries


def parse_registry(text: str, origin: str = "weights.toml") -> dict[str, Entry]:
    """Parse registry TOML text; `origin` names the file in errors."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise WeightsError(f"{origin}: invalid TOML ({err})") from None
    return {name: _parse_entry(name, table, origin) for name, table in data.items()}


def _parse_entry(name: str, table: Any, origin: str) -> Entry:
    where = f"{origin}: entry {name!r}"
    if not isinstance(table, dict):
        raise WeightsError(f"{where}: expected a table")
    if not _NAME.fullmatch(name):
        raise WeightsError(f"{where}: names are lowercase letters, digits, '.', '_' and '-'")
    missing = [key for key in _REQUIRED if key not in table]
    if missing:
        raise WeightsError(f"{where}: missing {', '.join(missing)}")
    fmt = table["format"]
    if fmt not in FORMATS:
        raise WeightsError(f"{where}: unknown format {fmt!r} (known: {', '.join(FORMATS)})")
    roles = FORMATS[fmt].roles
    files = table["files"]
    if not isinstance(files, dict) or sorted(files) != sorted(roles):
        raise WeightsError(f"{where}: format {fmt} needs files {', '.join(roles)}")
    specs = {}
    for role, spec in files.items():
        if not isinstance(spec, dict) or "source" not in spec:
            raise WeightsError(f"{where}: files.{role} needs a source")
        sha = spec.get("sha256") or None
        if sha is not None and not _SHA256.fullmatch(sha.lower()):
            raise WeightsError(f"{where}: files.{role}.sha256 is not 64 hex digits")
        try:
            source = hub.parse_source(spec["source"])
        except ValueError as err:
            raise WeightsError(f"{where}: files.{role}: {err}") from None
        specs[role] = FileSpec(role, source, sha.lower() if sha else None)
    if not isinstance(table.get("config", {}), dict):
        raise WeightsError(f"{where}: config must be a table")
    return Entry(
        name=name,
        architecture=str(table["architecture"]),
        format=fmt,
        files=specs,
        sample_rate=int(table["sample_rate"]),
        license=str(table["license"]),
        citation=str(table["citation"]),
        description=str(table["description"]),
        config=dict(table.get("config", {})),
    )


def unknown_model(name: str, registry: dict[str, Entry], architectures: Iterable[str] = ()) -> UnknownModelError:
    """The error for a model name that is not a checkpoint directory, a name in `registry` or (for commands that
    describe bare architectures, `tse models info`) one of `architectures`, suggesting the closest accepted names
    (the registry names when none is close). Every command that takes a model name reports an unknown one with it."""
    kinds = (
        "a checkpoint directory, a registry name or an architecture"
        if architectures
        else ("a checkpoint directory or a registry name")
    )
    close = difflib.get_close_matches(name, list(dict.fromkeys([*registry, *architectures])), n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(close)}?" if close else f"registry names: {', '.join(sorted(registry))}"
    return UnknownModelError(f"unknown model {name!r}: not {kinds}; {hint}")


def hub_entry(repo: str) -> Entry | None:
    """An ad-hoc entry for a Hub model repo `owner/repo[@revision]` holding a checkpoint directory."""
    match = _HUB_REPO.fullmatch(repo)
    if match is None:
        return None
    rev = f"@{match['rev']}" if match["rev"] else ""
    files = {
        role: FileSpec(role, hub.parse_source(f"hf://{match['repo']}{rev}/{filename}"), None)
        for role, filename in _CHECKPOINT_FILES.items()
    }
    return Entry(repo, "", CHECKPOINT_FORMAT, files, 0, "see the repo", "see the repo", f"Hub repo {repo}")


# ---- cache state ----


def cache_state(entry: Entry) -> str:
    """Whether `entry` is here: "yes" (every file local, and converted for published formats), "partial" or "no"."""
    present = [hub.cached_path(spec.source) is not None for spec in entry.files.values()]
    if not any(present):
        return "no"
    if not all(present):
        return "partial"
    if FORMATS[entry.format].converter is None:
        return "yes"
    pattern = re.compile(rf"{re.escape(entry.name)}-[0-9a-f]{{16}}")
    return "yes" if any(pattern.fullmatch(p.name) for p in _children(tse_cache_converted())) else "partial"


def published_size(entry: Entry) -> tuple[str, dict[str, Any]] | None:
    """(architecture, config) from the published config file of an entry whose format keeps its size there, once
    that file is cached (None before: the size is not known yet). Entries of other formats: their own."""
    fmt = FORMATS[entry.format]
    if fmt.config_role is None or fmt.config_reader is None:
        return entry.architecture, entry.config
    path = hub.cached_path(entry.files[fmt.config_role].source)
    if path is None:
        return None
    module, _, function = fmt.config_reader.partition(":")
    return getattr(import_module(module), function)(path)


def tse_cache_converted() -> Path:
    """Where converted checkpoint directories are cached."""
    return hub.tse_cache() / "converted"


def _children(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if (p / "config.json").is_file()] if folder.is_dir() else []


# ---- resolving to a checkpoint directory ----


def _offline_hint(name: str) -> str:
    return (
        f"to get the weights, run `tse models download {name}` on a connected machine and copy its cache "
        f"({hub.hf_home()}, or set HF_HOME to the copy), or pass --checkpoint DIR with a checkpoint directory"
    )


def _fetch_all(entry: Entry) -> dict[str, hub.Fetched]:
    fetched = {}
    for role, spec in entry.files.items():
        try:
            fetched[role] = hub.fetch(spec.source, spec.sha256)
        except hub.OfflineError as err:
            raise WeightsError(f"{entry.name}: {err}; {_offline_hint(entry.name)}") from None
        except hub.HubError as err:
            raise WeightsError(f"{entry.name}: {err}") from None
    return fetched


def checkpoint_dir(entry: Entry) -> Path:
    """A local checkpoint directory for `entry`: fetched (and converted once, for published formats)."""
    fetched = _fetch_all(entry)
    converter = FORMATS[entry.format].converter
    if converter is None:
        folder = fetched["config"].path.parent
        for role, filename in _CHECKPOINT_FILES.items():
            path = fetched[role].path
            if path.parent != folder or path.name != filename:
                raise WeightsError(f"{entry.name}: {role} must be {filename} beside config.json, got {path}")
        return folder
    from tse_cli import __version__

    key_data = {"format": entry.format, "tse": __version__, "files": {r: f.identity for r, f in fetched.items()}}
    key = hashlib.sha256(json.dumps(key_data, sort_keys=True).encode()).hexdigest()[:16]
    target = tse_cache_converted() / f"{entry.name}-{key}"
    if not (target / "config.json").is_file() or not (target / "model.safetensors").is_file():
        convert_files(entry.format, {role: f.path for role, f in fetched.items()}, target, origin=entry.name)
    return target


def convert_files(
    fmt: str, files: dict[str, Path], out: Path, origin: str = "", about: dict[str, Any] | None = None
) -> Path:
    """Convert published files (role -> path) of format `fmt` into the checkpoint directory `out`, atomically.

    The converter named by `FORMATS[fmt]` builds the model on CPU; errors become one-line WeightsErrors.
    `converted_from` in its config.json records the format, the registry entry `origin` and `about` (e.g. the
    experiment and epoch a file was picked from).
    """
    roles, converter = FORMATS[fmt].roles, FORMATS[fmt].converter
    if converter is None or sorted(files) != sorted(roles):
        raise WeightsError(f"format {fmt} cannot be converted from files {', '.join(files)}")
    from tse_cli.checkpoint import save_checkpoint

    module, _, function = converter.partition(":")
    load_published = getattr(import_module(module), function)
    try:
        model = load_published(**{role: str(path) for role, path in files.items()})
    except Exception as err:  # a converter reading a foreign file can fail in many ways; report it in one line
        # converters raise PublishedFormatErrors (ValueErrors) that name the file; anything else gets context
        detail = str(err) if isinstance(err, ValueError) else f"{', '.join(map(str, files.values()))}: {err!r}"
        label = f"{origin}: " if origin else ""
        raise WeightsError(f"{label}cannot convert ({fmt}): {' '.join(detail.split())}") from None
    sources = {"format": fmt, **({"registry": origin} if origin else {}), **(about or {})}
    return save_checkpoint(model, out, extra={"converted_from": sources})


def looks_local(text: str) -> bool:
    """Whether a model spec can only mean a local path: it starts with `.`, `/` or `~`, ends with a separator,
    has more than one separator or a backslash (a Hub repo is `owner/repo`), or its first folder exists here
    (`runs/bestt` beside a `runs/` folder is a typo of a local checkpoint, not a Hub repo)."""
    if not text:
        return False
    if text.startswith((".", "/", "~", os.sep)) or text.endswith(("/", os.sep)) or "\\" in text:
        return True
    parts = text.split("@")[0].split("/")
    return len(parts) > 2 or (len(parts) == 2 and Path(parts[0]).expanduser().is_dir())


def missing_local(text: str) -> UnknownModelError:
    """The one-line error for a local checkpoint path that does not exist: the deepest folder of it that exists,
    and the closest names in that folder (an `UnknownModelError`: it names the spec itself)."""
    path = Path(text).expanduser()
    parent = next((p for p in path.parents if p.is_dir()), None)
    message = f"{text}: no such checkpoint directory"
    if parent is not None and parent != path.parent:
        return UnknownModelError(f"{message} ({parent} exists, {path.parent} does not)")
    if parent is not None:
        close = difflib.get_close_matches(path.name, [p.name for p in parent.iterdir() if p.is_dir()], n=3)
        if close:
            return UnknownModelError(f"{message}; did you mean {', '.join(str(path.parent / c) for c in close)}?")
    return UnknownModelError(message)


def resolve(name_or_path: str | Path, registry: dict[str, Entry] | None = None) -> Path:
    """The checkpoint directory for a local directory, a registry name or a Hub repo `owner/repo[@rev]`.

    A spec that `looks_local` but does not exist is a `missing_local` error at once, never a Hub lookup.
    `registry` (default `load_registry()`, read only for names that are not local paths) lets a caller that has
    already read the registry pass it on instead of parsing the files again."""
    text = str(name_or_path)
    path = Path(text).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise WeightsError(f"{text}: is a file; expected a checkpoint directory (config.json + model.safetensors)")
    if looks_local(text):
        raise missing_local(text)
    registry = load_registry() if registry is None else registry
    if text in registry:
        return checkpoint_dir(registry[text])
    entry = hub_entry(text)
    if entry is None:
        raise unknown_model(text, registry)
    try:
        return checkpoint_dir(entry)
    except WeightsError as err:
        raise WeightsError(f"{err} ({text} is not a registry name or a local directory either)") from None


def load_model(name_or_path: str, device: str = "cpu", registry: dict[str, Entry] | None = None) -> nn.Module:
    """Load a model in eval mode on `device` from a registry name (e.g. "waveformer"), a local checkpoint
    directory, or a Hub repo `owner/repo[@revision]` holding config.json + model.safetensors; `registry` as
    for `resolve`. The model's `checkpoint_dir` attribute records the directory it was loaded from."""
    from tse_cli.checkpoint import CheckpointError, load_checkpoint

    folder = resolve(name_or_path, registry)
    try:
        model = load_checkpoint(folder, device=device)
    except CheckpointError as err:
        converted = tse_cache_converted() in folder.resolve().parents
        raise WeightsError(f"{err}{f' (delete {folder} to convert it again)' if converted else ''}") from None
    model.checkpoint_dir = folder
    return model
