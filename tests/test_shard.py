"""Several processes on one batch (torchrun): each file once, one merged report, resumable."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from images import rgb_png

from derain_cli.errors import UsageError
from derain_cli.inference.plan import Job
from derain_cli.inference.shard import Shard, shard_from_env, take

FILES = 5


def _folder(tmp_path: Path, files: int = FILES) -> Path:
    src = tmp_path / "in"
    src.mkdir()
    for i in range(files):
        (src / f"img{i}.png").write_bytes(rgb_png(24, 32, seed=i))
    return src


def _env(rank: int | None = None, world: int | None = None) -> dict[str, str]:
    names = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "TORCHELASTIC_RUN_ID")
    env = {k: v for k, v in os.environ.items() if k not in names}
    env.pop("DERAIN_REGISTRY", None)  # the bundled default
    if rank is not None and world is not None:
        env |= {"RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank)}
    return env


def _derain(src: Path, out: Path, report: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "derain_cli", str(src), "-o", str(out), "--report", str(report),
            "--device", "cpu", *extra]  # fmt: skip


def _ranks(cmd: list[str], ranks: list[int], world: int) -> list[subprocess.CompletedProcess[str]]:
    procs = [
        subprocess.Popen(
            cmd, env=_env(r, world), text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )  # fmt: skip
        for r in ranks
    ]
    done = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=300)
        done.append(subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr))
    return done


def _report(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_env_and_take() -> None:
    assert shard_from_env({}) == Shard(0, 1, 0)
    assert shard_from_env({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"}) == Shard(3, 4, 1)
    for bad in ({"RANK": "4", "WORLD_SIZE": "4"}, {"RANK": "x", "WORLD_SIZE": "2"},
                {"WORLD_SIZE": "0"}):  # fmt: skip
        with pytest.raises(UsageError, match="RANK|WORLD_SIZE"):
            shard_from_env(bad)
    jobs = [Job(Path(f"{i}.png"), Path(f"o/{i}.png"), "png") for i in range(7)]
    parts = [take(jobs, Shard(r, 3)) for r in range(3)]
    assert sorted((j.input for part in parts for j in part), key=str) == [j.input for j in jobs]
    assert [len(p) for p in parts] == [3, 2, 2]
    assert take(jobs, Shard()) == jobs
    with pytest.raises(UsageError, match="stdin or stdout"):
        take([Job(None, Path("o.png"), "png")], Shard(0, 2))


def test_two_ranks_share_a_folder_and_merge_one_report(tmp_path: Path) -> None:
    src, out, report = _folder(tmp_path), tmp_path / "out", tmp_path / "report.jsonl"
    done = _ranks(_derain(src, out, report), [0, 1], 2)
    assert [d.returncode for d in done] == [0, 0], [d.stderr for d in done]
    assert sorted(p.name for p in out.iterdir()) == [f"img{i}.png" for i in range(FILES)]
    lines = _report(report)
    assert [Path(str(x["input"])).name for x in lines] == [f"img{i}.png" for i in range(FILES)]
    assert {x["status"] for x in lines} == {"ok"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "out", "report.jsonl"]


def test_a_dead_rank_loses_only_its_files_and_a_rerun_completes(tmp_path: Path) -> None:
    src, out, report = _folder(tmp_path), tmp_path / "out", tmp_path / "report.jsonl"
    (only_rank_0,) = _ranks(_derain(src, out, report), [0], 2)  # rank 1 never ran
    assert only_rank_0.returncode == 0, only_rank_0.stderr
    assert sorted(p.name for p in out.iterdir()) == ["img0.png", "img2.png", "img4.png"]
    assert not report.exists() and len(list(tmp_path.glob("report.jsonl.rank-0-of-2.*"))) == 1
    done = _ranks(_derain(src, out, report, "--skip-existing"), [0, 1], 2)
    assert [d.returncode for d in done] == [0, 0], [d.stderr for d in done]
    assert len(list(out.iterdir())) == FILES
    status = {Path(str(x["input"])).name: x["status"] for x in _report(report)}
    # the earlier run's part of rank 0 was replaced, not merged
    assert status == {"img0.png": "skipped", "img1.png": "ok", "img2.png": "skipped",
                      "img3.png": "ok", "img4.png": "skipped"}  # fmt: skip
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "out", "report.jsonl"]


def test_more_ranks_than_files(tmp_path: Path) -> None:
    src, out, report = _folder(tmp_path, 2), tmp_path / "out", tmp_path / "r.jsonl"
    done = _ranks(_derain(src, out, report), [0, 1, 2], 3)
    assert [d.returncode for d in done] == [0] * 3, [d.stderr for d in done]
    assert len(_report(report)) == 2 and len(list(out.iterdir())) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "out", "r.jsonl"]


def test_torchrun_launches_the_ranks(tmp_path: Path) -> None:
    """The real launcher (CPU): torchrun sets RANK / WORLD_SIZE / LOCAL_RANK."""
    src, out, report = _folder(tmp_path), tmp_path / "out", tmp_path / "report.jsonl"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
           "--master-addr", "127.0.0.1", "--master-port", str(port), "-m", "derain_cli",
           *_derain(src, out, report)[3:]]  # fmt: skip
    done = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    assert len(_report(report)) == FILES and len(list(out.iterdir())) == FILES
