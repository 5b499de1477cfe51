"""Weights by spec: the one entry point for every way of naming weights.

``load_weights(spec)`` accepts

* ``None`` or a registered name (``weights/registry.json``; ``default`` is an alias),
* a ``.safetensors`` file written by :func:`~derain_cli.weights.files.save_weights`, or the
  authors' released ``.pth`` checkpoint,
* ``hf://OWNER/REPO[@REVISION][/FILE]`` (see :mod:`derain_cli.weights.hub`).

A spec goes one way through the package: :func:`~derain_cli.weights.registry.pin` says where the
file lives (a registered name becomes its bundled file or its pinned Hub file, with the registry's
checksum and architecture); a Hub file is fetched into the cache
(:func:`~derain_cli.weights.hub.fetch`); the file is checked against every sha256 known for it
(:mod:`~derain_cli.weights.checksums`); then :func:`~derain_cli.weights.files.read_weights`
builds the generator it holds.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from derain_cli.errors import WeightsError
from derain_cli.weights.checksums import read_sidecar, verify_sha256
from derain_cli.weights.files import LoadedWeights, read_weights
from derain_cli.weights.hub import HF_SCHEME, HubRef, fetch
from derain_cli.weights.registry import WeightsEntry, is_name, load_registry, pin

#: What names weights: a registered name, a file, an ``hf://`` spec, a registry entry or None.
Spec = str | os.PathLike[str] | WeightsEntry | None


@dataclass(frozen=True)
class Located:
    """A weights spec as a verified local file."""

    #: How messages name the weights: the registered name, the ``hf://`` spec or the file.
    label: str
    path: Path
    sha256: str
    #: The architecture the registry promises (None: whatever the file says).
    arch: str | None = None


def load_weights(spec: Spec, *, background: bool = False) -> LoadedWeights:
    """Resolve ``spec`` (see the module docstring) and build the generator it describes.

    ``background=True`` refuses weights known to be another layer than the background generator
    G_B, before the network is built (what ``derain`` and ``Derainer.from_pretrained`` need).
    """
    found = locate(spec)
    return read_weights(
        found.path, source=found.label, sha256=found.sha256, arch=found.arch, background=background
    )


def locate(spec: Spec, *, files: bool = True) -> Located:
    """The verified local file of ``spec``, downloaded into the cache first if it is on the Hub.

    A local file is checked against the registry's sha256 (a bundled file) and its ``.sha256``
    sidecar; a Hub file against the registry's, the repo's sidecar and the Hub's LFS etag (a bad
    download is deleted from the cache). ``files=False`` takes registered names and ``hf://`` specs
    only (see :func:`~derain_cli.weights.registry.pin`).
    """
    pinned = pin(spec, files=files)
    if isinstance(pinned.place, HubRef):
        path, digest = fetch(pinned.place, sha256=pinned.sha256)
    else:
        path = pinned.place
        digest = verify_sha256(
            path, [("the registry", pinned.sha256), ("its .sha256 sidecar", read_sidecar(path))]
        )
    return Located(pinned.label, path, digest, pinned.arch)


def fetch_entry(entry: WeightsEntry) -> tuple[Path, str]:
    """The verified local file of a registry entry, and its sha256."""
    found = locate(entry)
    return found.path, found.sha256


def load_file(path: Path | str, *, sha256: str | None = None) -> LoadedWeights:
    """Load a local ``.safetensors`` or ``.pth`` file (never a registered name).

    It is checked against ``sha256`` when given, else against its ``.sha256`` sidecar if present.
    """
    path = Path(path)
    expected = ("the expected checksum", sha256) if sha256 else None
    digest = verify_sha256(path, [expected or ("its .sha256 sidecar", read_sidecar(path))])
    return read_weights(path, source=str(path), sha256=digest)


def load_pair(
    spec: str, rain_spec: str | None = None
) -> tuple[LoadedWeights, LoadedWeights | None]:
    """G_B from ``spec`` (refused unless a background generator) and its G_R, if any.

    G_R is ``rain_spec`` when given, else the partner :func:`rain_weights_beside` finds, else
    None. ``derain inspect-patches`` and ``derain train --init`` both load their weights here.
    """
    background = load_weights(spec, background=True)
    if rain_spec is None:
        partner = rain_weights_beside(spec)
        rain_spec = str(partner) if partner is not None else None
    return background, load_weights(rain_spec) if rain_spec is not None else None


def rain_weights_beside(spec: str) -> Path | str | None:
    """The G_R spec that belongs with the G_B ``spec``, if there is one.

    Beside a G_B file: the file of the same name with ``G_B`` -> ``G_R`` (how ``derain train``
    exports a run, and how the authors name their checkpoints). For a registered name
    (``default`` included): the registered ``<name>-rain`` entry (how bundled weights are named).
    ``hf://`` specs and files without ``G_B`` in the name have none (see :func:`load_pair`).
    """
    path = Path(spec).expanduser()
    if path.is_file():
        if "G_B" not in path.name:
            return None
        candidate = path.with_name(path.name.replace("G_B", "G_R"))
        return candidate if candidate.is_file() else None
    if spec.startswith(HF_SCHEME) or not is_name(spec):
        return None
    try:
        registry = load_registry()
        entry = registry.lookup(spec)
    except WeightsError:
        return None
    rain = f"{entry.name}-rain"
    return rain if rain in registry.entries else None
