"""The registry of named weights (``weights/registry.json``) and where bundled files live.

Light on purpose (no torch): ``derain weights list`` reads it without loading a network.

The top-level ``weights/`` folder is found in two situations:

* a source checkout or editable install: ``<repo>/weights`` next to the ``derain_cli`` package;
* a wheel install: the wheel ships ``weights/*`` as data files under ``share/derain/weights``
  (see ``[tool.setuptools.data-files]`` in pyproject.toml); ``importlib.metadata`` lists them in the
  distribution's RECORD, which tells us where the installer put them.

``$DERAIN_REGISTRY`` replaces the bundled registry with another JSON file of the same schema (an
organisation's own list of weights); its ``file`` entries are relative to that file's folder.
"""

from __future__ import annotations

import json
import os
import re
import sysconfig
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from derain_cli.errors import WeightsError, setting
from derain_cli.weights.hub import HF_SCHEME, HubRef, cached_file, parse_hf_spec

DISTRIBUTION = "derain"
REGISTRY_NAME = "registry.json"
DATA_FILES_DIR = ("share", "derain", "weights")
DEFAULT_ALIAS = "default"
SAFETENSORS_SUFFIXES = (".safetensors",)
TORCH_SUFFIXES = (".pth", ".pt", ".ckpt")
#: A spec ending in one of these is a file, never a registered name.
WEIGHTS_SUFFIXES = SAFETENSORS_SUFFIXES + TORCH_SUFFIXES


def no_default_message() -> str:
    """What to do when the ``default`` alias points at nothing."""
    return (
        f"no default weights are bundled yet: pass {setting('weights')} FILE.safetensors|FILE.pth|"
        "hf://OWNER/REPO[@REVISION][/FILE] (see `derain weights list` and docs/weights.md)"
    )


_COMMIT = re.compile(r"[0-9a-f]{40}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


@dataclass(frozen=True)
class WeightsEntry:
    """One named weights file: bundled in ``weights/``, on the Hub, or both."""

    name: str
    arch: str
    sha256: str
    description: str = ""
    file: Path | None = None
    hub: HubRef | None = None


@dataclass(frozen=True)
class Registry:
    path: Path
    entries: dict[str, WeightsEntry]
    aliases: dict[str, str | None]

    def names(self) -> list[str]:
        return sorted({*self.entries, *self.aliases})

    def lookup(self, name: str) -> WeightsEntry:
        """Resolve aliases; raise :class:`WeightsError` when nothing usable is registered."""
        target: str | None = name
        seen: set[str] = set()
        while target in self.aliases and target not in seen:
            seen.add(target)
            target = self.aliases[target]
            if target is None:
                if name == DEFAULT_ALIAS:
                    raise WeightsError(no_default_message())
                raise WeightsError(f"weights alias {name!r} points at nothing ({self.path})")
        if target is None or target not in self.entries:
            known = ", ".join(self.names()) or "none"
            raise WeightsError(
                f"unknown weights {name!r} (registered: {known}); pass a .safetensors or .pth "
                "file, or hf://OWNER/REPO[@REVISION][/FILE]"
            )
        return self.entries[target]


@dataclass(frozen=True)
class Pinned:
    """What a weights spec points at, and what the registry promises of it.

    ``place`` is a local file or a file on the Hub; ``sha256`` and ``arch`` are the registry's
    (None for a path or an ``hf://`` spec, which promise nothing beyond their own checksums).
    """

    #: How messages name it: the registered name, the ``hf://`` spec or the file.
    label: str
    place: Path | HubRef
    sha256: str | None = None
    arch: str | None = None


def is_name(spec: str) -> bool:
    """Whether ``spec`` could be a registered name (no folder, no weights-file suffix)."""
    return "/" not in spec and os.sep not in spec and not spec.endswith(WEIGHTS_SUFFIXES)


def pin(spec: str | os.PathLike[str] | WeightsEntry | None, *, files: bool = True) -> Pinned:
    """Where the weights ``spec`` names live: the first step of loading weights by spec.

    ``None`` is ``default``; a name (:func:`is_name`) that is no existing file is looked up in
    the registry; an entry gives its bundled file, else its pinned Hub file, with the registry's
    checksum and architecture. ``hf://OWNER/REPO[@REVISION][/FILE]`` is a Hub file; anything else
    (and any ``os.PathLike``) a local file. ``files=False`` looks up every spec but an ``hf://`` one
    in the registry (``derain weights download`` fetches named weights, never a local path).
    """
    if isinstance(spec, os.PathLike):
        path = Path(spec)
        return Pinned(str(path), path)
    if isinstance(spec, WeightsEntry):
        return _pin_entry(spec)
    spec = DEFAULT_ALIAS if spec is None else spec.strip()
    if not spec.startswith(HF_SCHEME):
        path = Path(spec).expanduser()
        if files and (not is_name(spec) or path.exists()):
            return Pinned(str(path), path)
        return _pin_entry(load_registry().lookup(spec))
    ref = parse_hf_spec(spec)
    return Pinned(ref.spec, ref)


def _pin_entry(entry: WeightsEntry) -> Pinned:
    """A registry entry's bundled file, else its pinned Hub file."""
    if entry.file is not None and entry.file.is_file():
        return Pinned(entry.name, entry.file, entry.sha256, entry.arch)
    if entry.hub is None:
        raise WeightsError(f"{entry.name}: bundled file {entry.file} is missing (reinstall derain)")
    return Pinned(entry.name, entry.hub, entry.sha256, entry.arch)


def listing(registry: Registry) -> list[dict[str, Any]]:
    """One row per entry and alias: name, arch, local file (or None), source, status, sha256 and
    description; status is ``bundled``, ``cached`` (from the Hub), ``remote``, ``alias`` or
    ``not available`` (an alias of nothing)."""
    rows: list[dict[str, Any]] = []
    for entry in registry.entries.values():
        local: Path | None = None
        status = "remote"
        if entry.file is not None and entry.file.is_file():
            local, status = entry.file, "bundled"
        elif entry.hub is not None:
            local = cached_file(entry.hub)
            status = "cached" if local is not None else "remote"
        if entry.hub is not None:
            source = entry.hub.spec
        else:
            assert entry.file is not None  # the registry refuses entries with neither
            source = f"weights/{entry.file.name}"
        rows.append(
            {
                "name": entry.name,
                "arch": entry.arch,
                "local": local,
                "source": source,
                "status": status,
                "sha256": entry.sha256,
                "description": entry.description,
            }
        )
    for alias, target in sorted(registry.aliases.items()):
        rows.append(
            {
                "name": alias,
                "arch": registry.entries[target].arch if target else "-",
                "local": None,
                "source": f"alias of {target}" if target else "alias of nothing",
                "status": "alias" if target else "not available",
                "sha256": None,
                "description": "" if target else no_default_message(),
            }
        )
    return rows


def source_checkout_dir() -> Path | None:
    """``<repo>/weights`` when ``derain_cli`` runs from a source checkout (editable install)."""
    repo = Path(__file__).resolve().parents[2]
    folder = repo / "weights"
    if (repo / "pyproject.toml").is_file() and (folder / REGISTRY_NAME).is_file():
        return folder
    return None


def installed_data_dir() -> Path | None:
    """``share/derain/weights`` of an installed wheel, located through its RECORD."""
    try:
        files = metadata.distribution(DISTRIBUTION).files or []
    except metadata.PackageNotFoundError:
        files = []
    for entry in files:
        parts = entry.parts
        if parts[-1] == REGISTRY_NAME and tuple(parts[-4:-1]) == DATA_FILES_DIR:
            located = Path(str(entry.locate())).resolve()
            if located.is_file():
                return located.parent
    scheme_dir = Path(sysconfig.get_path("data")).joinpath(*DATA_FILES_DIR)
    return scheme_dir if (scheme_dir / REGISTRY_NAME).is_file() else None


def bundled_dir() -> Path:
    """The folder holding ``registry.json`` and the bundled weights files."""
    folder = source_checkout_dir() or installed_data_dir()
    if folder is None:
        raise WeightsError(
            f"the bundled weights registry ({REGISTRY_NAME}) was not found next to the package "
            "nor in the installed data files: reinstall derain"
        )
    return folder


def registry_path() -> Path:
    override = os.environ.get("DERAIN_REGISTRY")
    return Path(override).expanduser() if override else bundled_dir() / REGISTRY_NAME


def load_registry(path: Path | None = None) -> Registry:
    """Read and validate a registry file (the bundled one by default)."""
    path = path or registry_path()
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise WeightsError(f"{path}: weights registry not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WeightsError(f"{path}: unreadable weights registry ({exc})") from None
    if not isinstance(raw, dict) or raw.get("format_version") != 1:
        raise WeightsError(f"{path}: not a derain weights registry (format_version 1 expected)")
    entries = {
        name: _parse_entry(path, name, value) for name, value in _mapping(path, raw, "weights")
    }
    aliases: dict[str, str | None] = {}
    for name, target in _mapping(path, raw, "aliases"):
        if target is not None and not isinstance(target, str):
            raise WeightsError(f"{path}: alias {name!r} must name an entry or be null")
        if target is not None and target not in entries:
            raise WeightsError(f"{path}: alias {name!r} points at unknown entry {target!r}")
        aliases[name] = target
    return Registry(path=path, entries=entries, aliases=aliases)


def _mapping(path: Path, raw: dict[str, Any], key: str) -> list[tuple[str, Any]]:
    value = raw.get(key, {})
    if not isinstance(value, dict):
        raise WeightsError(f"{path}: {key!r} must be an object")
    for name in value:
        if not _NAME.fullmatch(name):
            raise WeightsError(f"{path}: invalid weights name {name!r}")
    return list(value.items())


def _parse_entry(path: Path, name: str, value: Any) -> WeightsEntry:
    def bad(reason: str) -> WeightsError:
        return WeightsError(f"{path}: entry {name!r}: {reason}")

    if not isinstance(value, dict):
        raise bad("must be an object")
    sha256 = str(value.get("sha256", "")).lower()
    if not _SHA256.fullmatch(sha256):
        raise bad("sha256 must be 64 hex digits")
    arch = value.get("arch")
    if not isinstance(arch, str) or not arch:
        raise bad("arch is required")
    file: Path | None = None
    if value.get("file") is not None:
        relative = str(value["file"])
        if Path(relative).name != relative:
            raise bad("file must be a plain file name inside the registry's folder")
        file = path.parent / relative
    hub: HubRef | None = None
    if value.get("hub") is not None:
        spec = value["hub"]
        if not isinstance(spec, dict):
            raise bad("hub must be an object")
        revision = str(spec.get("revision", ""))
        if not _COMMIT.fullmatch(revision):
            raise bad("hub.revision must be a pinned 40-hex commit")
        repo_id, filename = str(spec.get("repo_id", "")), str(spec.get("filename", ""))
        if repo_id.count("/") != 1 or not filename:
            raise bad("hub needs repo_id (OWNER/REPO) and filename")
        hub = HubRef(repo_id=repo_id, revision=revision, filename=filename)
    if file is None and hub is None:
        raise bad("needs a bundled file, a hub source, or both")
    return WeightsEntry(
        name=name,
        arch=arch,
        sha256=sha256,
        description=str(value.get("description", "")),
        file=file,
        hub=hub,
    )
