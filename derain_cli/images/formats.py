"""The picture formats the tool reads and writes, named by ``--format`` key and by suffix."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from derain_cli.errors import UsageError


@dataclass(frozen=True)
class FormatSpec:
    """What an output format can hold, so encoding can decide what to keep and what to drop."""

    key: str
    pillow: str
    suffixes: tuple[str, ...]
    alpha: bool
    max_bit_depth: int
    grayscale: bool


#: Output formats: ``--format`` key -> capabilities. The first suffix is the canonical one.
SUPPORTED_FORMATS: dict[str, FormatSpec] = {
    "png": FormatSpec("png", "PNG", (".png",), alpha=True, max_bit_depth=16, grayscale=True),
    "jpg": FormatSpec(
        "jpg", "JPEG", (".jpg", ".jpeg"), alpha=False, max_bit_depth=8, grayscale=True
    ),
    "webp": FormatSpec("webp", "WEBP", (".webp",), alpha=True, max_bit_depth=8, grayscale=False),
    "tiff": FormatSpec(
        "tiff", "TIFF", (".tif", ".tiff"), alpha=True, max_bit_depth=16, grayscale=True
    ),
}
_ALIASES = {"jpeg": "jpg", "tif": "tiff"}
#: Every image suffix the tool reads (any case): the output formats' and those it only reads.
#: Folders and globs for ``derain``, ``derain train``, ``derain eval`` and ``derain synth`` alike.
READABLE_SUFFIXES: frozenset[str] = frozenset(
    {
        *(suffix for spec in SUPPORTED_FORMATS.values() for suffix in spec.suffixes),
        *(".jpe", ".jfif", ".bmp", ".gif", ".ppm", ".pgm", ".pbm", ".pnm", ".tga"),
    }
)
#: ``--format`` key -> its canonical suffix (``jpg`` -> ``.jpg``).
FORMAT_SUFFIXES: dict[str, str] = {key: spec.suffixes[0] for key, spec in SUPPORTED_FORMATS.items()}
#: Output suffixes we can write, mapped to their ``--format`` key.
WRITABLE_SUFFIXES: dict[str, str] = {
    suffix: key for key, spec in SUPPORTED_FORMATS.items() for suffix in spec.suffixes
}


def normalize_format(fmt: str) -> str:
    """``"JPEG"``, ``"jpeg"``, ``".jpg"`` -> ``"jpg"``; raises UsageError for anything unknown."""
    key = fmt.lower().lstrip(".")
    key = _ALIASES.get(key, key)
    if key not in SUPPORTED_FORMATS:
        choices = ", ".join(SUPPORTED_FORMATS)
        raise UsageError(f"unknown image format {fmt!r} (choose one of: {choices})")
    return key


def format_for_path(path: Path | str) -> str:
    """The output format key implied by a file name's suffix (``photo.JPEG`` -> ``"jpg"``)."""
    suffix = Path(path).suffix.lower()
    for key, spec in SUPPORTED_FORMATS.items():
        if suffix in spec.suffixes:
            return key
    known = ", ".join(s for spec in SUPPORTED_FORMATS.values() for s in spec.suffixes)
    raise UsageError(f"{path}: cannot tell the image format from the suffix (use one of {known})")
