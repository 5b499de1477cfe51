"""One batch over several processes: ``torchrun --nproc-per-node N -m derain_cli IN -o OUT``.

torchrun (or any launcher that sets ``RANK`` and ``WORLD_SIZE``, e.g. Slurm through torchrun's
``--nnodes``) starts N copies of the same command. Each copy plans the same jobs (the planner's
order is deterministic: sorted paths), keeps every N-th one from its rank on, and derains and
writes those alone, each output atomically, as a single process does. No process group is
needed, so ranks never wait for each other: a rank that dies loses only the files it had not
finished, and rerunning the command with ``--skip-existing`` completes the batch.

``--report FILE``: each rank writes its lines to ``FILE.rank-K-of-N.RUN`` (atomically, when it
ends); the rank that finds every part present merges them into FILE in the planned order and
removes the parts. A missing part (a rank that died) leaves the parts where they are and FILE
untouched. Each rank removes its own parts of earlier runs when it starts, and ``RUN`` (a
fingerprint of the planned jobs, the number of processes and torchrun's run id) keeps a part of
another batch or another launch from being merged.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from derain_cli.atomic import atomic_write_bytes
from derain_cli.errors import UsageError
from derain_cli.inference.plan import Job
from derain_cli.torchrun import rank_env


@dataclass(frozen=True)
class Shard:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    run_id: str = ""  # torchrun's TORCHELASTIC_RUN_ID, when set

    @property
    def active(self) -> bool:
        return self.world > 1


def shard_from_env(env: Mapping[str, str] | None = None) -> Shard:
    """``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` as torchrun sets them (one process if absent)."""
    ranks = rank_env(env)
    return Shard(rank=ranks.rank, world=ranks.world, local_rank=max(ranks.local_rank or 0, 0),
                 run_id=ranks.run_id)  # fmt: skip


def take(jobs: Sequence[Job], shard: Shard) -> list[Job]:
    """This rank's jobs: every ``world``-th from ``rank`` on, in planned order."""
    if shard.active and any(job.input is None or job.output is None for job in jobs):
        raise UsageError("several processes cannot share stdin or stdout: give files or folders")
    return list(jobs[shard.rank :: shard.world])


def fingerprint(jobs: Sequence[Job], shard: Shard) -> str:
    """The same string in every rank of one run (same plan, same number of processes)."""
    plan = [[str(job.input), str(job.output), job.fmt] for job in jobs]
    text = json.dumps([plan, shard.world, shard.run_id])
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


def part_path(report: Path, shard: Shard, jobs: Sequence[Job]) -> Path:
    """This rank's part of the report."""
    return _part(report, shard.rank, shard.world, fingerprint(jobs, shard))


def _part(report: Path, rank: int, world: int, run: str) -> Path:
    return report.with_name(f"{report.name}.rank-{rank}-of-{world}.{run}")


def remove_old_parts(report: Path, shard: Shard) -> None:
    """This rank's parts left by earlier runs (they would never be merged)."""
    for old in report.parent.glob(f"{report.name}.rank-{shard.rank}-of-*"):
        old.unlink(missing_ok=True)


def merge_parts(report: Path, shard: Shard, jobs: Sequence[Job]) -> bool:
    """Merge every rank's part into ``report`` in ``jobs`` order once all parts exist.

    Returns whether this call merged. Exactly one rank merges (an exclusive lock file decides);
    the parts are removed after the report is in place.
    """
    run = fingerprint(jobs, shard)
    parts = [_part(report, rank, shard.world, run) for rank in range(shard.world)]
    if not all(part.is_file() for part in parts):
        return False
    lock = report.with_name(f"{report.name}.merging")
    try:
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return False
    os.close(fd)
    try:
        order = {str(job.input): i for i, job in enumerate(jobs)}
        lines = [
            line
            for part in parts
            for line in part.read_text(encoding="utf-8").splitlines()
            if line.strip()
        ]

        def position(line: str) -> int:
            with contextlib.suppress(ValueError, TypeError, AttributeError):
                return order.get(str(json.loads(line).get("input")), len(order))
            return len(order)

        lines.sort(key=position)  # stable: lines of one input keep their order
        atomic_write_bytes(report, "".join(f"{line}\n" for line in lines).encode("utf-8"))
        for part in parts:
            part.unlink(missing_ok=True)
    finally:
        lock.unlink(missing_ok=True)
    return True


@dataclass(frozen=True)
class ShardedReport:
    """``--report FILE`` for this process: its own file, and the merge when every rank is done.

    One process writes ``report`` itself. Under torchrun each rank writes its part (removing its
    parts of earlier runs first: :meth:`begin`), and :meth:`merge` puts the report together once
    every part is there.
    """

    report: Path
    shard: Shard
    planned: Sequence[Job]

    @property
    def path(self) -> Path:
        """Where this process writes its lines."""
        if not self.shard.active:
            return self.report
        return part_path(self.report, self.shard, self.planned)

    def begin(self) -> None:
        if self.shard.active:
            remove_old_parts(self.report, self.shard)

    def write_empty(self) -> None:
        """This rank had no jobs (more processes than files): an empty part, so others merge."""
        atomic_write_bytes(self.path, b"")

    def merge(self) -> bool:
        """Whether this process merged every rank's part into the report (:func:`merge_parts`)."""
        return self.shard.active and merge_parts(self.report, self.shard, self.planned)
