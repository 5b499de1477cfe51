"""Regressions of issue 10 ("Trust"): the command must never lose a file or hang on its own
options, and must say what it skipped or refused. Tiny random-init weights, tiny images."""

from __future__ import annotations

import errno
import io
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from _clikit import HPARAMS, error_lines, invoke
from images import smooth_photo as photo  # tests/images.py
from typer.testing import CliRunner

from derain_cli.cli.app import app
from derain_cli.inference import report as report_module
from derain_cli.nets.registry import build_generator


def derain_exe() -> list[str]:
    script = Path(sys.executable).parent / "derain"
    return [str(script)] if script.exists() else [sys.executable, "-m", "derain_cli"]


# ------------------------------------------------------------------------- 1: --report paths


def test_report_that_is_an_input_or_an_output_is_refused(
    tmp_path: Path, weights_file: Path
) -> None:
    rep, out = tmp_path / "rep", tmp_path / "out"
    photo(rep / "a.jpg", seed=1)
    photo(rep / "b.jpg", seed=2)
    before = {p.name: p.read_bytes() for p in rep.iterdir()}
    cases = [
        ([str(rep), "-o", str(out), "--report", str(rep / "b.jpg")], "replace the input"),
        ([str(rep), "-o", str(out), "--report", str(out / "a.jpg")], "output of"),
        ([str(rep / "a.jpg"), "-o", str(out / "o.jpg"), "--report", str(out / "o.jpg")],
         "output of"),
        ([str(rep), "-o", str(out), "--report", str(out)], "outputs are written inside"),
    ]  # fmt: skip
    for args, message in cases:
        result = invoke(*args, weights=weights_file)
        assert result.exit_code == 2, result.output
        (line,) = error_lines(result)
        assert message in line and "--report" in line
        assert {p.name: p.read_bytes() for p in rep.iterdir()} == before
        assert not out.exists()


def test_report_untouched_by_a_run_that_does_nothing(tmp_path: Path, weights_file: Path) -> None:
    photo(tmp_path / "a.jpg")
    old = tmp_path / "old.jsonl"
    old.write_text('{"old": true}\n')
    result = invoke(str(tmp_path / "a.jpg"), "-o", str(tmp_path / "x.png"), "--report", str(old),
                    weights=tmp_path / "missing.safetensors")  # fmt: skip
    assert result.exit_code == 2
    assert old.read_text() == '{"old": true}\n'
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []

    done = invoke(str(tmp_path / "a.jpg"), "-o", str(tmp_path / "x.png"), "--report", str(old),
                  weights=weights_file)  # fmt: skip
    assert done.exit_code == 0, done.output
    (record,) = [json.loads(line) for line in old.read_text().splitlines()]
    assert record["status"] == "ok"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.jpg", "old.jsonl", "x.png"]


# ------------------------------------------------------------------- 2: failing sinks and pipes


class FullDisk(io.StringIO):
    def write(self, text: str) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")


def test_report_write_failure_is_reported_once_and_the_batch_goes_on(
    tmp_path: Path, weights_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for i, name in enumerate(["a.png", "b.png", "c.png"]):
        photo(tmp_path / "in" / name, seed=i)
    old = tmp_path / "r.jsonl"
    old.write_text("previous run\n")
    monkeypatch.setattr(report_module, "open_report", lambda path: (FullDisk(), None))
    result = invoke(str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--report", str(old),
                    "--json", weights=weights_file)  # fmt: skip
    assert result.exit_code == 1, result.output
    (line,) = error_lines(result)
    assert str(old) in line and "No space left on device" in line
    assert "unexpected" not in result.stderr and "Traceback" not in result.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.png", "b.png", "c.png"]
    assert [json.loads(x)["status"] for x in result.stdout.splitlines()] == ["ok"] * 3
    assert old.read_text() == "previous run\n"
    assert "3 done" in result.stderr


@pytest.mark.skipif(os.name != "posix", reason="pipes and SIGPIPE are POSIX")
@pytest.mark.parametrize("to_stdout", ["--json", "-o -"])
def test_closed_stdout_pipe_ends_quietly(
    tmp_path: Path, weights_file: Path, to_stdout: str
) -> None:
    for i in range(3):
        photo(tmp_path / "in" / f"{i}.png", seed=i)
    if to_stdout == "--json":
        args = [str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--json"]
    else:
        args = [str(tmp_path / "in" / "0.png"), "-o", "-"]
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader has gone before the first line: `derain ... | head -0`
    try:
        done = subprocess.run(
            [*derain_exe(), *args, "--weights", str(weights_file)],
            stdout=write_end, stderr=subprocess.PIPE, timeout=120,
        )  # fmt: skip
    finally:
        os.close(write_end)
    stderr = done.stderr.decode()
    assert done.returncode == 141, stderr
    assert "BrokenPipe" not in stderr and "Traceback" not in stderr and "error" not in stderr


# ------------------------------------------------------------------------------ 3: tiny tiles


@pytest.mark.parametrize("tile", ["1", "63"])
def test_tiny_tile_is_refused_before_any_work(
    tmp_path: Path, weights_file: Path, tile: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from derain_cli.weights import loading as weights_module

    def no_load(spec: str | None, **options: bool) -> None:
        raise AssertionError("weights loaded despite a refused --tile")

    monkeypatch.setattr(weights_module, "load_weights", no_load)
    photo(tmp_path / "a.png")
    result = invoke(str(tmp_path / "a.png"), "-o", str(tmp_path / "b.png"), "--tile", tile,
                    weights=weights_file)  # fmt: skip
    assert result.exit_code == 2, result.output
    (line,) = error_lines(result)
    assert f"--tile {tile}" in line and "64" in line
    assert not (tmp_path / "b.png").exists()
    ev = CliRunner().invoke(app, ["eval", "--rainy", str(tmp_path), "--weights", str(weights_file),
                                  "--tile", tile])  # fmt: skip
    assert ev.exit_code == 2 and "--tile" in ev.stderr


# ------------------------------------------------------------------- 5: rain weights as G_B


def test_rain_generator_weights_are_refused(tmp_path: Path) -> None:
    from derain_cli.weights.files import save_weights

    torch.manual_seed(0)
    module = build_generator("nlcl-resnet", HPARAMS)
    run_dir = tmp_path / "RUN"
    save_weights(run_dir / "G_R.safetensors", module, arch="nlcl-resnet", hparams=HPARAMS,
                 metadata={"derain.layer": "rain"})  # fmt: skip
    save_weights(run_dir / "G_B.safetensors", module, arch="nlcl-resnet", hparams=HPARAMS,
                 metadata={"derain.layer": "background"})  # fmt: skip
    state = {f"gen.{k}": v for k, v in module.gen.state_dict().items()}
    for name in ("G_R.pth", "nlcl-realrain-G_R.pth", "G_B.pth"):
        torch.save(state, tmp_path / name)
    photo(tmp_path / "good.jpg")
    for weights, why in [
        (run_dir / "G_R.safetensors", "derain.layer=rain"),
        (tmp_path / "G_R.pth", "file name"),
        (tmp_path / "nlcl-realrain-G_R.pth", "file name"),
    ]:
        result = invoke(str(tmp_path / "good.jpg"), "-o", str(tmp_path / "x.png"),
                        weights=weights)  # fmt: skip
        assert result.exit_code == 2, result.output
        (line,) = error_lines(result)
        assert why in line and "G_B" in line and "G_R" in line
        assert not (tmp_path / "x.png").exists()
    for i, weights in enumerate([run_dir / "G_B.safetensors", tmp_path / "G_B.pth"]):
        ok = invoke(str(tmp_path / "good.jpg"), "-o", str(tmp_path / f"ok{i}.png"),
                    weights=weights)  # fmt: skip
        assert ok.exit_code == 0, ok.output


# ------------------------------------------------------------------------------ 6: small ones


def special_entries(folder: Path) -> dict[str, str]:
    """Image-named entries that are not files, with what the warning must call them."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "dangling.jpg").symlink_to(folder / "gone.jpg")
    (folder / "loop.jpg").symlink_to(folder / "loop.jpg")
    os.mkfifo(folder / "fifo.png")
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(folder / "sock.png"))
    server.close()  # the socket file stays
    return {
        "dangling.jpg": "dangling symbolic link",
        "loop.jpg": "symbolic-link loop",
        "fifo.png": "FIFO",
        "sock.png": "socket",
    }


@pytest.mark.skipif(os.name != "posix", reason="FIFOs and sockets are POSIX")
def test_folder_entries_that_are_not_files_are_named(tmp_path: Path, weights_file: Path) -> None:
    photo(tmp_path / "in" / "a.png")
    expected = special_entries(tmp_path / "in")
    result = invoke(str(tmp_path / "in"), "-o", str(tmp_path / "out"), weights=weights_file)
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if "warning" in line]
    assert len(warnings) == len(expected), result.stderr
    for name, what in expected.items():
        (line,) = [w for w in warnings if name in w]
        assert "skipped" in line and what in line
    assert "1 done" in result.stderr
    glob = invoke(str(tmp_path / "in" / "*.*"), "-o", str(tmp_path / "g"), weights=weights_file)
    assert glob.exit_code == 0 and glob.stderr.count(": skipped (it is ") == len(expected)
    quiet = invoke(str(tmp_path / "in"), "-o", str(tmp_path / "q"), "-q", weights=weights_file)
    assert quiet.exit_code == 0 and quiet.stderr == ""


@pytest.mark.skipif(os.name != "posix", reason="FIFOs and sockets are POSIX")
def test_explicit_input_that_is_not_a_file_says_what_it_is(
    tmp_path: Path, weights_file: Path
) -> None:
    expected = special_entries(tmp_path)
    cases = {str(tmp_path / name): what for name, what in expected.items()}
    cases[os.devnull] = "character device"
    for source, what in cases.items():
        result = invoke(source, "-o", str(tmp_path / "x.png"), weights=weights_file)
        assert result.exit_code == 2, (source, result.output)
        (line,) = error_lines(result)
        assert what in line and "no such file" not in line, line


def test_dash_v_prints_the_version(capsys: pytest.CaptureFixture[str]) -> None:
    from derain_cli import __version__
    from derain_cli.cli.app import main

    for flag in ("-V", "--version"):
        with pytest.raises(SystemExit) as stop:
            main([flag])
        assert stop.value.code == 0
        assert capsys.readouterr().out == f"derain {__version__}\n"


@pytest.mark.parametrize("command", [["run"], ["eval"], ["weights", "list"], ["train"]])
def test_help_shows_no_bool_type_on_flags(command: list[str]) -> None:
    result = CliRunner().invoke(app, [*command, "--help"])
    assert result.exit_code == 0
    assert "<bool>" not in result.stdout


def test_summary_when_no_image_was_processed(tmp_path: Path, weights_file: Path) -> None:
    for name in ("a.png", "b.png"):
        (tmp_path / "in").mkdir(exist_ok=True)
        (tmp_path / "in" / name).write_bytes(b"not a png")
    result = invoke(str(tmp_path / "in"), "-o", str(tmp_path / "out"), weights=weights_file)
    assert result.exit_code == 1
    (summary,) = [line for line in result.stderr.splitlines() if "2 failed" in line]
    assert "no image was processed" in summary and "MP" not in summary


def test_stdin_is_named_stdin_in_messages(tmp_path: Path, weights_file: Path) -> None:
    argv = ["run", "-", "-o", str(tmp_path / "x.png"), "--json", "--weights", str(weights_file)]
    result = CliRunner().invoke(app, argv, input=b"not an image")
    assert result.exit_code == 1
    (line,) = error_lines(result)
    assert "derain: error: <stdin>: " in line
    assert json.loads(result.stdout)["input"] == "-"  # JSON lines keep the documented "-"
