"""Where this process sits among the copies torchrun started: the one reader of its environment.

torchrun (or any launcher that sets ``RANK`` and ``WORLD_SIZE``; Slurm through torchrun's
``--nnodes``) starts N copies of one command. Inference splits a batch of files between them
(:mod:`derain_cli.inference.shard`), training joins them into a process group
(:mod:`derain_cli.train.distributed`); both read the ranks here. No torch import at module level.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from derain_cli.errors import UsageError


@dataclass(frozen=True)
class RankEnv:
    """``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and torchrun's run id, as the launcher set them."""

    rank: int = 0
    world: int = 1
    local_rank: int | None = None  # None: the launcher did not say
    run_id: str = ""  # TORCHELASTIC_RUN_ID, when set
    launched: bool = False  # RANK and WORLD_SIZE were both set


def rank_env(env: Mapping[str, str] | None = None) -> RankEnv:
    """The ranks in ``env`` (the process environment by default); one process if absent."""
    env = os.environ if env is None else env
    values: dict[str, int | None] = {}
    for key, default in (("RANK", 0), ("WORLD_SIZE", 1), ("LOCAL_RANK", None)):
        raw = env.get(key, "")
        try:
            values[key] = int(raw) if raw.strip() else default
        except ValueError:
            raise UsageError(f"{key}={raw!r} in the environment is not an integer") from None
    rank, world = int(values["RANK"] or 0), int(values["WORLD_SIZE"] or 0)
    if world < 1 or not 0 <= rank < world:
        raise UsageError(f"RANK={rank}, WORLD_SIZE={world} in the environment: need 0 <= RANK < "
                         "WORLD_SIZE")  # fmt: skip
    return RankEnv(
        rank=rank,
        world=world,
        local_rank=values["LOCAL_RANK"],
        run_id=env.get("TORCHELASTIC_RUN_ID", ""),
        launched="RANK" in env and "WORLD_SIZE" in env,
    )


def pin_local_gpu(device: str, local_rank: int) -> None:
    """Under torchrun, ``auto``/``cuda`` mean this process's own GPU (``LOCAL_RANK``)."""
    import torch

    if device in ("auto", "cuda") and torch.cuda.is_available():
        torch.cuda.set_device(local_rank % torch.cuda.device_count())
