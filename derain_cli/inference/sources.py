"""The input files behind ``IN``: folders walked, globs expanded, entries that are not files named.

Hidden files and the output folder are never inputs; an entry named like a picture or a video that
is not a regular file (a dangling link, a FIFO...) is told to an :data:`OnSkip` rather than read.
"""

from __future__ import annotations

import errno
import glob
import os
import stat
from collections.abc import Callable
from pathlib import Path

from derain_cli.images.formats import READABLE_SUFFIXES
from derain_cli.video.formats import is_video_name

#: Called with ``(path, what it is)`` for each image-named entry of a folder or glob that is not a
#: regular file (a dangling symbolic link, a FIFO...) and is skipped, and for unreadable folders.
OnSkip = Callable[[Path, str], None]


def is_input_name(name: str) -> bool:
    """An image or a video name (hidden files excluded)."""
    if name.startswith("."):
        return False
    return Path(name).suffix.lower() in READABLE_SUFFIXES or is_video_name(name)


def inside(path: Path, folder: Path) -> bool:
    return Path(os.path.realpath(path)).is_relative_to(os.path.realpath(folder))


def nested_output(root: Path, out_dir: Path) -> Path | None:
    """``out_dir`` when it lies strictly inside ``root`` (so it must not be read as input)."""
    if inside(out_dir, root) and os.path.realpath(out_dir) != os.path.realpath(root):
        return out_dir
    return None


def walk_folder(
    root: Path, recursive: bool, exclude: Path, on_skip: OnSkip
) -> list[tuple[Path, Path]]:
    """Image files under ``root`` as (path, path relative to root), sorted, outputs excluded.

    Hidden files and folders are skipped, and so is ``exclude`` (the output folder) when it lies
    inside ``root``: a rerun must not derain its own earlier outputs. Symbolic links to folders
    are followed (mirrored under the link's name); one that leads back to a folder already read
    (a loop, or a second way into the same folder) is skipped and reported to ``on_skip``.
    """
    nested = nested_output(root, exclude)
    found: list[tuple[Path, Path]] = []
    seen: set[tuple[int, int]] = set()

    def unreadable(exc: OSError) -> None:
        on_skip(Path(exc.filename or root), f"a folder that cannot be read ({exc.strerror})")

    for dirpath, dirnames, filenames in os.walk(root, onerror=unreadable, followlinks=True):
        here = Path(dirpath)
        if nested is not None and inside(here, nested):
            dirnames.clear()
            continue
        try:
            info = os.stat(here)
        except OSError as exc:
            unreadable(exc)
            dirnames.clear()
            continue
        if (info.st_dev, info.st_ino) in seen:
            on_skip(here, "a symbolic link to a folder already read")
            dirnames.clear()
            continue
        seen.add((info.st_dev, info.st_ino))
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")) if recursive else []
        for name in sorted(filenames):
            path = here / name
            if is_input_name(name) and regular_or_report(path, on_skip):
                found.append((path, path.relative_to(root)))
    return sorted(found, key=lambda pair: pair[1].as_posix())


def describe_entry(path: Path | str) -> str:
    """What a path that is not a regular file is, for messages: "a FIFO", "missing"..."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "a dangling symbolic link" if os.path.islink(path) else "missing"
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "a symbolic-link loop"
        return f"unreadable ({exc.strerror})"
    kinds = [
        (stat.S_ISREG, "a regular file"),
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    ]
    return next((what for test, what in kinds if test(mode)), "not a regular file")


def regular_or_report(path: Path, on_skip: OnSkip) -> bool:
    """Whether ``path`` is a regular file (after links); else tell ``on_skip`` what it is."""
    if path.is_file():
        return True
    what = describe_entry(path)
    if what != "a folder":  # a folder named like an image is simply not a file
        on_skip(path, what)
    return False


def glob_root(pattern: str) -> Path:
    """The folder before the first wildcard component: outputs mirror the tree below it."""
    parts = Path(pattern).parts
    fixed: list[str] = []
    for part in parts[:-1]:
        if glob.has_magic(part):
            break
        fixed.append(part)
    return Path(*fixed) if fixed else Path()


def expand_glob(pattern: str, exclude: Path, on_skip: OnSkip) -> list[tuple[Path, Path]]:
    root = glob_root(pattern)
    nested = nested_output(root, exclude)
    found: list[tuple[Path, Path]] = []
    for match in glob.glob(pattern, recursive=True):
        path = Path(match)
        if not (is_input_name(path.name) and regular_or_report(path, on_skip)):
            continue
        if nested is not None and inside(path, nested):
            continue
        found.append((path, path.relative_to(root)))
    return sorted(found, key=lambda pair: pair[1].as_posix())
