"""Stage the training data (and checkpoints to resume) into ``.stage/`` for a GPU window.

The device machine sees only the working tree and the paths a ``run`` call carries (64 MiB in
all); ``../shared`` does not travel. This copies the TRAINING images into the git-ignored
``.stage/`` folder, which the window's ``run`` call carries::

    .stage/data/rainy/rain-real/*  <- ../shared/data/rain-real/*
    .stage/data/rainy/syn-train/*  <- ../shared/data/syn-train/rainy/*
    .stage/data/clean/clean/*      <- ../shared/data/clean/*
    .stage/data/clean/extra-N/...  <- each --extra-clean DIR (recursively)
    .stage/resume/RUN/...         <- each --resume runs/RUN (checkpoint + parts, metrics, config)
    .stage/manifest.json          file, sha256, bytes, source of every staged file

bench-dev is never staged: a source path inside a ``bench-dev`` folder is refused, and so is any
file whose bytes equal a bench-dev image (a renamed copy). The whole travelling payload (tracked
and untracked-not-ignored files, ``.whl/`` and the stage) must stay under ``--budget-mb``
(default 60 MiB; the device limit is 64 MiB), else nothing is staged and the exit code is 1.

    python tools/gpu_window/stage.py
    python tools/gpu_window/stage.py --extra-clean ~/clean-photos --resume runs/baseline
    python tools/gpu_window/stage.py --max-side 768 --jpeg-quality 92   # shrink to fit a resume
"""

from __future__ import annotations

import argparse
import hashlib
import io
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from gw_common import (
    MANIFEST_NAME,
    REPO,
    STAGE_DIR,
    TRAVEL_LIMIT,
    MiB,
    check_run_name,
    folder_bytes,
    mib,
    sha256_bytes,
    sha256_file,
    travelling_files,
    write_json,
)

#: The image suffixes ``derain train`` reads (docs/training.md, "Data").
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm"})
FORBIDDEN_PART = "bench-dev"
DEFAULT_BUDGET_MB = 60.0


class StageError(Exception):
    """A refusal with a one-line reason (exit 1)."""


@dataclass(frozen=True)
class Source:
    """A folder of images and where its files go inside the stage."""

    folder: Path
    dest: str  # e.g. "data/rainy/rain-real"


def default_sources(shared: Path) -> list[Source]:
    return [
        Source(shared / "rain-real", "data/rainy/rain-real"),
        Source(shared / "syn-train" / "rainy", "data/rainy/syn-train"),
        Source(shared / "clean", "data/clean/clean"),
    ]


def check_not_bench_dev(path: Path) -> None:
    """Refuse a path that is, or resolves to, anything inside a ``bench-dev`` folder."""
    for candidate in (path, path.resolve()):
        if FORBIDDEN_PART in candidate.parts:
            raise StageError(
                f"{path}: inside {FORBIDDEN_PART}/ - bench-dev is the evaluation set and is never "
                "used for training"
            )


def list_images(folder: Path) -> list[Path]:
    """Image files under ``folder`` (recursive, hidden files and folders skipped), sorted."""
    if not folder.is_dir():
        raise StageError(f"{folder}: not a folder")
    found = []
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder)
        if any(part.startswith(".") for part in relative.parts):
            continue
        if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
            found.append(path)
    return found


def bench_dev_digests(bench_dev: Path | None) -> set[str]:
    if bench_dev is None or not bench_dev.is_dir():
        return set()
    return {sha256_file(p) for p in bench_dev.rglob("*") if p.is_file()}


#: Side of the grey thumbnails compared to catch resized or re-encoded copies of bench-dev images.
SIGNATURE_SIDE = 32
#: Correlation of two thumbnails above which an image counts as a copy of a bench-dev image.
#: Measured on the shared data: every training image against every bench-dev image at most 0.856;
#: a bench-dev photo against its own storm/streak version at least 0.935; a half-size JPEG q70
#: copy 0.9996.
SIGNATURE_MATCH = 0.9


def signature(path: Path) -> np.ndarray:
    """A zero-mean, unit-norm 32x32 grey thumbnail: equal for resized or re-encoded copies."""
    from PIL import Image, ImageOps

    with Image.open(path) as opened:
        grey = ImageOps.exif_transpose(opened).convert("L")
        small = grey.resize((SIGNATURE_SIDE, SIGNATURE_SIDE), Image.Resampling.BOX)
    values = np.asarray(small, dtype=np.float64).ravel()
    values = values - values.mean()
    norm = float(np.linalg.norm(values))
    return values / norm if norm > 0 else values


def bench_dev_signatures(bench_dev: Path | None) -> tuple[list[Path], np.ndarray]:
    """Signatures of every bench-dev image (rainy and clean): ``(paths, (n, 1024) matrix)``."""
    paths: list[Path] = []
    if bench_dev is not None and bench_dev.is_dir():
        paths = sorted(p for p in bench_dev.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        return [], np.zeros((0, SIGNATURE_SIDE * SIGNATURE_SIDE))
    return paths, np.stack([signature(p) for p in paths])


def check_not_a_bench_dev_photo(path: Path, bench: tuple[list[Path], np.ndarray]) -> None:
    """Refuse an image whose thumbnail matches a bench-dev image (a resized/re-encoded copy,
    e.g. the original of a bench-dev photo offered as an extra clean photo)."""
    paths, matrix = bench
    if not paths:
        return
    scores = matrix @ signature(path)
    best = int(np.argmax(scores))
    if scores[best] > SIGNATURE_MATCH:
        raise StageError(
            f"{path}: looks like bench-dev's {paths[best].name} (thumbnail correlation "
            f"{scores[best]:.3f}); bench-dev photos are never trained on"
        )


def reencode(path: Path, max_side: int | None, quality: int) -> bytes:
    """The image as JPEG bytes, EXIF orientation applied, long side at most ``max_side``."""
    from PIL import Image, ImageOps

    with Image.open(path) as opened:
        image = ImageOps.exif_transpose(opened).convert("RGB")
    if max_side is not None and max(image.size) > max_side:
        scale = max_side / max(image.size)
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        image = image.resize(size, Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality, subsampling=0)
    return buffer.getvalue()


def stage_images(
    sources: list[Source],
    root: Path,
    *,
    forbidden: set[str],
    max_side: int | None = None,
    quality: int | None = None,
    lookalikes: tuple[list[Path], np.ndarray] | None = None,
) -> list[dict[str, object]]:
    """Copy (or re-encode) every source image into ``root``; the manifest rows."""
    rows: list[dict[str, object]] = []
    taken: set[str] = set()
    for source in sources:
        check_not_bench_dev(source.folder)
        for path in list_images(source.folder):
            check_not_bench_dev(path)
            original = path.read_bytes()
            if sha256_bytes(original) in forbidden:
                raise StageError(f"{path}: identical to a bench-dev image; refusing to stage it")
            if lookalikes is not None:
                check_not_a_bench_dev_photo(path, lookalikes)
            relative = path.relative_to(source.folder)
            if max_side is not None or quality is not None:
                data = reencode(path, max_side, quality or 95)
                relative = relative.with_suffix(".jpg")
            else:
                data = original
            name = f"{source.dest}/{relative.as_posix()}"
            if name.lower() in taken:
                raise StageError(f"{path}: two sources would both be staged as {name}")
            taken.add(name.lower())
            dest = root / name
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(data)
            rows.append(
                {
                    "file": name,
                    "sha256": sha256_bytes(data),
                    "bytes": len(data),
                    "source": str(path),
                }
            )
    return rows


def stage_resume(run_dirs: list[Path], root: Path) -> list[dict[str, object]]:
    """Copy each run's checkpoint (manifest + parts), metrics and config into ``resume/RUN``."""
    from derain_cli.train.checkpoint import checkpoint_files, load_checkpoint

    rows: list[dict[str, object]] = []
    for run_dir in run_dirs:
        name = check_run_name(run_dir.name)
        checkpoint = run_dir / "checkpoint.pt"
        if not checkpoint.is_file():
            raise StageError(f"{run_dir}: no checkpoint.pt to resume (run collect.py first)")
        step = int(load_checkpoint(checkpoint)["step"])  # verifies every part's sha256
        files = checkpoint_files(checkpoint)
        files += [p for p in (run_dir / "metrics.jsonl", run_dir / "config.toml") if p.is_file()]
        for path in files:
            dest = root / "resume" / name / path.name
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, dest)
            rows.append(
                {
                    "file": f"resume/{name}/{path.name}",
                    "sha256": sha256_file(dest),
                    "bytes": dest.stat().st_size,
                    "source": str(path),
                    "step": step,
                }
            )
    return rows


def digest_of(rows: list[dict[str, object]]) -> str:
    """One sha256 for the staged data: over the sorted ``file<TAB>sha256`` lines."""
    lines = sorted(f"{r['file']}\t{r['sha256']}\n" for r in rows)
    return hashlib.sha256("".join(lines).encode()).hexdigest()


def group_summary(rows: list[dict[str, object]]) -> dict[str, dict[str, int]]:
    groups: dict[str, dict[str, int]] = {}
    for row in rows:
        parts = str(row["file"]).split("/")
        key = "/".join(parts[:3] if parts[0] == "data" else parts[:2])
        entry = groups.setdefault(key, {"count": 0, "bytes": 0})
        entry["count"] += 1
        entry["bytes"] += int(str(row["bytes"]))
    return groups


def tree_bytes(repo: Path, skip: list[Path]) -> int:
    """Bytes of the files that travel without ``carry`` (``skip`` folders not counted twice)."""
    skipped = [s.resolve() for s in skip]
    total = 0
    for path in travelling_files(repo):
        resolved = path.resolve()
        if not any(resolved.is_relative_to(s) for s in skipped):
            total += path.stat().st_size
    return total


def replace_stage(staged: Path, dest: Path) -> None:
    """Put the new stage in place; an existing ``dest`` must be a stage (or empty)."""
    if dest.exists():
        if not (dest / MANIFEST_NAME).is_file() and any(dest.iterdir()):
            raise StageError(f"{dest}: exists and is not a stage folder (no {MANIFEST_NAME})")
        old = dest.with_name(f"{dest.name}.old-{int(time.time())}")
        dest.rename(old)
        staged.rename(dest)
        shutil.rmtree(old)
    else:
        staged.rename(dest)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shared", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--dest", type=Path, default=STAGE_DIR)
    parser.add_argument(
        "--extra-clean", type=Path, action="append", default=[], help="more clean photos"
    )
    parser.add_argument(
        "--resume",
        type=Path,
        action="append",
        default=[],
        help="a run folder (runs/NAME) whose checkpoint the next window continues",
    )
    parser.add_argument("--budget-mb", type=float, default=DEFAULT_BUDGET_MB)
    parser.add_argument(
        "--max-side", type=int, default=None, help="re-encode: long side at most this"
    )
    parser.add_argument("--jpeg-quality", type=int, default=None, help="re-encode as JPEG")
    parser.add_argument(
        "--bench-dev",
        type=Path,
        default=None,
        help="bench-dev folder whose images must not be staged (default: SHARED/bench-dev)",
    )
    parser.add_argument("--whl", type=Path, default=REPO / ".whl", help="carried wheels")
    args = parser.parse_args(argv)

    shared: Path = args.shared
    sources = default_sources(shared)
    sources += [Source(d, f"data/clean/extra-{i}") for i, d in enumerate(args.extra_clean, 1)]
    bench = args.bench_dev or shared / "bench-dev"
    dest: Path = args.dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f"{dest.name}.new-", dir=dest.parent))
    try:
        forbidden = bench_dev_digests(bench)
        rows = stage_images(
            sources,
            work,
            forbidden=forbidden,
            max_side=args.max_side,
            quality=args.jpeg_quality,
            lookalikes=bench_dev_signatures(bench),
        )
        resume_rows = stage_resume(args.resume, work)
        stage_bytes = folder_bytes(work)
        tree = tree_bytes(REPO, [dest, work, args.whl])
        whl = folder_bytes(args.whl)
        budget = int(args.budget_mb * MiB)
        groups = group_summary(rows)
        digest = digest_of(rows)
        manifest = {
            "format": 1,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "shared": str(shared),
            "transform": (
                {"max_side": args.max_side, "jpeg_quality": args.jpeg_quality or 95}
                if args.max_side is not None or args.jpeg_quality is not None
                else None
            ),
            "groups": groups,
            "digest": digest,
            "data_bytes": sum(int(str(r["bytes"])) for r in rows),
            "files": rows,
            "resume": resume_rows,
            "travel": {"tree_bytes": tree, "whl_bytes": whl, "stage_bytes": stage_bytes},
        }
        write_json(work / MANIFEST_NAME, manifest)
        stage_bytes = folder_bytes(work)
        total = tree + whl + stage_bytes
        for group, info in groups.items():
            print(f"  {group:24} {info['count']:4d} files  {mib(info['bytes'])}")
        for row in resume_rows:
            print(f"  {row['file']:40} {mib(int(str(row['bytes'])))} (step {row['step']})")
        print(
            f"staged {mib(stage_bytes)} + tree {mib(tree)} + .whl {mib(whl)} = {mib(total)} "
            f"(budget {mib(budget)}, device limit {mib(TRAVEL_LIMIT)})"
        )
        if total > budget:
            raise StageError(
                f"the travelling payload {mib(total)} exceeds the budget {mib(budget)}: stage less "
                "(e.g. --max-side 768), drop a --resume, or raise --budget-mb (limit 64 MiB)"
            )
        replace_stage(work, dest)
        print(f"stage ready: {dest} (data digest {digest[:16]})")
        return 0
    except StageError as exc:
        print(f"stage.py: {exc}", file=sys.stderr)
        return 1
    finally:
        if work.exists():
            shutil.rmtree(work)


if __name__ == "__main__":
    sys.exit(main())
