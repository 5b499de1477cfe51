"""What a weights file holds: reading, checking and writing generator weights.

Two formats are read:

* a ``.safetensors`` file written by :func:`save_weights` (architecture and hyper-parameters in
  its metadata; a bare export of the authors' layout has none and is recognised by its tensors),
* the authors' released ``.pth`` checkpoint (a plain state dict, read with
  ``torch.load(weights_only=True)``, so loading never runs code from the file).

:func:`read_weights` rebuilds the module with :func:`derain_cli.nets.registry.build_generator`
and loads it strictly: every tensor must be present with its exact shape. Problems become one-line
:class:`~derain_cli.errors.WeightsError` messages naming the file and the reason. Where a spec
(a registered name, ``hf://``, a path) is turned into a verified file is
:mod:`derain_cli.weights.loading`.
"""

from __future__ import annotations

import hashlib
import json
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
from derain_cli.weights.registry import SAFETENSORS_SUFFIXES, TORCH_SUFFIXES

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
    _require_background(loaded.source, loaded.layer, loaded.layer_from)


def _require_background(source: str, layer: str, layer_from: str) -> None:
    if layer in ("", LAYER_BACKGROUND):
        return
    if layer_from == "metadata":
        why = f"its metadata says {KEY_LAYER}={layer}"
    else:
        why = "its file name says G_R"
    what = "the rain generator G_R" if layer == LAYER_RAIN else "not a background layer"
    raise WeightsError(
        f"{source}: these are the weights of {what} ({why}); derain needs the background "
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


def read_weights(
    path: Path,
    *,
    source: str,
    sha256: str,
    arch: str | None = None,
    background: bool = False,
) -> LoadedWeights:
    """The generator a (verified) weights file holds, built and loaded strictly.

    ``source`` names the weights in messages; ``arch``, when given, is what the file must say
    (the registry's promise); ``background=True`` refuses, before building anything, weights known
    to be another layer than G_B (:func:`require_background`).
    """
    if _sniff(path) == "safetensors":
        state, meta = read_safetensors(path)
        found, hparams = _arch_from_metadata(path, meta, state)
    else:
        state, meta = read_torch_checkpoint(path), {}
        found, hparams = AUTHORS_ARCH, infer_nlcl_hparams(path, state)
    layer, layer_from = weights_layer(path, meta)
    if background:
        _require_background(source, layer, layer_from)
    if arch is not None and found != arch:
        raise WeightsError(f"{path}: registry says arch {arch!r} but the file says {found!r}")
    module = _build(path, found, hparams, state)
    return LoadedWeights(
        module=module.float().eval(), arch=found, hparams=hparams, metadata=meta, source=source,
        sha256=sha256, layer=layer, layer_from=layer_from,
    )  # fmt: skip


def _build(
    path: Path, arch: str, hparams: dict[str, Any], state: Mapping[str, torch.Tensor]
) -> nn.Module:
    try:
        return build_generator(arch, hparams, state)
    except WeightsError as exc:
        raise WeightsError(f"{path}: {exc}") from None
    except (TypeError, ValueError) as exc:
        raise WeightsError(
            f"{path}: hyper-parameters {hparams} do not fit {arch!r}: {exc}"
        ) from None


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
    """Convert the authors' ``.pth`` into our safetensors format; return the new file's sha256.

    ``src`` must be a file; it is checked against its ``.sha256`` sidecar when it has one.
    """
    src, dest = Path(src), Path(dest)
    if dest.exists() and not overwrite:
        raise WeightsError(
            f"{dest}: already exists (pass {setting('overwrite', True)} to replace it)"
        )
    if dest.resolve() == src.resolve():
        raise WeightsError(f"{dest}: refusing to overwrite the source checkpoint")
    digest = verify_sha256(src, [("its .sha256 sidecar", read_sidecar(src))])
    loaded = read_weights(src, source=str(src), sha256=digest)
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
