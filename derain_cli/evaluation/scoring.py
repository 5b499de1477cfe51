"""Score derainers on folders of images: pairing by file stem, one pass per image, aggregation.

The library side of ``derain eval``. A *method* is one row of the final table: ``input`` (the
rainy image itself, always first, so every table shows whether a model helps at all), one row
per weights (run through a :class:`~derain_cli.inference.engine.Derainer`), or a folder of
existing results (``--pred``).

* Pairing is by file stem (``rainy/a.png`` with ``clean/a.jpg``). Every stem that cannot be
  scored is reported as a :class:`Problem` (no clean image, no prediction, two files with the
  same stem, sizes that differ, a file that cannot be read): nothing is dropped silently. With
  a limit, the stems after the last selected pair are only counted (``Plan.skipped``).
* Each image is decoded once and every method runs on it before the next image, so a model is
  loaded once for the whole set and memory holds one image at a time.
* Model outputs are quantised to the input's bit depth before scoring: the numbers are those of
  the files ``derain run`` (or ``--save-dir``) would write.
* A *set* is the last hyphen-separated word of the stem (``skimage-coffee-storm`` -> ``storm``).
  Per-set means are reported only when there are at least two sets and each has at least two
  images; otherwise the suffixes are just parts of names (``img-001``) and only the overall mean
  is shown.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from derain_cli.errors import DerainError, UsageError, setting
from derain_cli.evaluation import metrics
from derain_cli.images.formats import READABLE_SUFFIXES
from derain_cli.images.io import Picture, read_image, write_image
from derain_cli.inference.batch import Derain

INPUT_LABEL = "input"
ALL_SETS = "all"


@dataclass(frozen=True)
class Problem:
    """A stem (or file) that could not be scored, and why."""

    stem: str
    reason: str


@dataclass(frozen=True)
class Item:
    """One stem to score: its rainy input, clean reference and existing prediction (if any)."""

    stem: str
    rainy: Path | None = None
    clean: Path | None = None
    pred: Path | None = None


@dataclass(frozen=True)
class Plan:
    """The pairs to score and the stems that cannot be; ``skipped`` counts the stems that sort
    after the last pair kept by ``limit`` (neither scored nor reported as problems)."""

    items: list[Item]
    problems: list[Problem]
    skipped: int = 0


@dataclass(frozen=True)
class Method:
    """One row of the table: a label and how to get its image from the rainy input.

    ``derain`` is None for rows that read their image from disk (``input`` and ``--pred``).
    """

    label: str
    derain: Derain | None = None
    description: str = ""


@dataclass
class Score:
    """The metrics of one method on one image (None where a metric does not apply)."""

    method: str
    stem: str
    set: str
    psnr: float | None = None
    ssim: float | None = None
    niqe: float | None = None
    seconds: float | None = None
    cast: float | None = None  # metrics.colour_shift, grey levels


@dataclass
class Summary:
    """Means of one method over one set (``all`` = every scored image)."""

    method: str
    set: str
    count: int
    psnr: float | None
    ssim: float | None
    niqe: float | None
    cast: float | None = None


@dataclass
class Report:
    methods: list[str]
    scores: list[Score]
    problems: list[Problem]
    space: str  # "y" or "rgb"
    sets: list[str] = field(default_factory=list)

    def summaries(self) -> list[Summary]:
        """Overall means per method, then per-set means (see the module docstring)."""
        out = []
        for method in self.methods:
            rows = [s for s in self.scores if s.method == method]
            out.append(_summarise(method, ALL_SETS, rows))
            for name in self.sets:
                out.append(_summarise(method, name, [s for s in rows if s.set == name]))
        return out

    def to_dict(self) -> dict[str, object]:
        """JSON-ready (non-finite numbers become None)."""
        return {
            "space": self.space,
            "methods": self.methods,
            "sets": self.sets,
            "summary": [finite_row(asdict(s)) for s in self.summaries()],
            "images": [finite_row(asdict(s)) for s in self.scores],
            "problems": [asdict(p) for p in self.problems],
        }


def finite_row(row: dict[str, object]) -> dict[str, object]:
    """The row with NaN and infinite scores as None (JSON and CSV have no NaN)."""
    return {
        k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in row.items()
    }


def _mean(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return float(np.mean(present)) if present else None


def _summarise(method: str, name: str, rows: list[Score]) -> Summary:
    return Summary(
        method=method,
        set=name,
        count=len(rows),
        psnr=_mean([r.psnr for r in rows]),
        ssim=_mean([r.ssim for r in rows]),
        niqe=_mean([r.niqe for r in rows]),
        cast=_mean([r.cast for r in rows]),
    )


# --------------------------------------------------------------------------------------------
# pairing


def set_of(stem: str) -> str:
    """The set an image belongs to: the last hyphen-separated word of its stem."""
    return stem.rsplit("-", 1)[-1] if "-" in stem else ""


def infer_sets(stems: Sequence[str]) -> list[str]:
    """Sets worth a row: at least two of them, each with at least two images (else none)."""
    counts: dict[str, int] = {}
    for stem in stems:
        counts[set_of(stem)] = counts.get(set_of(stem), 0) + 1
    if len(counts) < 2 or "" in counts or min(counts.values()) < 2:
        return []
    return sorted(counts)


def list_images(folder: Path, option: str) -> tuple[dict[str, Path], list[Problem]]:
    """Images directly inside ``folder`` by stem; two files with one stem are a problem."""
    if not folder.is_dir():
        raise UsageError(f"{option} {folder}: not a folder")
    by_stem: dict[str, list[Path]] = {}
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.suffix.lower() in READABLE_SUFFIXES:
            by_stem.setdefault(path.stem, []).append(path)
    problems = [
        Problem(stem, f"{option}: several files share this stem: {', '.join(p.name for p in ps)}")
        for stem, ps in by_stem.items()
        if len(ps) > 1
    ]
    return {stem: ps[0] for stem, ps in by_stem.items() if len(ps) == 1}, problems


def plan(
    *,
    rainy: Path | None,
    clean: Path | None,
    pred: Path | None,
    limit: int | None = None,
) -> Plan:
    """Pair the folders by stem; everything that cannot be paired becomes a Problem."""
    if rainy is None and pred is None:
        raise UsageError(
            f"give {setting('rainy')} DIR (to derain and score) or {setting('pred')} DIR "
            "(results to score)"
        )
    folders = {"rainy": rainy, "pred": pred, "clean": clean}
    label = {name: setting(name) for name in folders}  # "rainy"; "--rainy" on the CLI
    found: dict[str, dict[str, Path]] = {}
    problems: list[Problem] = []
    for name, folder in folders.items():
        if folder is not None:
            found[name], dup = list_images(folder, label[name])
            problems += dup
    primary = "rainy" if rainy is not None else "pred"
    if not found[primary]:
        raise UsageError(f"{label[primary]} {folders[primary]}: no images found")
    stems = sorted(set().union(*(found[o] for o in found)))
    items: list[Item] = []
    for stem in stems:
        missing = [label[o] for o in found if stem not in found[o]]
        if missing:
            have = ", ".join(label[o] for o in found if stem in found[o]) or "none"
            if not any(p.stem == stem for p in problems):
                problems.append(Problem(stem, f"only in {have}; missing in {', '.join(missing)}"))
            continue
        items.append(
            Item(
                stem=stem,
                rainy=found.get("rainy", {}).get(stem),
                clean=found.get("clean", {}).get(stem),
                pred=found.get("pred", {}).get(stem),
            )
        )
    skipped = 0
    if limit is not None and limit < 1:
        raise UsageError(f"{setting('limit')} {limit}: must be at least 1")
    if limit is not None and limit <= len(items):
        # --limit selects the first N pairs by stem: stems sorting after the last of them were
        # not looked at, so their problems (e.g. no prediction yet) are not reported.
        last = items[limit - 1].stem
        items = items[:limit]
        beyond = {s for s in stems if s > last} | {p.stem for p in problems if p.stem > last}
        problems = [p for p in problems if p.stem <= last]
        skipped = len(beyond)
    if not items:
        raise UsageError("no image could be paired by file stem: " + _first_problems(problems))
    return Plan(items=items, problems=problems, skipped=skipped)


def _first_problems(problems: Sequence[Problem], count: int = 3) -> str:
    shown = "; ".join(f"{p.stem}: {p.reason}" for p in problems[:count])
    more = len(problems) - count
    return shown + (f" (+{more} more)" if more > 0 else "")


# --------------------------------------------------------------------------------------------
# scoring


def quantise(rgb: np.ndarray, bit_depth: int) -> np.ndarray:
    """Round to the levels a file of ``bit_depth`` bits stores (what would be saved)."""
    levels = float(2**bit_depth - 1)
    return (np.round(np.clip(rgb, 0.0, 1.0) * levels) / levels).astype(np.float32)


def score_image(
    image: np.ndarray,
    clean: np.ndarray | None,
    *,
    rgb: bool = False,
    with_niqe: bool = True,
) -> tuple[float | None, float | None, float | None, float | None]:
    """(PSNR, SSIM, NIQE, colour shift) of one image; full-reference metrics need ``clean``.

    NIQE is None for images smaller than two 96x96 blocks. The colour shift
    (:func:`~derain_cli.evaluation.metrics.colour_shift`) is always measured on RGB.
    """
    p = s = n = c = None
    if clean is not None:
        p = metrics.psnr(image, clean, rgb=rgb)
        s = metrics.ssim(image, clean, rgb=rgb)
        c = metrics.colour_shift(image, clean)
    if with_niqe:
        try:
            n = metrics.niqe(image)
        except ValueError:
            n = None
    return p, s, n, c


def safe_label(label: str) -> str:
    """A folder name for a method label (``--save-dir DIR/<label>/``)."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", label).strip("._")
    return name or "weights"


GENERIC_STEMS = frozenset({"g_b", "model", "weights", "generator", "ema"})


def weights_label(spec: str) -> str:
    """A short row label for a ``--weights`` spec: a file's stem (with its folder when the stem
    is generic, e.g. ``run3/G_B``), a registered name or ``hf://`` spec as given."""
    if spec.startswith("hf://") or ("/" not in spec and "." not in spec):
        return spec
    path = Path(spec)
    if path.stem.lower() in GENERIC_STEMS and path.parent.name:
        return f"{path.parent.name}/{path.stem}"
    return path.stem


def unique_labels(labels: Sequence[str]) -> list[str]:
    """Make labels distinct (``a``, ``a#2``) and never equal to ``input``."""
    seen: dict[str, int] = {INPUT_LABEL: 1}
    out = []
    for label in labels:
        seen[label] = seen.get(label, 0) + 1
        out.append(label if seen[label] == 1 else f"{label}#{seen[label]}")
    return out


@dataclass
class GridRow:
    """Thumbnails for the comparison picture: one image, its label per column."""

    stem: str
    columns: list[tuple[str, np.ndarray]]


def evaluate(
    items_plan: Plan,
    methods: Sequence[Method],
    *,
    rgb: bool = False,
    with_niqe: bool = True,
    save_dir: Path | None = None,
    grid_images: int = 0,
    grid_height: int = 192,
    on_step: Callable[[str, str], None] | None = None,
) -> tuple[Report, list[GridRow]]:
    """Score every method on every paired image.

    ``methods`` lists the rows after ``input`` (``input`` is added here when rainy images are
    available). ``on_step(stem, label)`` is called after each image x method (progress bars).
    Images that fail to load or have mismatched sizes become Problems; the run goes on.
    """
    has_rainy = items_plan.items[0].rainy is not None
    rows: list[Method] = [Method(INPUT_LABEL, description="rainy")] if has_rainy else []
    rows += list(methods)
    has_clean = items_plan.items[0].clean is not None
    if not has_clean and not with_niqe:
        raise UsageError(
            f"nothing to compute: no {setting('clean')} images and {setting('with_niqe', False)}"
        )
    scores: list[Score] = []
    problems = list(items_plan.problems)
    grid: list[GridRow] = []
    for item in items_plan.items:
        try:
            source, clean = _load_item(item)
        except DerainError as exc:
            problems.append(Problem(item.stem, str(exc)))
            for method in rows:
                if on_step is not None:
                    on_step(item.stem, method.label)
            continue
        target = clean.rgb if clean is not None else None
        columns: list[tuple[str, np.ndarray]] = []
        for method in rows:
            started = time.perf_counter()
            try:
                image = _method_output(method, item, source)
            except DerainError as exc:
                image = None
                problems.append(Problem(item.stem, f"{method.label}: {exc}"))
            elapsed = time.perf_counter() - started if method.derain is not None else None
            if image is not None and target is not None and image.shape != target.shape:
                problems.append(Problem(item.stem, _size_mismatch(method.label, image, target)))
            elif image is not None:
                if save_dir is not None and method.derain is not None:
                    dest = save_dir / safe_label(method.label) / f"{item.stem}.png"
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    write_image(dest, source, image)
                p, s, n, c = score_image(image, target, rgb=rgb, with_niqe=with_niqe)
                scores.append(
                    Score(method.label, item.stem, set_of(item.stem), p, s, n, elapsed, c)
                )
                shown = "rainy (input)" if method.label == INPUT_LABEL else method.label
                columns.append((shown, image))
            if on_step is not None:
                on_step(item.stem, method.label)
        if len(grid) < grid_images:
            if target is not None:
                columns.append(("clean", target))
            grid.append(GridRow(item.stem, [(c, _thumbnail(im, grid_height)) for c, im in columns]))
    stems = sorted({s.stem for s in scores})
    report = Report(
        methods=[m.label for m in rows],
        scores=scores,
        problems=problems,
        space="rgb" if rgb else "y",
        sets=infer_sets(stems),
    )
    return report, grid


def _load_item(item: Item) -> tuple[Picture, Picture | None]:
    """The picture methods start from (rainy, else the prediction) and the clean reference."""
    first = item.rainy if item.rainy is not None else item.pred
    assert first is not None
    source = read_image(first)
    clean = read_image(item.clean) if item.clean is not None else None
    return source, clean


def _method_output(method: Method, item: Item, source: Picture) -> np.ndarray:
    """The image a row scores: a model's (quantised) output, the input, or a saved result."""
    if method.derain is not None:
        return quantise(method.derain(source.rgb), source.bit_depth)
    if method.label == INPUT_LABEL or item.rainy is None:
        return source.rgb
    assert item.pred is not None
    return read_image(item.pred).rgb


def _size_mismatch(label: str, image: np.ndarray, target: np.ndarray) -> str:
    h, w = image.shape[:2]
    th, tw = target.shape[:2]
    return f"{label}: size {w}x{h} differs from the clean image's {tw}x{th}"


def _thumbnail(rgb: np.ndarray, height: int) -> np.ndarray:
    import cv2

    h, w = rgb.shape[:2]
    width = max(1, round(w * height / h))
    return cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA)
