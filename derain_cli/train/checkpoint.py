"""Atomic training checkpoints that ``torch.load(weights_only=True)`` can read.

A checkpoint is one dict of tensors and plain containers (no pickled classes, so loading a
checkpoint never runs code): models, optimisers, EMA, grad scaler, step, data position, RNG states
(as tensors) and the config (as a dict). It is written to a temporary file in the same folder,
fsynced, then renamed over the old one with :func:`os.replace`: a crash or SIGKILL at any moment
leaves either the previous checkpoint or the new one, never a torn file.
"""

from __future__ import annotations

import io
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from derain_cli.atomic import atomic_write_bytes
from derain_cli.errors import DerainError

CHECKPOINT_NAME = "checkpoint.pt"
FORMAT_VERSION = 1


class CheckpointError(DerainError):
    """A checkpoint that cannot be read or does not belong to this program (exit 2)."""

    exit_code = 2


def save_checkpoint(path: Path | str, state: dict[str, Any]) -> None:
    """Write ``state`` atomically (:func:`derain_cli.atomic.atomic_open`): a crash at any moment
    leaves the previous checkpoint readable."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    torch.save({"format": FORMAT_VERSION, **state}, buffer)
    atomic_write_bytes(path, buffer.getvalue())


#: Optimiser state entries that ``compact_moments`` stores in bfloat16 (Adam's two moments).
COMPACT_KEYS = ("exp_avg", "exp_avg_sq")
#: Model state prefixes that ``compact_keys`` stores in bfloat16: the MoCo key encoder.
COMPACT_MODEL_PREFIXES = ("key_d.", "key_heads.")


def compact_moments(optimizer_state: dict[str, Any]) -> dict[str, Any]:
    """An optimiser ``state_dict`` with Adam's moments in bfloat16 (``train.compact_checkpoint``).

    With :func:`compact_keys` this shrinks the default model's checkpoint from 61.7 to ~40 MiB.

    The moments are half of a checkpoint's bytes (the discriminator's alone are ~22 MB); in
    bfloat16 they keep float32's range and 3 significant digits, so the update ``m / sqrt(v)``
    of the first steps after a resume changes by ~0.4% at most, and a resumed run is no longer
    bit-identical to an uninterrupted one. ``Optimizer.load_state_dict`` casts them back to the
    parameters' dtype. Weights and the EMA of G_B stay float32 (the momentum encoder does not:
    :func:`compact_keys`).
    """
    state = {
        index: {
            key: value.to(torch.bfloat16)
            if key in COMPACT_KEYS and isinstance(value, torch.Tensor) and value.is_floating_point()
            else value
            for key, value in entry.items()
        }
        for index, entry in optimizer_state["state"].items()
    }
    return {**optimizer_state, "state": state}


def compact_keys(models: dict[str, Any]) -> dict[str, Any]:
    """The objective's ``state_dict`` with the momentum (key) encoder in bfloat16.

    The key encoder is an EMA of D and the layer heads (decay 0.99: it renews itself within a
    few hundred steps) used only to embed contrastive keys, so one rounding to bfloat16 at a
    resume is a perturbation of ~0.4% that the next updates wash out. ``load_state_dict``
    copies the values back into the float32 parameters.
    """
    return {
        key: value.to(torch.bfloat16)
        if key.startswith(COMPACT_MODEL_PREFIXES) and value.is_floating_point()
        else value
        for key, value in models.items()
    }


def load_checkpoint(path: Path | str, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (``weights_only=True``)."""
    path = Path(path)
    return _read(path, path, map_location)


def _read(
    source: Path | io.BytesIO, path: Path, map_location: str | torch.device
) -> dict[str, Any]:
    try:
        state = torch.load(source, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no checkpoint") from None
    except Exception as exc:
        reason = str(exc).strip().split("\n")[0]
        raise CheckpointError(f"{path}: not a readable derain checkpoint ({reason})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: not a derain training checkpoint (format mismatch)")
    return state


def capture_rng() -> dict[str, Any]:
    """Python, NumPy, torch and CUDA RNG states as tensors (``weights_only``-safe)."""
    version, python_state, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": torch.tensor(python_state, dtype=torch.int64),
        "python_gauss": torch.tensor([] if gauss is None else [gauss], dtype=torch.float64),
        "numpy": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
        "numpy_pos": torch.tensor([pos, has_gauss], dtype=torch.int64),
        "numpy_cached": torch.tensor([cached], dtype=torch.float64),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    del version, kind
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng` (CUDA states only when the device count matches)."""
    state = {k: v.cpu() if isinstance(v, torch.Tensor) else v for k, v in state.items()}
    gauss = state["python_gauss"].tolist()
    random.setstate((3, tuple(state["python"].tolist()), gauss[0] if gauss else None))
    pos, has_gauss = state["numpy_pos"].tolist()
    np.random.set_state(
        (
            "MT19937",
            state["numpy"].numpy().astype(np.uint32),
            pos,
            has_gauss,
            float(state["numpy_cached"][0]),
        )
    )
    torch.set_rng_state(state["torch"].cpu())
    cuda = state.get("cuda") or []
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in cuda])
