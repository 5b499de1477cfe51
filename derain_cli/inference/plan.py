"""Which files to derain and where each result goes: paths only, no pixels.

:func:`plan_jobs` turns ``IN...`` (files, folders, globs, or a lone ``-``) and ``-o OUT`` into a
list of :class:`Job` s. Every check that needs no pixels happens here (missing inputs, no images
found, output folder is a file, an output that would replace an input, two inputs writing the
same output), so a bad invocation fails before the model is loaded or any image is read. The
streamed runner over the jobs is :mod:`derain_cli.inference.batch`.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from derain_cli.atomic import same_file_key
from derain_cli.errors import UsageError, setting
from derain_cli.images.formats import (
    FORMAT_SUFFIXES,
    SUPPORTED_FORMATS,
    WRITABLE_SUFFIXES,
)
from derain_cli.inference.sources import (
    OnSkip,
    describe_entry,
    expand_glob,
    glob_root,
    inside,
    nested_output,
    walk_folder,
)
from derain_cli.video.formats import VIDEO_SUFFIXES, container_for, is_video_name

#: ``--format`` choices: ``auto`` keeps each input's format where it can be written.
FORMAT_CHOICES: tuple[str, ...] = ("auto", *SUPPORTED_FORMATS)
#: ``Job.fmt`` of a video: it keeps its container (``--format`` is for images).
VIDEO = "video"
STDIO = "-"
#: Suffix for a single file written next to its input when ``-o`` is left out.
DEFAULT_SIBLING_SUFFIX = "-derained"


def _ignore(path: Path, what: str) -> None:
    """The default :data:`OnSkip`: skip without a word."""


@dataclass(frozen=True)
class Job:
    """One input and where its result goes. ``None`` means stdin (input) or stdout (output)."""

    input: Path | None
    output: Path | None
    fmt: str  # a key of images.formats.SUPPORTED_FORMATS, or VIDEO

    @property
    def is_video(self) -> bool:
        return self.fmt == VIDEO

    @property
    def input_label(self) -> str:
        return STDIO if self.input is None else str(self.input)

    @property
    def output_label(self) -> str:
        return STDIO if self.output is None else str(self.output)


def plan_jobs(
    sources: str | Sequence[str],
    output: str | None,
    *,
    recursive: bool = False,
    suffix: str = "",
    fmt: str = "auto",
    skip_existing: bool = False,
    overwrite: bool = False,
    on_skip: OnSkip = _ignore,
) -> list[Job]:
    """Resolve ``IN...`` and ``-o OUT`` into jobs, or raise :class:`UsageError` (exit 2).

    Each ``IN`` is ``-`` (stdin), an existing file, an existing folder (its images; with
    ``recursive`` the whole tree, mirrored under ``OUT``), or a glob (mirrored under ``OUT`` from
    the glob's first wildcard folder). ``fmt="auto"`` keeps each input's format (``.jpg`` stays
    ``.jpg``; formats we cannot write, such as BMP or GIF, become PNG).

    Several inputs exist because shells expand ``derain *.jpg -o out/`` into many arguments; see
    :func:`_plan_several` for their rules. Repeated inputs count once, so one input left after
    that behaves exactly like a single ``IN``.

    ``on_skip(path, what)`` hears of each entry of a folder or glob that has an image name but is
    not a regular file (``what``: "a dangling symbolic link", "a FIFO"...), and of each subfolder
    that cannot be read; they are skipped.
    """
    if fmt not in FORMAT_CHOICES:
        raise UsageError(
            f"{setting('format')} {fmt!r}: unknown (choose from {', '.join(FORMAT_CHOICES)})"
        )
    if skip_existing and overwrite:
        raise UsageError(
            f"{setting('skip_existing')} and {setting('overwrite')} exclude each other; pick one"
        )
    if os.sep in suffix or "/" in suffix:
        raise UsageError(f"{setting('suffix')} {suffix!r}: must not contain a path separator")

    unique = _unique_sources([sources] if isinstance(sources, str) else list(sources))
    if not unique:
        raise UsageError("no input given (IN: an image, a folder, a quoted glob or -)")
    if len(unique) == 1:
        jobs = _plan_one(unique[0], output, recursive, suffix, fmt, on_skip)
    else:
        jobs = _plan_several(unique, output, recursive, suffix, fmt, on_skip)
    if skip_existing:
        jobs = _without_earlier_outputs(jobs)
    _refuse_collisions(jobs)
    return jobs


def _without_earlier_outputs(jobs: list[Job]) -> list[Job]:
    """Drop inputs that are the outputs of other jobs: results of an earlier run into the input
    folder itself (``derain shots -o shots --suffix _clean --skip-existing``, run again).

    Only with ``skip_existing``: those outputs are then left alone, never written, so no input
    is replaced, and they are not derained a second time (``a_clean_clean.png``).
    """
    outputs = {same_file_key(job.output) for job in jobs if job.output is not None}
    return [
        job
        for job in jobs
        if job.input is None
        or same_file_key(job.input) not in outputs
        or (job.output is not None and same_file_key(job.output) == same_file_key(job.input))
    ]


def _plan_one(
    source: str, output: str | None, recursive: bool, suffix: str, fmt: str, on_skip: OnSkip
) -> list[Job]:
    """A single ``IN``: a file may go to a file, a folder or stdout; stdin is allowed."""
    if source == STDIO:
        return [_stdin_job(output, fmt)]
    _refuse_missing([source])
    if os.path.isfile(source):
        return [_file_job(Path(source), output, suffix, fmt)]
    kind = "folder" if os.path.isdir(source) else "glob"
    out_dir = _output_folder(output, f"'{source}' is a {kind}")
    return _expand_source(source, out_dir, recursive, suffix, fmt, on_skip, nest=False)


def _plan_several(
    sources: list[str], output: str | None, recursive: bool, suffix: str, fmt: str, on_skip: OnSkip
) -> list[Job]:
    """Several ``IN`` s (files, folders, globs in any mix) into one output folder.

    Files land directly in ``OUT``; a glob mirrors its tree below its fixed part, as alone. A
    folder's images land directly in ``OUT`` too, unless several folders are given: then each
    one's tree goes under ``OUT/<folder name>/`` so that same-named files cannot clash. An image
    reached twice (``a.jpg`` and a folder holding it) is processed once, at its first mention.
    """
    if STDIO in sources:
        raise UsageError("'-' (stdin) cannot be combined with other inputs; run it separately")
    why = f"{len(sources)} inputs were given"
    out_dir = _output_folder(output, why)
    _refuse_missing(sources)
    folders = [source for source in sources if os.path.isdir(source)]
    _refuse_output_among_folders(folders, out_dir)
    nest = len(folders) > 1
    if nest:
        _refuse_same_folder_names(folders, out_dir)
    jobs: list[Job] = []
    for source in sources:
        if os.path.isfile(source):
            jobs.append(_mirrored_job(Path(source), Path(Path(source).name), out_dir, suffix, fmt))
        else:
            jobs.extend(_expand_source(source, out_dir, recursive, suffix, fmt, on_skip, nest=nest))
    seen: set[str] = set()
    unique_jobs: list[Job] = []
    for job in jobs:
        assert job.input is not None
        key = same_file_key(job.input)
        if key not in seen:
            seen.add(key)
            unique_jobs.append(job)
    return unique_jobs


def _expand_source(
    source: str,
    out_dir: Path,
    recursive: bool,
    suffix: str,
    fmt: str,
    on_skip: OnSkip,
    *,
    nest: bool,
) -> list[Job]:
    """The jobs of one folder or glob; finding no image in it is a usage error naming it."""
    if os.path.isdir(source):
        pairs = walk_folder(Path(source), recursive, out_dir, on_skip)
        if not pairs:
            what = "folder tree" if recursive else f"folder (use {setting('recursive', True)})"
            hint = _skipped_output_hint(Path(source), out_dir)
            raise UsageError(f"{source}: no images or videos found in this {what}{hint}")
        base = out_dir / _folder_name(source) if nest else out_dir
    else:
        pairs = expand_glob(source, out_dir, on_skip)
        if not pairs:
            hint = _skipped_output_hint(glob_root(source), out_dir)
            raise UsageError(f"{source}: no images or videos match this pattern{hint}")
        base = out_dir
    return [_mirrored_job(path, rel, base, suffix, fmt) for path, rel in pairs]


def _unique_sources(sources: list[str]) -> list[str]:
    """Drop repeated inputs (``a.jpg ./a.jpg``, ``in in/``), keeping the first spelling."""
    seen: set[str] = set()
    unique: list[str] = []
    for source in sources:
        exists = source != STDIO and os.path.exists(source)
        key = same_file_key(Path(source)) if exists else source
        if key not in seen:
            seen.add(key)
            unique.append(source)
    return unique


def _refuse_missing(sources: Sequence[str]) -> None:
    """Name every input that is neither a file, a folder nor a glob, before any work starts."""
    missing = [
        source
        for source in sources
        if not (os.path.isfile(source) or os.path.isdir(source) or glob.has_magic(source))
    ]
    for source in missing:
        what = describe_entry(source)
        if what != "missing":
            hint = "; use - to read standard input" if "FIFO" in what or "character" in what else ""
            raise UsageError(f"{source}: not an image file or a folder (it is {what}){hint}")
    if missing:
        raise UsageError(f"{', '.join(missing)}: no such file or folder")


def _folder_name(source: str) -> str:
    return Path(os.path.realpath(source)).name


def _refuse_output_among_folders(folders: Sequence[str], out_dir: Path) -> None:
    """A folder input inside OUT (``derain * -o out/`` on a rerun) would derain earlier outputs."""
    for folder in folders:
        if inside(Path(folder), out_dir):
            raise UsageError(
                f"{folder}: this input folder is (inside) the output folder {out_dir}; "
                "choose another -o"
            )


def _refuse_same_folder_names(folders: Sequence[str], out_dir: Path) -> None:
    by_name: dict[str, str] = {}
    for folder in folders:
        name = _folder_name(folder)
        if not name:
            raise UsageError(f"{folder}: cannot mirror a root folder with other folders")
        if name in by_name:
            raise UsageError(
                f"{by_name[name]} and {folder} would both be written to {out_dir / name}; "
                "run them separately"
            )
        by_name[name] = folder


def _stdin_job(output: str | None, fmt: str) -> Job:
    if output is None or output == STDIO:
        return Job(None, None, "png" if fmt == "auto" else fmt)
    if _looks_like_folder(output):
        raise UsageError(
            f"with '-' as input, {setting('output')} must be a file name or '-' "
            f"(got folder {output})"
        )
    return Job(None, Path(output), _format_for_file(Path(output), fmt))


def _file_job(path: Path, output: str | None, suffix: str, fmt: str) -> Job:
    if output is None:
        sibling_suffix = suffix or DEFAULT_SIBLING_SUFFIX
        return _mirrored_job(path, Path(path.name), path.parent, sibling_suffix, fmt)
    if output == STDIO:
        if is_video_name(path):
            raise UsageError(
                f"{path}: a video cannot be written to stdout; give {setting('output')} a file name"
            )
        return Job(path, None, "png" if fmt == "auto" else fmt)
    if _looks_like_folder(output):
        out_dir = _existing_folder_or_new(output)
        return _mirrored_job(path, Path(path.name), out_dir, suffix, fmt)
    if is_video_name(path) or is_video_name(output):
        return _video_file_job(path, Path(output), fmt)
    return Job(path, Path(output), _format_for_file(Path(output), fmt))


def _video_file_job(path: Path, dest: Path, fmt: str) -> Job:
    """A video goes to a video name (any container we write); an image never does."""
    if not is_video_name(path):
        raise UsageError(f"{dest}: is a video name, but {path} is not a video")
    if not is_video_name(dest):
        known = ", ".join(sorted(VIDEO_SUFFIXES))
        raise UsageError(f"{dest}: {path} is a video; name the output {known}")
    if fmt != "auto":
        raise UsageError(
            f"{setting('format')} {fmt}: is for images; {path} is a video (it keeps a container)"
        )
    container_for(dest)
    return Job(path, dest, VIDEO)


def _looks_like_folder(output: str) -> bool:
    return os.path.isdir(output) or output.endswith(("/", os.sep))


def _format_for_file(dest: Path, fmt: str) -> str:
    """The format of an explicit output file name; ``--format`` must agree with its suffix."""
    by_suffix = WRITABLE_SUFFIXES.get(dest.suffix.lower())
    if fmt == "auto":
        if by_suffix is None:
            known = ", ".join(sorted(WRITABLE_SUFFIXES))
            raise UsageError(
                f"{dest}: cannot tell the output format from the name "
                f"(use {known} or {setting('format')})"
            )
        return by_suffix
    if by_suffix is not None and by_suffix != fmt:
        raise UsageError(f"{dest}: the format {fmt} contradicts the file suffix {dest.suffix}")
    return fmt


def _output_folder(output: str | None, why: str) -> Path:
    if output is None:
        raise UsageError(f"-o OUT (a folder) is required because {why}")
    if output == STDIO:
        raise UsageError(f"-o - (stdout) takes a single image, but {why}")
    return _existing_folder_or_new(output)


def _existing_folder_or_new(output: str) -> Path:
    """``-o OUT`` as a folder: an existing folder, or a path to create (never an existing file)."""
    out_dir = Path(output)
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"{output}: output folder is a file")
    return out_dir


def _skipped_output_hint(root: Path, out_dir: Path) -> str:
    if nested_output(root, out_dir) is None:
        return ""
    return f" (images inside the output folder {out_dir} are never read as inputs)"


def _mirrored_job(path: Path, rel: Path, out_dir: Path, suffix: str, fmt: str) -> Job:
    in_suffix = path.suffix
    if is_video_name(path):  # a video keeps its container; --format is for images
        return Job(path, out_dir / rel.parent / f"{path.stem}{suffix}{in_suffix}", VIDEO)
    kept = WRITABLE_SUFFIXES.get(in_suffix.lower())
    if fmt == "auto":
        out_fmt = kept or "png"
        out_suffix = in_suffix if kept else FORMAT_SUFFIXES["png"]
    else:
        out_fmt = fmt
        out_suffix = in_suffix if kept == fmt else FORMAT_SUFFIXES[fmt]
    name = f"{path.stem}{suffix}{out_suffix}"
    return Job(path, out_dir / rel.parent / name, out_fmt)


def _refuse_collisions(jobs: Sequence[Job]) -> None:
    """An output may never be an input, and two inputs may never share one output."""
    inputs = {same_file_key(job.input): job for job in jobs if job.input is not None}
    outputs: dict[str, Job] = {}
    for job in jobs:
        if job.output is None:
            continue
        key = same_file_key(job.output)
        if key in inputs:
            raise UsageError(
                f"{job.output}: output would replace the input {inputs[key].input_label}; "
                f"choose another {setting('output')}, {setting('suffix')} or {setting('format')}"
            )
        if key in outputs:
            raise UsageError(
                f"{job.output}: both {outputs[key].input_label} and {job.input_label} would be "
                f"written here; use {setting('suffix')} or separate runs"
            )
        outputs[key] = job
