"""What a training run tells its user (derain_cli.train.messages): wording, estimates, warning."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from _trainkit import tiny_config

from derain_cli.train.messages import LONG_RUN_S, first_step_estimate, format_duration, run_summary


def test_summary_names_device_batch_steps_and_the_supervised_phase() -> None:
    config = tiny_config(steps=100).with_overrides(
        {"losses.use_synthetic": True, "losses.synthetic_only_steps": 60}
    )
    text = run_summary(config, torch.device("cpu"), torch.float32, 0, 100)
    assert text.startswith("training on cpu (float32), batch 2 x 32 px, steps 1-100")
    assert "alone to step 60" in text and "then every NLCL term" in text
    resumed = run_summary(config, torch.device("cpu"), torch.bfloat16, 70, 100)
    assert "steps 71-100" in resumed and "alone" not in resumed and "bfloat16" in resumed


def test_a_run_longer_than_a_day_is_warned_about_once_with_what_to_change() -> None:
    cpu = torch.device("cpu")
    line, warning = first_step_estimate(9.0, 2.0, 1000, cpu)
    assert "first step took 9.0 s" in line and "the next 2.00 s" in line
    assert line.endswith("about 33 min") and warning is None  # from the second step, not the first
    line, warning = first_step_estimate(70.0, 60.0, 400_000, cpu)
    assert "277.8 days" in line
    assert warning is not None and "277.8 days on cpu" in warning and "train.crop" in warning
    assert first_step_estimate(1.0, LONG_RUN_S / 10, 10, cpu)[1] is None
    line, _ = first_step_estimate(1.0, 0.5, 100, cpu, slower_from=80)
    assert "or more (the steps from 80 on" in line
    line, _ = first_step_estimate(1.0, 1.5, 400, cpu, time_left_s=300.0)
    assert line.endswith("about 10 min; the time limit stops it sooner, in about 5 min (about 200 "
                         "more steps)")  # fmt: skip
    line, _ = first_step_estimate(1.0, 1.5, 100, cpu, time_left_s=300.0)
    assert line.endswith("about 2 min")  # done before the limit


def test_durations_read_like_estimates() -> None:
    assert [format_duration(s) for s in (5, 125, 3 * 3600 + 20 * 60, 3 * 86400)] == [
        "5 s",
        "2 min",
        "3 h 20 min",
        "3.0 days",
    ]


def test_eta_follows_the_current_speed_after_a_slower_phase_begins(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from derain_cli.train import progress as train_progress

    clock = [0.0]
    monkeypatch.setattr(train_progress, "time", SimpleNamespace(monotonic=lambda: clock[0]))
    progress = train_progress.RichProgress()
    progress.interactive = False
    monkeypatch.setattr(train_progress.err_console, "print", lambda *a, **k: None)
    progress.start(0, 1100)
    for step in range(50, 601, 50):  # the fast phase: 10 steps/s
        clock[0] += 5.0
        progress.update({"step": step})
    assert "eta 0:00:50" in progress._line({"step": 600})
    for step in range(650, 901, 50):  # the slow phase: 2.5 steps/s (old: a mean since the start)
        clock[0] += 20.0
        progress.update({"step": step})
    assert "eta 0:01:20" in progress._line({"step": 900})  # a mean since the start: 0:00:40
