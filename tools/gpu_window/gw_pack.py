"""Packing ``$OUT`` within the device's limits: at most 8 files, 16 MiB each, 64 MiB in all.

One ``window.tar.gz`` holds every run's results; the checkpoint of at most one run travels
beside it as part files. What goes in is chosen by priority (logs and metrics, then G_B, then
the checkpoint, then G_R, then pictures); what does not fit is listed, never dropped silently.
"""

from __future__ import annotations

import tarfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gw_common import (
    OUT_MAX_DEPTH,
    OUT_MAX_FILE,
    OUT_MAX_FILES,
    OUT_MAX_TOTAL,
    PACK_NAME,
    SAFE_NAME,
    WINDOW_JSON,
    MiB,
    mib,
    write_json,
)

#: Logs are cut to their last bytes in the pack (the head of a long log is start-up noise).
LOG_TAIL_BYTES = 1 * MiB
#: Kept free in the 64 MiB for window.log and rounding.
OUT_RESERVE = 1 * MiB
TAR_SLACK = 256 * 1024  # tar headers, gzip worst case, window.json


@dataclass(frozen=True)
class PackItem:
    path: Path
    arcname: str
    priority: int  # 0 logs/metrics/config, 1 G_B, 3 G_R, 4 pictures (2 is the checkpoint)
    size: int


@dataclass
class PackChoice:
    items: list[PackItem]
    checkpoint: list[Path]
    left_out: list[dict[str, str]]
    tar_estimate: int


def tar_estimate(items: Sequence[PackItem]) -> int:
    """An upper bound of the .tar.gz size: headers, padding, gzip's worst case on random data."""
    raw = sum(512 + (item.size + 511) // 512 * 512 for item in items) + 10240
    return int(raw * 1.002) + TAR_SLACK


def choose_pack(
    items: Sequence[PackItem],
    checkpoint: Sequence[Path],
    *,
    tar_limit: int = OUT_MAX_FILE,
    total_limit: int = OUT_MAX_TOTAL - OUT_RESERVE,
    file_limit: int = OUT_MAX_FILE,
    max_files: int = OUT_MAX_FILES,
    other_files: int = 1,
) -> PackChoice:
    """Fill the tar and the checkpoint slot in priority order within the device's limits.

    ``other_files`` counts files in ``$OUT`` besides the tar and the checkpoint (window.log).
    """
    chosen: list[PackItem] = []
    left_out: list[dict[str, str]] = []
    ckpt_sizes = [p.stat().st_size for p in checkpoint]
    ckpt_chosen: list[Path] = []

    def fits(extra: Sequence[PackItem], ckpt_bytes: int) -> str:
        estimate = tar_estimate([*chosen, *extra])
        if estimate > tar_limit:
            return f"the tar would pass {mib(tar_limit)}"
        if estimate + ckpt_bytes > total_limit:
            return f"$OUT would pass {mib(total_limit)}"
        return ""

    ordered = sorted(items, key=lambda i: i.priority)
    for item in [i for i in ordered if i.priority < 2]:
        reason = fits([item], 0)
        if reason:
            left_out.append({"file": item.arcname, "reason": reason})
        else:
            chosen.append(item)
    if checkpoint:
        reason = ""
        if 1 + other_files + len(checkpoint) > max_files:
            reason = f"{len(checkpoint)} checkpoint files + tar + log exceed {max_files} files"
        elif max(ckpt_sizes) > file_limit:
            reason = f"a checkpoint file is over {mib(file_limit)} (set train.checkpoint_part_mb)"
        else:
            reason = fits([], sum(ckpt_sizes))
        if reason:
            left_out.append({"file": f"checkpoint ({mib(sum(ckpt_sizes))})", "reason": reason})
        else:
            ckpt_chosen = list(checkpoint)
    ckpt_bytes = sum(p.stat().st_size for p in ckpt_chosen)
    for item in [i for i in ordered if i.priority >= 2]:
        reason = fits([item], ckpt_bytes)
        if reason:
            left_out.append({"file": item.arcname, "reason": reason})
        else:
            chosen.append(item)
    return PackChoice(chosen, ckpt_chosen, left_out, tar_estimate(chosen))


def tail_copy(src: Path, dest: Path, limit: int = LOG_TAIL_BYTES) -> Path:
    """``dest`` holds the last ``limit`` bytes of ``src`` (with a note when cut)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    size = src.stat().st_size
    with open(src, "rb") as handle:
        if size > limit:
            handle.seek(size - limit)
            data = b"[... %d bytes cut ...]\n" % (size - limit) + handle.read()
        else:
            data = handle.read()
    dest.write_bytes(data)
    return dest


def sample_jpeg(run_dir: Path, dest_dir: Path) -> Path | None:
    """The last sample grid as a JPEG (PNG grids are megabytes; this is for a look only)."""
    samples = sorted((run_dir / "samples").glob("step-*.png"))
    if not samples:
        return None
    from PIL import Image

    dest = dest_dir / (samples[-1].stem + ".jpg")
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        with Image.open(samples[-1]) as image:
            image.convert("RGB").save(dest, format="JPEG", quality=90)
    except OSError:  # a picture must never cost the pack
        return None
    return dest


def pack_items(run_dirs: Sequence[Path], scratch: Path) -> list[PackItem]:
    items: list[PackItem] = []

    def add(path: Path | None, arcname: str, priority: int) -> None:
        if path is not None and path.is_file():
            items.append(PackItem(path, arcname, priority, path.stat().st_size))

    for run_dir in run_dirs:
        base = f"runs/{run_dir.name}"
        for name in ("config.toml", "metrics.jsonl"):
            add(run_dir / name, f"{base}/{name}", 0)
        for name in ("train.log", "export.log"):
            if (run_dir / name).is_file():
                add(tail_copy(run_dir / name, scratch / run_dir.name / name), f"{base}/{name}", 0)
        for stem, priority in (("G_B", 1), ("G_R", 3)):
            add(run_dir / f"{stem}.safetensors", f"{base}/{stem}.safetensors", priority)
            add(run_dir / f"{stem}.safetensors.sha256", f"{base}/{stem}.safetensors.sha256", 0)
        add(run_dir / "loss-curve.png", f"{base}/loss-curve.png", 4)
        jpeg = sample_jpeg(run_dir, scratch / run_dir.name / "samples")
        if jpeg is not None:
            add(jpeg, f"{base}/samples/{jpeg.name}", 4)
    return items


def write_pack(out: Path, choice: PackChoice, summary: dict[str, Any], scratch: Path) -> Path:
    """``$OUT/window.tar.gz`` (+ ``window.json`` inside) and the checkpoint files."""
    summary_path = scratch / WINDOW_JSON
    write_json(summary_path, summary)
    target = out / PACK_NAME
    tmp = out / (PACK_NAME + ".part")
    with tarfile.open(tmp, "w:gz", compresslevel=6) as tar:
        tar.add(summary_path, arcname=WINDOW_JSON)
        for item in choice.items:
            tar.add(item.path, arcname=item.arcname)
    tmp.replace(target)
    return target


def check_out(out: Path) -> list[str]:
    """Problems with ``$OUT`` against the device's rules (empty when it will all come back)."""
    problems = []
    files = [p for p in out.rglob("*") if p.is_file()]
    if len(files) > OUT_MAX_FILES:
        problems.append(f"{len(files)} files (at most {OUT_MAX_FILES} come back)")
    total = 0
    for path in files:
        relative = path.relative_to(out)
        total += path.stat().st_size
        if path.stat().st_size > OUT_MAX_FILE:
            problems.append(f"{relative}: over {mib(OUT_MAX_FILE)}")
        if len(relative.parts) - 1 > OUT_MAX_DEPTH:
            problems.append(f"{relative}: deeper than {OUT_MAX_DEPTH} folders")
        if not all(SAFE_NAME.fullmatch(part) for part in relative.parts):
            problems.append(f"{relative}: a name outside [A-Za-z0-9._-]")
    if total > OUT_MAX_TOTAL:
        problems.append(f"{mib(total)} in all (at most {mib(OUT_MAX_TOTAL)})")
    return problems
