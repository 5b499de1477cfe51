"""sha256 of weights files and their ``<file>.sha256`` sidecars (``sha256sum`` format)."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Sequence
from pathlib import Path

from derain_cli.atomic import atomic_write_bytes
from derain_cli.errors import WeightsError

_HEX = re.compile(r"[0-9a-fA-F]{64}")


def sha256_file(path: Path | str, *, chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def verify_sha256(
    path: Path | str,
    expected: Sequence[tuple[str, str | None]],
    *,
    name: str | None = None,
    on_mismatch: Callable[[str], None] | None = None,
    consequence: str = "",
) -> str:
    """``path``'s sha256, checked against each ``(who says so, digest)`` we know (None: unknown).

    The first digest that differs raises :class:`~derain_cli.errors.WeightsError` naming the file
    (``name``, else ``path``), both digests and who gave the expected one; ``on_mismatch(actual)``
    runs first (the Hub cache deletes the bad copy) and ``consequence`` ends the message. A path
    that is no file is refused the same way ("weights file not found", "is a folder").
    """
    path = Path(path)
    if not path.is_file():
        what = "is a folder, not a weights file" if path.is_dir() else "weights file not found"
        raise WeightsError(f"{path}: {what}")
    actual = sha256_file(path)
    for source, digest in expected:
        if digest and digest.lower() != actual:
            if on_mismatch is not None:
                on_mismatch(actual)
            raise WeightsError(
                f"{name or path}: sha256 mismatch (file {actual[:12]}..., {source} says "
                f"{digest[:12]}...){consequence}"
            )
    return actual


def sidecar_path(path: Path | str) -> Path:
    path = Path(path)
    return path.with_name(path.name + ".sha256")


def parse_sidecar(text: str) -> str | None:
    """The first 64-hex word of a sidecar (``<hex>  <name>``), or None when there is none."""
    words = text.split()
    return words[0].lower() if words and _HEX.fullmatch(words[0]) else None


def read_sidecar(path: Path | str) -> str | None:
    """The sha256 recorded beside ``path``, or None when there is no readable sidecar."""
    try:
        return parse_sidecar(sidecar_path(path).read_text(encoding="utf-8", errors="replace"))
    except OSError:
        return None


def write_sidecar(path: Path | str, sha256: str) -> Path:
    path = Path(path)
    side = sidecar_path(path)
    atomic_write_bytes(side, f"{sha256}  {path.name}\n".encode())
    return side
