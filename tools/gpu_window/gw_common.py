"""Facts and small helpers shared by the GPU-window tools (stage, window, collect, register).

The numbers here are the device tool's limits (``/work/.library/device/README.md``): they are the
constraints every step of the procedure is sized against, so they live in one place.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

MiB = 2**20
REPO = Path(__file__).resolve().parents[2]

#: The working tree that travels to the device (tracked + untracked-not-ignored + carried).
TRAVEL_LIMIT = 64 * MiB
#: What comes back from ``$OUT``: file count, size of each, size of all, folder depth.
OUT_MAX_FILES = 8
OUT_MAX_FILE = 16 * MiB
OUT_MAX_TOTAL = 64 * MiB
OUT_MAX_DEPTH = 2
#: Names the device tool returns: letters, digits, '.', '_' and '-' alone.
SAFE_NAME = re.compile(r"[A-Za-z0-9._-]+")
#: Run names: a safe name that starts with a letter or digit (no hidden folders, no '..').
RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,59}")

STAGE_DIR = REPO / ".stage"
MANIFEST_NAME = "manifest.json"
PACK_NAME = "window.tar.gz"
LOG_NAME = "window.log"
WINDOW_JSON = "window.json"
CHECKPOINT_PREFIX = "ckpt-"


def check_run_name(name: str) -> str:
    if not RUN_NAME.fullmatch(name) or ".." in name:
        raise ValueError(
            f"run name {name!r}: use 1-60 letters, digits, '.', '_' or '-', starting with a "
            "letter or digit (the device returns no other file names)"
        )
    return name


def load_toml(path: Path) -> dict[str, Any]:
    with open(path, "rb") as handle:
        return tomllib.load(handle)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    tmp.replace(path)


def travelling_files(repo: Path = REPO) -> list[Path]:
    """The files a ``run`` call sends without ``carry``: tracked and untracked-not-ignored.

    Read with ``git ls-files`` (read-only). Deleted-but-tracked files are skipped.
    """
    listed = subprocess.run(
        ["git", "-C", str(repo), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        capture_output=True,
        check=True,
    ).stdout
    files = []
    for raw in sorted(set(listed.split(b"\0"))):
        if raw:
            path = repo / raw.decode("utf-8", "surrogateescape")
            if path.is_file() and not path.is_symlink():
                files.append(path)
    return files


def folder_bytes(folder: Path) -> int:
    """Bytes of every regular file under ``folder`` (0 when it does not exist)."""
    if not folder.exists():
        return 0
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


def mib(size: float) -> str:
    return f"{size / MiB:.2f} MiB"
