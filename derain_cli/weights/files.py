"""Load and save generator weights: the one entry point for every kind of weights spec.

``load_weights(spec)`` accepts

* ``None`` or a registered name (``weights/registry.json``; ``default`` is an alias),
* a ``.safetensors`` file written by :func:`save_weights` (architecture and hyper-parameters in its
  metadata),
* the authors' released ``.pth`` checkpoint (a plain state dict, read with
  ``torch.load(weights_only=True)``, so loading never runs code from the file),
* ``hf://OWNER/REPO[@REVISION][/FILE]`` (see :mod:`derain_cli.weights.hub`).

The module is rebuilt with :func:`derain_cli.nets.registry.build_generator` and loaded strictly:
every tensor must be present with its exact shape. Problems become one-line
:class:`~derain_cli.errors.WeightsError` messages naming the file and the reason.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from derain_cli.atomic import atomic_write_bytes
from derain_cli.errors import WeightsError, setting
from derain_cli.nets.registry import build_generator
from derain_cli.version import __version__
from derain_cli.weights.checksums import read_sidecar, verify_sha256, write_sidecar
from derain_cli.weights.hub import HF_SCHEME, fetch, parse_hf_spec
from derain_cli.weights.registry import DEFAULT_ALIAS, WeightsEntry, load_registry

FORMAT_VERSION = "1"
KEY_ARCH = "derain.arch"
KEY_HPARAMS = "derain.hparams"
KEY_FORMAT = "derain.format_version"
KEY_VERSION = "derain.version"
#: Which layer a generator outputs: ``background`` (G_B, what ``derain`` runs) or ``rain`` (G_R).
KEY_LAYER = "derain.layer"
KEY_SOURCE_FILE = "derain.source_file"
LAYER_BACKGROUND = "background"
LAYER_RAIN = "rain"
#: Files without a layer in their metadata (the authors' ``.pth``) are told apart by name:
#: ``G_R`` or ``G_B`` as a word of the file stem (``G_R.pth``, ``nlcl-realrain-G_R.pth``).
_LAYER_NAMES = {
    LAYER_RAIN: re.compile(r"(?:^|[^A-Za-z0-9])G_R(?:$|[^A-Za-z0-9])"),
    LAYER_BACKGROUND: re.compile(r"(?:^|[^A-Za-z0-9])G_B(?:$|[^A-Za-z0-9])"),
}
AUTHORS_ARCH = "nlcl-resnet"
SAFETENSORS_SUFFIXES = (".safetensors",)
TORCH_SUFFIXES = (".pth", ".pt", ".ckpt")
#: Containers some training scripts wrap a state dict in; the authors' G_B.pth is a bare dict.
_WRAPPER_KEYS = ("state_dict", "model", "params_ema", "params", "G_B")


@dataclass
class LoadedWeights:
    """A ready generator (eval mode, fp32, CPU) and where it came from."""

    module: nn.Module
    arch: str
    hparams: dict[str, Any]
    metadata: dict[str, str]
    source: str
    sha256: str = field(default="")
    #: ``background``, ``rain`` or another value from the metadata; ``""`` when nothing says.
    layer: str = field(default="")
    #: What told the layer: ``metadata`` or ``file name`` (``""`` when unknown).
    layer_from: str = field(default="")


def require_background(loaded: LoadedWeights) -> None:
    """Refuse weights that are known not to be the background generator G_B (WeightsError).

    Weights trained by ``derain train`` say their layer in the metadata (``derain.layer``); the
    authors' checkpoints only in their file name (``G_R.pth`` is the rain generator).
    """
    if loaded.layer in ("", LAYER_BACKGROUND):
        return
    if loaded.layer_from == "metadata":
        why = f"its metadata says {KEY_LAYER}={loaded.layer}"
    else:
        why = "its file name says G_R"
    what = "the rain generator G_R" if loaded.layer == LAYER_RAIN else "not a background layer"
    raise WeightsError(
        f"{loaded.source}: these are the weights of {what} ({why}); derain needs the background "
        "generator G_B (G_B.safetensors from the same training run, or the authors' G_B.pth)"
    )


def weights_layer(path: Path, meta: Mapping[str, str]) -> tuple[str, str]:
    """The layer a weights file holds and what said so (see :class:`LoadedWeights`)."""
    if KEY_LAYER in meta:
        return meta[KEY_LAYER], "metadata"
    stem = Path(meta.get(KEY_SOURCE_FILE, path.name)).stem
    for layer, pattern in _LAYER_NAMES.items():
        if pattern.search(stem):
            return layer, "file name"
    return "", ""


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
    if spec.startswith(HF_SCHEME) or not _looks_like_name(spec):
        return None
    try:
        registry = load_registry()
        entry = registry.lookup(spec)
    except WeightsError:
        return None
    rain = f"{entry.name}-rain"
    return rain if rain in registry.entries else None


def load_pair(
    spec: str, rain_spec: str | None = None
) -> tuple[LoadedWeights, LoadedWeights | None]:
    """G_B from ``spec`` (refused unless a background generator) and its G_R, if any.

    G_R is ``rain_spec`` when given, else the partner :func:`rain_weights_beside` finds, else
    None. ``derain inspect-patches`` and ``derain train --init`` both load their weights here.
    """
    background = load_weights(spec)
    require_background(background)
    if rain_spec is None:
        partner = rain_weights_beside(spec)
        rain_spec = str(partner) if partner is not None else None
    return background, load_weights(rain_spec) if rain_spec is not None else None


def load_weights(spec: str | None) -> LoadedWeights:
    """Resolve ``spec`` (see the module docstring) and build the generator it describes."""
    spec = DEFAULT_ALIAS if spec is None else spec.strip()
    if spec.startswith(HF_SCHEME):
        ref = parse_hf_spec(spec)
        path, digest = fetch(ref)
        return _load_file(path, source=ref.spec, sha256=digest)
    path = Path(spec).expanduser()
    if _looks_like_name(spec) and not path.exists():
        return _load_entry(load_registry().lookup(spec))
    return load_file(path)


def load_file(path: Path | str, *, sha256: str | None = None) -> LoadedWeights:
    """Load a local ``.safetensors`` or ``.pth`` file, checking its sidecar sha256 if present."""
    path = Path(path)
    if not path.is_file():
        what = "is a folder, not a weights file" if path.is_dir() else "weights file not found"
        raise WeightsError(f"{path}: {what}")
    if sha256:
        digest = verify_sha256(path, [("the expected checksum", sha256)])
    else:
        digest = verify_sha256(path, [("its .sha256 sidecar", read_sidecar(path))])
    return _load_file(path, source=str(path), sha256=digest)


def fetch_entry(entry: WeightsEntry) -> tuple[Path, str]:
    """The local file of a registry entry: bundled, cached, or downloaded now (verified)."""
    if entry.file is not None and entry.file.is_file():
        return entry.file, verify_sha256(entry.file, [("the registry", entry.sha256)])
    if entry.hub is None:
        raise WeightsError(f"{entry.name}: bundled file {entry.file} is missing (reinstall derain)")
    return fetch(entry.hub, sha256=entry.sha256)


def fetch_spec(spec: str) -> tuple[Path, str]:
    """The verified local file of a registered name or an ``hf://`` spec, downloaded if need be."""
    if spec.startswith(HF_SCHEME):
        return fetch(parse_hf_spec(spec))
    return fetch_entry(load_registry().lookup(spec))


def _load_entry(entry: WeightsEntry) -> LoadedWeights:
    path, digest = fetch_entry(entry)
    loaded = _load_file(path, source=entry.name, sha256=digest)
    if loaded.arch != entry.arch:
        raise WeightsError(
            f"{path}: registry says arch {entry.arch!r} but the file says {loaded.arch!r}"
        )
    return loaded


def _looks_like_name(spec: str) -> bool:
    return (
        "/" not in spec
        and os.sep not in spec
        and not spec.endswith(SAFETENSORS_SUFFIXES + TORCH_SUFFIXES)
    )


def _load_file(path: Path, *, source: str, sha256: str) -> LoadedWeights:
    kind = _sniff(path)
    if kind == "safetensors":
        state, meta = read_safetensors(path)
        arch, hparams = _arch_from_metadata(path, meta, state)
    else:
        state = read_torch_checkpoint(path)
        meta = {}
        arch, hparams = AUTHORS_ARCH, infer_nlcl_hparams(path, state)
    try:
        module = build_generator(arch, hparams)
    except WeightsError as exc:
        raise WeightsError(f"{path}: {exc}") from None
    except (TypeError, ValueError) as exc:
        raise WeightsError(
            f"{path}: hyper-parameters {hparams} do not fit {arch!r}: {exc}"
        ) from None
    _load_strict(path, module, state, arch)
    module = module.float().eval()
    layer, layer_from = weights_layer(path, meta)
    return LoadedWeights(
        module=module, arch=arch, hparams=hparams, metadata=meta, source=source, sha256=sha256,
        layer=layer, layer_from=layer_from,
    )  # fmt: skip


def _sniff(path: Path) -> str:
    """``safetensors`` or ``torch``, from the suffix, else from the first bytes."""
    name = path.name.lower()
    if name.endswith(SAFETENSORS_SUFFIXES):
        return "safetensors"
    if name.endswith(TORCH_SUFFIXES):
        return "torch"
    with open(path, "rb") as handle:
        head = handle.read(9)
    if head[:2] == b"PK" or head[:1] == b"\x80":
        return "torch"
    if len(head) == 9 and head[8:9] == b"{":
        return "safetensors"
    raise WeightsError(f"{path}: not a weights file (expected .safetensors or a torch .pth)")


def read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            meta = dict(handle.metadata() or {})
            state = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        reason = _first_line(exc)
        raise WeightsError(f"{path}: corrupt or not a safetensors file ({reason})") from None
    return state, meta


def read_torch_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from a ``.pth``, refusing anything but tensors and plain containers."""
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        reason = _unpickler_reason(exc)
        if not reason.startswith("Unsupported global"):
            raise WeightsError(f"{path}: not a readable torch checkpoint ({reason})") from None
        raise WeightsError(
            f"{path}: refused: the checkpoint holds pickled objects other than tensors "
            f"(read with weights_only=True, which never runs code: {reason})"
        ) from None
    except Exception as exc:  # torch raises many types on garbage input; all mean "unreadable"
        raise _unreadable(path, exc) from None
    if _is_training_checkpoint(raw):
        run = path.parent
        raise WeightsError(
            f"{path}: a derain training checkpoint, not weights; export them with "
            f"'derain weights export {run}' and use {run / 'G_B.safetensors'}"
        )
    state = _unwrap(raw)
    if state is None:
        raise WeightsError(f"{path}: not a state dict of tensors")
    return {key.removeprefix("module."): value for key, value in state.items()}


def _is_training_checkpoint(raw: Any) -> bool:
    """What ``derain train`` writes as ``RUN/checkpoint.pt`` (derain_cli/train/checkpoint.py)."""
    return isinstance(raw, Mapping) and {"format", "step", "models", "optimizers"} <= raw.keys()


def _unwrap(raw: Any) -> dict[str, torch.Tensor] | None:
    if isinstance(raw, Mapping):
        if raw and all(isinstance(k, str) and torch.is_tensor(v) for k, v in raw.items()):
            return dict(raw)
        for key in _WRAPPER_KEYS:
            if key in raw:
                return _unwrap(raw[key])
    return None


def infer_nlcl_hparams(path: Path, state: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """Channels and block count of an ``nlcl-resnet`` state dict (the authors' layout)."""
    first = state.get("gen.0.weight")
    if first is None or first.ndim != 4:
        raise WeightsError(f"{path}: not an NLCL generator state dict (no gen.0.weight)")
    blocks = 0
    while f"gen.{blocks + 1}.model.0.conv.weight" in state:
        blocks += 1
    return {"in_channels": int(first.shape[1]), "channels": int(first.shape[0]), "blocks": blocks}


def _arch_from_metadata(
    path: Path, meta: Mapping[str, str], state: Mapping[str, torch.Tensor]
) -> tuple[str, dict[str, Any]]:
    arch = meta.get(KEY_ARCH)
    if arch is None:
        # A bare safetensors export of the authors' layout (no derain metadata).
        return AUTHORS_ARCH, infer_nlcl_hparams(path, state)
    version = meta.get(KEY_FORMAT, FORMAT_VERSION)
    if version != FORMAT_VERSION:
        raise WeightsError(f"{path}: weights format {version} is newer than this derain supports")
    try:
        hparams = json.loads(meta.get(KEY_HPARAMS, "{}"))
    except json.JSONDecodeError:
        raise WeightsError(f"{path}: {KEY_HPARAMS} metadata is not valid JSON") from None
    if not isinstance(hparams, dict):
        raise WeightsError(f"{path}: {KEY_HPARAMS} metadata must be a JSON object")
    return arch, hparams


def _load_strict(
    path: Path, module: nn.Module, state: Mapping[str, torch.Tensor], arch: str
) -> None:
    expected = module.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [
        f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing (e.g. {missing[0]})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
    if mismatched:
        problems.append(f"{len(mismatched)} with the wrong shape (e.g. {mismatched[0]})")
    if problems:
        raise WeightsError(f"{path}: tensors do not fit arch {arch!r}: " + "; ".join(problems))
    module.load_state_dict(dict(state), strict=True)


def save_weights(
    path: Path | str,
    module: nn.Module,
    *,
    arch: str,
    hparams: Mapping[str, Any],
    metadata: Mapping[str, Any] | None = None,
) -> str:
    """Write ``module``'s tensors as safetensors with derain metadata; return its sha256.

    The file is written atomically (temporary file, then rename) and a ``<file>.sha256`` sidecar is
    written next to it. ``metadata`` is free-form (training data, metrics...): non-string values are
    stored as JSON.
    """
    from safetensors.torch import save

    path = Path(path)
    meta = {
        key: value if isinstance(value, str) else json.dumps(value, sort_keys=True)
        for key, value in (metadata or {}).items()
    }
    meta |= {
        KEY_ARCH: arch,
        KEY_HPARAMS: json.dumps(dict(hparams), sort_keys=True),
        KEY_FORMAT: FORMAT_VERSION,
        KEY_VERSION: __version__,
    }
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in module.state_dict().items()}
    data = save(tensors, metadata=meta)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, data)
    digest = hashlib.sha256(data).hexdigest()  # the bytes just written: no second read
    write_sidecar(path, digest)
    return digest


def convert_checkpoint(src: Path | str, dest: Path | str, *, overwrite: bool = False) -> str:
    """Convert the authors' ``.pth`` into our safetensors format; return the new file's sha256."""
    src, dest = Path(src), Path(dest)
    if dest.exists() and not overwrite:
        raise WeightsError(
            f"{dest}: already exists (pass {setting('overwrite', True)} to replace it)"
        )
    if dest.resolve() == src.resolve():
        raise WeightsError(f"{dest}: refusing to overwrite the source checkpoint")
    loaded = load_file(src)
    if _sniff(src) != "torch":
        raise WeightsError(f"{src}: expected a torch .pth checkpoint")
    return save_weights(
        dest,
        loaded.module,
        arch=loaded.arch,
        hparams=loaded.hparams,
        metadata={
            KEY_SOURCE_FILE: src.name,
            "derain.source_sha256": loaded.sha256,
            "derain.note": "converted from a torch checkpoint with `derain weights convert`",
        },
    )


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _unreadable(path: Path, exc: BaseException) -> WeightsError:
    reason = f"{type(exc).__name__}: {_first_line(exc)}"
    return WeightsError(f"{path}: not a readable torch checkpoint ({reason})")


def _unpickler_reason(exc: BaseException) -> str:
    """The first sentence after ``WeightsUnpickler error:`` in torch's long weights_only message."""
    text = str(exc)
    if "WeightsUnpickler error:" not in text:
        return _first_line(exc)
    detail = text.split("WeightsUnpickler error:", 1)[1].strip()
    return detail.splitlines()[0].split(". ", 1)[0].strip() if detail else _first_line(exc)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
