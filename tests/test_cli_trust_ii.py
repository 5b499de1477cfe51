"""Regressions of issue "Trust II": the command must not lose or leave files when it is stopped,
must not waste work on outputs it cannot write, and must say plainly what it refuses. Tiny
random-init weights, tiny images and clips."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from _clikit import error_lines, invoke
from images import smooth_photo as photo  # tests/images.py
from typer.testing import CliRunner, Result
from videos import make_video  # tests/videos.py

from derain_cli.cli.app import app

# ------------------------------------------------------------- stopped runs leave no partial file

#: Runs the command with a derainer that marks its first call and then takes its time, so that a
#: test can signal the process in the middle of the work.
SLOW_RUN = """
import sys, time
from pathlib import Path
from derain_cli.inference import engine
from derain_cli.cli.app import main

marker, args = Path(sys.argv[1]), sys.argv[2:]
original = engine.Derainer.__call__

def slow(self, rgb):
    marker.touch()
    time.sleep(0.5)
    return original(self, rgb)

engine.Derainer.__call__ = slow
main(args)
"""


def start_slow_run(tmp_path: Path, *args: str) -> tuple[subprocess.Popen[str], Path]:
    marker = tmp_path / "started"
    process = subprocess.Popen(
        [sys.executable, "-c", SLOW_RUN, str(marker), *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while not marker.exists():
        assert process.poll() is None, process.communicate()[1]
        assert time.monotonic() < deadline, "the run never reached the model"
        time.sleep(0.05)
    return process, marker


@pytest.mark.parametrize(("signum", "status"), [(signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_stop_signals_end_a_video_run_without_partial_files(
    tmp_path: Path, weights_file: Path, signum: signal.Signals, status: int
) -> None:
    """SIGTERM left out/.clean.mp4.XXXX.tmp and SIGHUP a 0-byte one (only ^C was handled)."""
    clip = make_video(tmp_path / "clip.mp4", frames=8, size=(32, 48), audio=False)
    out = tmp_path / "out"
    process, _ = start_slow_run(
        tmp_path, str(clip), "-o", str(out / "clean.mp4"), "--weights", str(weights_file)
    )
    assert [p.name for p in out.iterdir()][0].startswith(".clean.mp4.derain-")  # mid-write
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == status, stderr
    assert list(out.iterdir()) == []
    assert "no partial files" in stderr and "Traceback" not in stderr


def test_sigterm_ends_an_image_run_with_143(tmp_path: Path, weights_file: Path) -> None:
    source = photo(tmp_path / "a.png", 40, 32)
    process, _ = start_slow_run(tmp_path, str(source), "-o", str(tmp_path / "out" / "a.png"),
                                "--weights", str(weights_file))  # fmt: skip
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 143, stderr
    assert "derain: terminated by SIGTERM" in stderr
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


def test_a_later_run_removes_what_a_killed_one_left(tmp_path: Path, weights_file: Path) -> None:
    """After SIGKILL nothing can clean up; the temporary file was left for good, and a later
    successful run did not remove it."""
    clip = make_video(tmp_path / "clip.mp4", frames=8, size=(32, 48), audio=False)
    out = tmp_path / "out"
    process, _ = start_slow_run(
        tmp_path, str(clip), "-o", str(out / "clean.mp4"), "--weights", str(weights_file)
    )
    process.kill()
    process.communicate(timeout=60)
    (left,) = out.iterdir()
    assert left.name.startswith(f".clean.mp4.derain-{process.pid}-") and left.suffix == ".tmp"
    live = out / f".clean.mp4.derain-{os.getppid()}-abc.tmp"  # a writer still running
    live.touch()
    result = invoke(str(clip), "-o", str(out / "clean.mp4"), "-q", weights=weights_file)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == [live.name, "clean.mp4"]


# ------------------------------------------------------------------ multi-frame still images


def test_animated_and_multi_page_images_are_refused(tmp_path: Path, weights_file: Path) -> None:
    """An animated GIF or a multi-page TIFF came out as its first frame, exit 0, no word."""
    from PIL import Image

    rng = np.random.default_rng(0)
    frames = [Image.fromarray(rng.integers(0, 256, (16, 20, 3), dtype=np.uint8)) for _ in range(3)]
    inputs = tmp_path / "in"
    inputs.mkdir()
    frames[0].save(inputs / "anim.gif", save_all=True, append_images=frames[1:], duration=100)
    frames[0].save(inputs / "pages.tif", save_all=True, append_images=frames[1:2])
    mpo = {"format": "MPO", "save_all": True, "append_images": frames[1:2]}
    frames[0].save(inputs / "camera.jpg", **mpo)  # a phone's JPEG with a second image: kept
    frames[0].save(inputs / "still.gif")
    result = invoke(str(inputs), "-o", str(tmp_path / "out"), weights=weights_file)
    assert result.exit_code == 1, result.output
    assert sorted(error_lines(result)) == [
        f"derain: error: {inputs / 'anim.gif'}: 3 frames (an animated or multi-page image); "
        "derain takes still images: save the frames as separate files first",
        f"derain: error: {inputs / 'pages.tif'}: 2 frames (an animated or multi-page image); "
        "derain takes still images: save the frames as separate files first",
    ]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["camera.jpg", "still.png"]


# --------------------------------------------------- unwritable output folders, refused up front


def no_model_loaded(result: Result) -> bool:
    return " on cpu" not in result.stderr  # the device line comes once the weights are loaded


def test_output_below_a_regular_file_is_refused_before_any_work(
    tmp_path: Path, weights_file: Path
) -> None:
    """-o ro/sub/x.jpg printed a raw PermissionError (here: NotADirectoryError) per file."""
    source = photo(tmp_path / "a.png")
    (tmp_path / "blocker").write_text("a file, not a folder")
    result = invoke(str(source), "-o", str(tmp_path / "blocker" / "sub" / "a.png"),
                    weights=weights_file)  # fmt: skip
    assert result.exit_code == 2, result.output
    assert error_lines(result) == [
        f"derain: error: {tmp_path / 'blocker' / 'sub'}: output folder cannot be created "
        f"({tmp_path / 'blocker'} is a file)"
    ]
    assert no_model_loaded(result)


def test_unwritable_output_folder_is_refused_before_any_work(
    tmp_path: Path, weights_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """derain batch -o ro_dir derained every image and then failed each write. Root can write
    into a chmod 0o555 folder, so the file system's refusal is simulated where files are made."""
    import tempfile

    inputs = tmp_path / "in"
    for name in ("a.png", "b.png", "sub/c.png"):
        photo(inputs / name)
    read_only = tmp_path / "ro"
    read_only.mkdir()
    real_mkstemp = tempfile.mkstemp

    def mkstemp(*args: object, dir: object = None, **kwargs: object) -> tuple[int, str]:
        if dir is not None and Path(str(dir)) == read_only:
            raise PermissionError(13, "Permission denied")
        return real_mkstemp(*args, dir=dir, **kwargs)  # type: ignore[call-overload,no-any-return]

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    result = invoke(str(inputs), "-o", str(read_only), "-r", weights=weights_file)
    assert result.exit_code == 2, result.output
    assert error_lines(result) == [
        f"derain: error: {read_only}: output folder cannot be written (permission denied)"
    ]
    assert no_model_loaded(result) and list(read_only.iterdir()) == []
    result = invoke(str(inputs / "sub" / "c.png"), "-o", str(read_only / "new" / "c.png"),
                    weights=weights_file)  # fmt: skip
    assert result.exit_code == 2
    assert f"{read_only / 'new'}: output folder cannot be created ({read_only} cannot be " \
        "written: permission denied)" in result.stderr  # fmt: skip
    # A finished rerun with --skip-existing writes nothing, so a read-only OUT is fine then.
    monkeypatch.setattr(tempfile, "mkstemp", real_mkstemp)
    assert (
        invoke(str(inputs), "-o", str(read_only), "-r", "-q", weights=weights_file).exit_code == 0
    )
    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    result = invoke(str(inputs), "-o", str(read_only), "-r", "--skip-existing",
                    weights=weights_file)  # fmt: skip
    assert result.exit_code == 0, result.output


@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root may write into 0o555 folders"
)
def test_read_only_folder_is_refused_for_real(tmp_path: Path, weights_file: Path) -> None:
    read_only = tmp_path / "ro"
    read_only.mkdir()
    read_only.chmod(0o555)
    try:
        result = invoke(str(photo(tmp_path / "a.png")), "-o", str(read_only) + "/",
                        weights=weights_file)  # fmt: skip
    finally:
        read_only.chmod(0o755)
    assert result.exit_code == 2 and "output folder cannot be written" in result.stderr


# ------------------------------------------------------------- derain train: one rule per limit


@pytest.fixture
def small_images(tmp_path: Path) -> Path:
    data = tmp_path / "rain"
    for index in range(2):
        photo(data / f"r{index}.png", 16, 24, seed=index)  # 24 x 16 pixels
    photo(data / "clean" / "c.png", 16, 24, seed=5)
    return data


def train(data: Path, *args: str) -> Result:
    return CliRunner().invoke(app, ["train", str(data), "--out", str(data.parent / "run"),
                                    "--batch-size", "2", "--device", "cpu", *args])  # fmt: skip


def test_train_with_zero_gpus_is_a_usage_error(small_images: Path) -> None:
    """--gpus 0 ended in ZeroDivisionError (exit 1)."""
    result = train(small_images, "--gpus", "0")
    assert result.exit_code == 2, result.output
    assert error_lines(result) == ["derain: error: --gpus 0: must be >= 1"]
    result = train(small_images, "--gpus", "3")
    assert error_lines(result) == ["derain: error: --batch-size 2: must be divisible by --gpus 3"]
    assert not (small_images.parent / "run").exists()


@pytest.mark.parametrize("crop", ["8", "16", "24", "48", "2048"])
def test_every_crop_refusal_states_the_same_rule(small_images: Path, crop: str) -> None:
    """On a 24 x 16 image --crop 24 said "use --crop 16 or less", --crop 16 "use a crop >= 48",
    and --crop 8 "must be >= 16": three limits, no crop that works."""
    result = train(small_images, "--crop", crop)
    assert result.exit_code == 2, result.output
    (line,) = error_lines(result)
    rule = (
        f"derain: error: --crop {crop}: crops must be at least 48 px (the layer contrast needs "
        "8 candidate patches per query on the 16-px patch grid, stride 8)"
    )
    assert line.startswith(rule)
    if int(crop) >= 48:  # the images are known by then
        assert line == rule + ", but no rainy image is that large (the largest short side is " \
            "16 px); use larger images"  # fmt: skip
    assert not (small_images.parent / "run").exists()


# ------------------------------------------------------------------------------ smaller ones


def test_shell_completion_is_offered() -> None:
    """add_completion was off: no --install-completion, and the shell completed nothing."""
    from derain_cli.cli.app import route

    shown = CliRunner().invoke(app, route(["--show-completion", "bash"]), prog_name="derain")
    assert shown.exit_code == 0 and "_DERAIN_COMPLETE=complete_bash" in shown.stdout
    env = {"_DERAIN_COMPLETE": "complete_bash", "COMP_WORDS": "derain weights l", "COMP_CWORD": "2"}
    completed = CliRunner().invoke(app, [], prog_name="derain", env=env)
    assert completed.stdout.split() == ["list"]
    env |= {"COMP_WORDS": "derain run a.jpg --overw", "COMP_CWORD": "3"}
    assert CliRunner().invoke(app, [], prog_name="derain", env=env).stdout.split() == [
        "--overwrite"
    ]


def test_weights_list_prints_its_table_on_stdout() -> None:
    """The table went to stderr, so `derain weights list | grep` found nothing."""
    result = CliRunner().invoke(app, ["weights", "list"])
    assert result.exit_code == 0 and "nlcl-cpu-v1" in result.stdout
    assert "nlcl-cpu-v1" not in result.stderr


def test_an_overlap_above_the_cap_is_noted_once(tmp_path: Path, weights_file: Path) -> None:
    """--overlap larger than the tile was accepted silently (it is capped to a quarter)."""
    source = photo(tmp_path / "a.png", 40, 48)
    result = invoke(str(source), "-o", str(tmp_path / "b.png"), "--tile", "64", "--overlap", "100",
                    weights=weights_file)  # fmt: skip
    assert result.exit_code == 0, result.output
    notes = [line for line in result.stderr.splitlines() if "note:" in line]
    assert notes == ["derain: note: --overlap 100: capped at 16 px, a quarter of --tile 64"]
    result = invoke(str(source), "-o", str(tmp_path / "c.png"), "--tile", "64",
                    weights=weights_file)  # fmt: skip
    assert "note:" not in result.stderr  # only an --overlap the user chose is noted


def test_quiet_video_run_prints_nothing_with_x265(tmp_path: Path, weights_file: Path) -> None:
    """-q left two dozen 'x265 [info]' lines: x265 writes to the process's stderr itself."""
    clip = make_video(tmp_path / "clip.mp4", frames=3, size=(32, 32), audio=False)
    done = subprocess.run(
        [sys.executable, "-m", "derain_cli", str(clip), "-o", str(tmp_path / "out.mp4"),
         "--codec", "libx265", "-q", "--weights", str(weights_file)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""


def test_skip_existing_rerun_into_the_input_folder(tmp_path: Path, weights_file: Path) -> None:
    """A rerun of `derain shots -o shots --suffix _clean --skip-existing` refused its own earlier
    outputs as inputs ("output would replace the input"), exit 2."""
    shots = tmp_path / "shots"
    for name in ("a.png", "b.png"):
        photo(shots / name)
    args = (str(shots), "-o", str(shots), "--suffix", "_clean", "--skip-existing", "--json")
    first = invoke(*args, weights=weights_file)
    assert first.exit_code == 0, first.output
    before = {p.name: p.read_bytes() for p in shots.iterdir()}
    assert sorted(before) == ["a.png", "a_clean.png", "b.png", "b_clean.png"]
    again = invoke(*args, weights=weights_file)
    assert again.exit_code == 0, again.output
    statuses = [json.loads(line)["status"] for line in again.stdout.splitlines()]
    assert statuses == ["skipped", "skipped"]
    assert {p.name: p.read_bytes() for p in shots.iterdir()} == before
    # Without --skip-existing the rerun still refuses to touch a file that is also an input.
    assert invoke(*args[:-2], weights=weights_file).exit_code == 2


def test_symlinked_subfolders_are_followed_once(tmp_path: Path, weights_file: Path) -> None:
    """A symlinked subfolder under -r was skipped without a word; following links must not loop."""
    shots = tmp_path / "shots"
    photo(shots / "a.png")
    photo(tmp_path / "elsewhere" / "b.png")
    (shots / "more").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    (shots / "again").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    (shots / "loop").symlink_to(shots, target_is_directory=True)
    out = tmp_path / "out"
    result = invoke(str(shots), "-o", str(out), "-r", weights=weights_file)
    assert result.exit_code == 0, result.output
    done = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
    assert done == ["a.png", "again/b.png"]  # sorted walk: "again" comes before "more"
    warnings = sorted(line for line in result.stderr.splitlines() if "warning" in line)
    assert warnings == [
        f"derain: warning: {shots / 'loop'}: skipped (it is a symbolic link to a folder already "
        "read)",
        f"derain: warning: {shots / 'more'}: skipped (it is a symbolic link to a folder already "
        "read)",
    ]


def test_train_scan_decodes_fully_and_gives_derains_reasons(tmp_path: Path) -> None:
    """A truncated PNG passed the header-only probe of derain train's scan and failed mid-run
    with Pillow's raw text as a Python UserWarning; now it is skipped up front, in derain's
    words, like a file that is not an image at all."""
    from PIL import Image

    from derain_cli.data import scan_folders

    data = tmp_path / "rain"
    for index in range(3):
        photo(data / f"r{index}.png", 40, 48, seed=index)
    photo(data / "clean" / "c.png", 40, 48)
    whole = (data / "r0.png").read_bytes()
    (data / "cut.png").write_bytes(whole[: len(whole) // 2])
    (data / "noise.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"x" * 50)
    frames = [Image.new("RGB", (48, 48), (i * 60, 0, 0)) for i in range(3)]
    frames[0].save(data / "anim.gif", save_all=True, append_images=frames[1:])
    reasons: dict[str, str] = {}
    folders = scan_folders(data, on_skip=lambda p, reason: reasons.setdefault(p.name, reason))
    assert reasons == {
        "anim.gif": "3 frames (an animated or multi-page image); derain takes still images: "
        "save the frames as separate files first",
        "cut.png": "truncated or corrupt image data",
        "noise.png": "truncated or corrupt image data",
    }
    assert [p.name for p in folders.rainy] == ["r0.png", "r1.png", "r2.png"]
