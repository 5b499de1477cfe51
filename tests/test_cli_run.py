"""`derain run` / `derain IN -o OUT` end to end, with a tiny random-init generator as weights.

The generator here is a test fixture only (8 channels, 2 blocks): these tests check files, exit
codes, messages and streams, never the quality of the result.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from images import make_corrupt_batch, rgba_png  # tests/images.py; pytest puts tests/ on sys.path
from images import smooth_photo as photo  # tests/images.py
from PIL import Image
from rich.console import Console
from typer.testing import CliRunner, Result

from derain_cli.cli import run as run_cli
from derain_cli.cli.app import app, route
from derain_cli.errors import UsageError, WeightsError
from derain_cli.images.io import DEFAULT_MAX_MEGAPIXELS, read_image
from derain_cli.inference import batch, engine
from derain_cli.nets.registry import build_generator

HPARAMS = {"in_channels": 3, "channels": 8, "blocks": 2}


@pytest.fixture(scope="session")
def weights_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from derain_cli.weights.files import save_weights

    torch.manual_seed(0)
    module = build_generator("nlcl-resnet", HPARAMS)
    path = tmp_path_factory.mktemp("weights") / "tiny.safetensors"
    save_weights(path, module, arch="nlcl-resnet", hparams=HPARAMS, metadata={"note": "test"})
    return path


def invoke(*args: str, weights: Path | None = None, stdin: bytes | None = None) -> Result:
    argv = ["run", *args] + (["--weights", str(weights)] if weights is not None else [])
    return CliRunner().invoke(app, argv, input=stdin)


def digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def files_in(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


# ---------------------------------------------------------------------------------- basic runs


def test_single_file(tmp_path: Path, weights_file: Path) -> None:
    src = photo(tmp_path / "photo.jpg")
    result = invoke(str(src), "-o", str(tmp_path / "clean.jpg"), weights=weights_file)
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert "cpu" in result.stderr and "1 done" in result.stderr
    with Image.open(tmp_path / "clean.jpg") as out:
        assert (out.format, out.size, out.mode) == ("JPEG", (32, 24), "RGB")

    quiet = invoke(str(src), "-o", str(tmp_path / "q.png"), "-q", weights=weights_file)
    assert quiet.exit_code == 0 and quiet.stderr == "" and quiet.stdout == ""


def test_folder_recursive_glob_and_suffix(tmp_path: Path, weights_file: Path) -> None:
    for name in ["a.jpg", "b.png", "sub/c.png", "sub/deep/d.jpg"]:
        photo(tmp_path / "in" / name)
    (tmp_path / "in" / "readme.txt").write_text("not an image")

    flat = invoke(str(tmp_path / "in"), "-o", str(tmp_path / "flat"), weights=weights_file)
    assert flat.exit_code == 0, flat.output
    assert files_in(tmp_path / "flat") == ["a.jpg", "b.png"]

    tree = invoke(
        str(tmp_path / "in"), "-o", str(tmp_path / "tree"), "-r", "--suffix", "_x",
        weights=weights_file,
    )  # fmt: skip
    assert tree.exit_code == 0, tree.output
    assert files_in(tmp_path / "tree") == ["a_x.jpg", "b_x.png", "sub/c_x.png", "sub/deep/d_x.jpg"]

    pattern = str(tmp_path / "in" / "**" / "*.jpg")
    globbed = invoke(pattern, "-o", str(tmp_path / "glob"), weights=weights_file)
    assert globbed.exit_code == 0, globbed.output
    assert files_in(tmp_path / "glob") == ["a.jpg", "sub/deep/d.jpg"]


def test_several_files_unquoted_glob(tmp_path: Path, weights_file: Path) -> None:
    """``derain *.jpg -o out`` after the shell expanded it: every file lands in the new folder."""
    names = ["a.jpg", "b.png", "c.jpg"]
    sources = [str(photo(tmp_path / name, seed=i)) for i, name in enumerate(names)]
    result = invoke(*sources, "-o", str(tmp_path / "out"), "--json", weights=weights_file)
    assert result.exit_code == 0, result.output
    assert [r["status"] for r in json_lines(result.stdout)] == ["ok"] * 3
    assert files_in(tmp_path / "out") == names
    assert "3 done" in result.stderr
    with Image.open(tmp_path / "out" / "c.jpg") as out:
        assert (out.format, out.size) == ("JPEG", (32, 24))


def test_file_and_folders_mixed(tmp_path: Path, weights_file: Path) -> None:
    for name in ["x.png", "in/a.png", "in/sub/b.jpg", "more/m.png"]:
        photo(tmp_path / name)
    one_folder = invoke(str(tmp_path / "x.png"), str(tmp_path / "in"), "-r",
                        "-o", str(tmp_path / "flat"), weights=weights_file)  # fmt: skip
    assert one_folder.exit_code == 0, one_folder.output
    assert files_in(tmp_path / "flat") == ["a.png", "sub/b.jpg", "x.png"]

    two_folders = invoke(str(tmp_path / "in"), str(tmp_path / "more"), str(tmp_path / "x.png"),
                         "-o", str(tmp_path / "nested"), weights=weights_file)  # fmt: skip
    assert two_folders.exit_code == 0, two_folders.output
    assert files_in(tmp_path / "nested") == ["in/a.png", "more/m.png", "x.png"]


def test_run_is_the_escape_hatch_for_inputs_named_like_commands(
    tmp_path: Path, weights_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``derain train`` means the subcommand; ``derain run train`` derains a file named train."""
    monkeypatch.chdir(tmp_path)
    photo(tmp_path / "train.png").rename(tmp_path / "train")
    assert route(["train", "-o", "x.png"])[0] == "train"
    argv = route(["run", "train", "-o", "clean.png", "--weights", str(weights_file)])
    result = CliRunner().invoke(app, argv)
    assert result.exit_code == 0, result.output
    with Image.open(tmp_path / "clean.png") as out:
        assert (out.format, out.size) == ("PNG", (32, 24))


@pytest.mark.parametrize(
    ("fmt", "name", "pillow"),
    [("png", "a.png", "PNG"), ("jpg", "a.jpg", "JPEG"), ("webp", "a.webp", "WEBP"),
     ("tiff", "a.tif", "TIFF"), ("auto", "a.jpg", "JPEG")],
)  # fmt: skip
def test_each_format(tmp_path: Path, weights_file: Path, fmt: str, name: str, pillow: str) -> None:
    photo(tmp_path / "in" / "a.jpg")
    result = invoke(
        str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--format", fmt, weights=weights_file
    )
    assert result.exit_code == 0, result.output
    assert files_in(tmp_path / "out") == [name]
    with Image.open(tmp_path / "out" / name) as out:
        assert (out.format, out.size) == (pillow, (32, 24))


def test_quality_megapixel_limit_and_tiles(tmp_path: Path, weights_file: Path) -> None:
    noisy = np.random.default_rng(1).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    Image.fromarray(noisy).save(tmp_path / "noisy.png")
    src = str(tmp_path / "noisy.png")
    sizes = {}
    for quality in ("20", "95"):
        out = tmp_path / f"q{quality}.jpg"
        result = invoke(src, "-o", str(out), "--quality", quality, "-q", weights=weights_file)
        assert result.exit_code == 0, result.output
        sizes[quality] = out.stat().st_size
    assert sizes["20"] < sizes["95"]

    limited = invoke(src, "-o", str(tmp_path / "big.png"), "--max-megapixels", "0.001",
                     weights=weights_file)  # fmt: skip
    assert limited.exit_code == 1 and "megapixels" in limited.stderr
    assert not (tmp_path / "big.png").exists()
    unlimited = invoke(src, "-o", str(tmp_path / "any.png"), "--max-megapixels", "0",
                       weights=weights_file)  # fmt: skip
    assert unlimited.exit_code == 0

    wide = tmp_path / "wide.png"
    Image.fromarray(np.tile(noisy, (1, 2, 1))).save(wide)  # 128 px wide: two 64-px tiles
    tiled = invoke(str(wide), "-o", str(tmp_path / "tiled.png"), "--tile", "64", "--overlap", "4",
                   weights=weights_file)  # fmt: skip
    assert tiled.exit_code == 0, tiled.output
    assert Image.open(tmp_path / "tiled.png").size == (128, 48)


def test_skip_existing_and_overwrite(tmp_path: Path, weights_file: Path) -> None:
    src = photo(tmp_path / "a.png")
    target = tmp_path / "out.png"
    target.write_bytes(b"precious")

    refused = invoke(str(src), "-o", str(target), weights=weights_file)
    assert refused.exit_code == 1
    assert target.read_bytes() == b"precious"
    (line,) = [x for x in refused.stderr.splitlines() if "error" in x]
    assert str(src) in line and "exists" in line and "--overwrite" in line
    assert "Traceback" not in refused.stderr

    skipped = invoke(str(src), "-o", str(target), "--skip-existing", "--json", weights=weights_file)
    assert skipped.exit_code == 0
    assert [r["status"] for r in json_lines(skipped.stdout)] == ["skipped"]
    assert target.read_bytes() == b"precious"

    replaced = invoke(str(src), "-o", str(target), "--overwrite", weights=weights_file)
    assert replaced.exit_code == 0
    assert Image.open(target).size == (32, 24)


def test_output_equal_to_input_is_refused(tmp_path: Path, weights_file: Path) -> None:
    src = photo(tmp_path / "a.png")
    before = src.read_bytes()
    for out in (str(src), str(tmp_path)):
        result = invoke(str(src), "-o", out, "--overwrite", weights=weights_file)
        assert result.exit_code == 2, result.output
        assert "replace the input" in result.stderr
    assert src.read_bytes() == before


def test_stdin_to_stdout_png(tmp_path: Path, weights_file: Path) -> None:
    data = photo(tmp_path / "a.jpg", height=16, width=24).read_bytes()
    result = invoke("-", "-o", "-", weights=weights_file, stdin=data)
    assert result.exit_code == 0, result.stderr
    assert result.stdout_bytes.startswith(b"\x89PNG\r\n\x1a\n")
    with Image.open(io.BytesIO(result.stdout_bytes)) as out:
        assert (out.format, out.size) == ("PNG", (24, 16))
    assert "cpu" in result.stderr


def test_json_lines_and_report(tmp_path: Path, weights_file: Path) -> None:
    for name in ["a.png", "b.jpg"]:
        photo(tmp_path / "in" / name)
    (tmp_path / "in" / "c.png").write_bytes(b"garbage")
    report = tmp_path / "report.jsonl"
    result = invoke(
        str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--json", "--report", str(report),
        weights=weights_file,
    )  # fmt: skip
    assert result.exit_code == 1
    records = json_lines(result.stdout)
    assert records == json_lines(report.read_text(encoding="utf-8"))
    assert [Path(r["input"]).name for r in records] == ["a.png", "b.jpg", "c.png"]
    assert [r["status"] for r in records] == ["ok", "ok", "failed"]
    for record in records:
        assert set(record) == {"input", "output", "status", "error", "seconds", "megapixels"}
        assert isinstance(record["seconds"], float) and record["seconds"] >= 0
    assert records[0]["megapixels"] == pytest.approx(32 * 24 / 1e6, abs=1e-4)
    assert records[0]["output"] == str(tmp_path / "out" / "a.png")
    assert records[0]["error"] is None and records[2]["error"]
    assert records[2]["megapixels"] == 0


# --------------------------------------------------------------------------------- exit codes


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["{tmp}/empty", "-o", "{tmp}/out"], "no images or videos found"),
        (["{tmp}/in", "-o", "{tmp}/file.txt"], "output folder is a file"),
        (["{tmp}/in"], "-o OUT"),
        (["{tmp}/nothing-here.jpg", "-o", "{tmp}/x.jpg"], "no such file"),
        (["{tmp}/in", "-o", "{tmp}/out", "--weights", "{tmp}/missing.safetensors"], "not found"),
        (["{tmp}/in/a.png", "-o", "-", "--json"], "--report"),
        (["{tmp}/in", "-o", "{tmp}/out", "--skip-existing", "--overwrite"], "exclude"),
        (["{tmp}/in/a.png", "-o", "{tmp}/o.png", "--device", "cpu", "--precision", "fp16"], "CPU"),
        (["{tmp}/in", "-o", "{tmp}/out", "--report", "{tmp}/no/such/dir/r.jsonl"], "report"),
        (["{tmp}/in/a.png", "-", "-o", "{tmp}/out"], "cannot be combined"),
        (["{tmp}/in/a.png", "{tmp}/empty", "-o", "{tmp}/file.txt"], "output folder is a file"),
        (["{tmp}/in/a.png", "{tmp}/in/b.png"], "-o OUT (a folder) is required"),
        (["{tmp}/in/a.png", "{tmp}/gone.jpg", "-o", "{tmp}/out"], "{tmp}/gone.jpg: no such"),
    ],
)
def test_usage_errors_exit_2(
    tmp_path: Path, weights_file: Path, args: list[str], message: str
) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "file.txt").write_text("x")
    photo(tmp_path / "in" / "a.png")
    argv = [a.format(tmp=tmp_path) for a in args]
    if "--weights" not in argv:
        argv += ["--weights", str(weights_file)]
    result = CliRunner().invoke(app, ["run", *argv])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "derain: error:" in lines[0], result.stderr
    assert message.format(tmp=tmp_path).lower() in lines[0].lower()
    assert result.stdout == ""
    assert not (tmp_path / "out").exists()


def test_bad_option_value_is_exit_2(tmp_path: Path, weights_file: Path) -> None:
    photo(tmp_path / "a.png")
    result = invoke(str(tmp_path / "a.png"), "--device", "tpu", weights=weights_file)
    assert result.exit_code == 2


@pytest.mark.parametrize("device", ["cuda", "mps"])
def test_absent_device_is_exit_2(tmp_path: Path, weights_file: Path, device: str) -> None:
    available = torch.cuda.is_available() if device == "cuda" else torch.backends.mps.is_available()
    if available:
        pytest.skip(f"{device} is present here")
    photo(tmp_path / "a.png")
    result = invoke(str(tmp_path / "a.png"), "-o", str(tmp_path / "b.png"), "--device", device,
                    weights=weights_file)  # fmt: skip
    assert result.exit_code == 2
    assert device in result.stderr and not (tmp_path / "b.png").exists()


def test_missing_default_weights_is_exit_2_with_how_to(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from derain_cli.weights.loading import load_weights

    # A registry without a default (the bundled one has one since nlcl-cpu-v1).
    empty = tmp_path / "registry.json"
    empty.write_text(json.dumps({"format_version": 1, "aliases": {"default": None}, "weights": {}}))
    monkeypatch.setenv("DERAIN_REGISTRY", str(empty))
    with pytest.raises(WeightsError) as caught:
        load_weights(None)
    expected = str(caught.value).replace("pass weights", "pass --weights")  # the CLI's flag
    photo(tmp_path / "a.png")
    reads: list[object] = []
    monkeypatch.setattr(batch, "read_image", lambda *a, **k: reads.append(a))
    result = invoke(str(tmp_path / "a.png"), "-o", str(tmp_path / "b.png"))
    assert result.exit_code == 2
    assert expected in result.stderr.replace("\n", " ") or expected in result.stderr
    assert "--weights" in result.stderr
    assert reads == [], "inputs must not be read before the model is ready"
    assert not (tmp_path / "b.png").exists()


def test_model_loaded_once_before_any_input(
    tmp_path: Path, weights_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import derain_cli.weights.loading as weights_module

    events: list[str] = []
    real_load, real_read = weights_module.load_weights, batch.read_image

    def load(spec: str | None, **options: bool) -> object:
        events.append("load")
        return real_load(spec, **options)

    class CountingDerainer(engine.Derainer):
        def __init__(self, *args: object, **kwargs: object) -> None:
            events.append("derainer")
            super().__init__(*args, **kwargs)  # type: ignore[arg-type]

    def read(*args: object, **kwargs: object) -> object:
        events.append("read")
        return real_read(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(weights_module, "load_weights", load)
    monkeypatch.setattr(engine, "Derainer", CountingDerainer)
    monkeypatch.setattr(batch, "read_image", read)
    for i in range(3):
        photo(tmp_path / "in" / f"{i}.png", seed=i)
    result = invoke(str(tmp_path / "in"), "-o", str(tmp_path / "out"), weights=weights_file)
    assert result.exit_code == 0, result.output
    assert events == ["load", "derainer", "read", "read", "read"]


def test_some_failed_is_exit_1_and_debug_shows_traceback(
    tmp_path: Path, weights_file: Path
) -> None:
    photo(tmp_path / "in" / "a.png")
    (tmp_path / "in" / "b.jpg").write_bytes(b"\xff\xd8 broken")
    plain = invoke(str(tmp_path / "in"), "-o", str(tmp_path / "out"), weights=weights_file)
    assert plain.exit_code == 1
    errors = [x for x in plain.stderr.splitlines() if "derain: error:" in x]
    assert len(errors) == 1 and "b.jpg" in errors[0]
    assert "Traceback" not in plain.stderr
    assert files_in(tmp_path / "out") == ["a.png"]

    debug = invoke(str(tmp_path / "in"), "-o", str(tmp_path / "dbg"), "--debug",
                   weights=weights_file)  # fmt: skip
    assert debug.exit_code == 1
    assert "Traceback" in debug.stderr


def test_alpha_to_jpeg_warns_once(tmp_path: Path, weights_file: Path) -> None:
    for name in ["a.png", "b.png"]:
        (tmp_path / "in").mkdir(exist_ok=True)
        (tmp_path / "in" / name).write_bytes(rgba_png())
    result = invoke(
        str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--format", "jpg", weights=weights_file
    )
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if "warning" in line]
    assert len(warnings) == 1 and "alpha" in warnings[0]
    with Image.open(tmp_path / "out" / "a.jpg") as out:
        assert out.mode == "RGB"


def test_progress_bar_on_a_terminal(
    tmp_path: Path, weights_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    screen = io.StringIO()
    console = Console(file=screen, force_terminal=True, width=120, highlight=False)
    monkeypatch.setattr(run_cli, "err_console", console)
    for i in range(3):
        photo(tmp_path / "in" / f"{i}.png", seed=i)
    result = invoke(str(tmp_path / "in"), "-o", str(tmp_path / "out"), weights=weights_file)
    assert result.exit_code == 0, result.output
    shown = screen.getvalue()
    assert "3/3" in shown and "MP/s" in shown and "files" in shown
    assert files_in(tmp_path / "out") == ["0.png", "1.png", "2.png"]

    screen.truncate(0)
    screen.seek(0)
    quiet = invoke(str(tmp_path / "in"), "-o", str(tmp_path / "out"), "-q", "--overwrite",
                   weights=weights_file)  # fmt: skip
    assert quiet.exit_code == 0, quiet.output
    assert screen.getvalue() == "" and quiet.stderr == ""


def test_help_states_the_real_megapixel_default() -> None:
    result = CliRunner().invoke(app, ["run", "--help"])
    assert result.exit_code == 0
    assert f"Default: {DEFAULT_MAX_MEGAPIXELS:g}" in " ".join(result.stdout.split())


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ([], "-o OUT [options]"),
        (["run"], "hf://OWNER/REPO"),
        (["weights"], "download"),
        (["weights", "list"], "--json"),
        (["weights", "download"], "hf://OWNER/REPO[@REVISION][/FILE]"),
        (["weights", "convert"], "nlcl-realrain-G_B.pth"),
        (["weights", "info"], "hf://"),
        (["train"], "--print-config"),
        (["eval"], "hf://OWNER/REPO[@REV][/FILE]"),
        (["inspect-patches"], "--rain-weights"),
    ],
)
def test_every_help_renders_in_full(command: list[str], expected: str) -> None:
    """Help text is rich markup (an unescaped ``[/FILE]`` crashes ``--help``, ``[options]``
    vanishes) in columns that cut a long unbreakable word with an ellipsis."""
    result = CliRunner().invoke(app, [*command, "--help"])
    assert result.exit_code == 0, result.exception
    assert expected in result.stdout
    assert "\u2026" not in result.stdout, result.stdout


# ------------------------------------------------------------------------------- corrupt batch


def test_corrupt_batch(tmp_path: Path, weights_file: Path) -> None:
    src, out = tmp_path / "in", tmp_path / "out"
    expected = make_corrupt_batch(src)
    before = digest(src)
    result = invoke(str(src), "-o", str(out), "--json", weights=weights_file)
    assert result.exit_code == 1, result.output
    assert digest(src) == before, "inputs must be byte-identical afterwards"

    records = {Path(r["input"]).name: r for r in json_lines(result.stdout)}
    assert set(records) == set(expected)
    errors = [x for x in result.stderr.splitlines() if "derain: error:" in x]
    assert "Traceback" not in result.stderr
    for name, ok in expected.items():
        record = records[name]
        assert record["status"] == ("ok" if ok else "failed"), (name, record)
    assert len(errors) == sum(not ok for ok in expected.values())
    for name, ok in expected.items():
        record = records[name]
        written = out / name
        if not ok:
            assert not written.exists()
            assert sum(name in line for line in errors) == 1
            continue
        source, clean = read_image(src / name), read_image(written)
        assert clean.rgb.shape == source.rgb.shape, name  # size and EXIF orientation
        assert clean.bit_depth == source.bit_depth, name
        assert (clean.alpha is None) == (source.alpha is None), name
        if source.alpha is not None:
            np.testing.assert_array_equal(clean.alpha, source.alpha)
    # no temporary or partial files anywhere
    assert sorted(files_in(out)) == sorted(name for name, ok in expected.items() if ok)
    with Image.open(out / "cmyk.jpg") as cmyk:
        assert cmyk.mode == "RGB"
    with Image.open(out / "rotated-6.jpg") as rotated:
        assert rotated.size == (32, 48)
        assert rotated.getexif().get(0x0112, 1) == 1


# ------------------------------------------------------------------ real processes (routing)


def derain_exe() -> list[str]:
    script = Path(sys.executable).parent / ("derain.exe" if os.name == "nt" else "derain")
    if script.exists():
        return [str(script)]
    found = shutil.which("derain")
    return [found] if found else [sys.executable, "-m", "derain_cli"]


def test_version_subprocess() -> None:
    from derain_cli import __version__

    done = subprocess.run([*derain_exe(), "--version"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == f"derain {__version__}"


def test_default_command_routing_subprocess(tmp_path: Path, weights_file: Path) -> None:
    photo(tmp_path / "photo.jpg")
    done = subprocess.run(
        [*derain_exe(), "photo.jpg", "-o", "clean.jpg", "--weights", str(weights_file)],
        cwd=tmp_path, capture_output=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout == b""
    with Image.open(tmp_path / "clean.jpg") as out:
        assert (out.format, out.size) == ("JPEG", (32, 24))


def test_several_inputs_subprocess(tmp_path: Path, weights_file: Path) -> None:
    photo(tmp_path / "a.jpg", seed=1)
    photo(tmp_path / "b.jpg", seed=2)
    done = subprocess.run(
        [*derain_exe(), "a.jpg", "b.jpg", "-o", "out/", "--weights", str(weights_file)],
        cwd=tmp_path, capture_output=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout == b""
    assert files_in(tmp_path / "out") == ["a.jpg", "b.jpg"]
    assert b"2 done" in done.stderr


def test_stdin_stdout_subprocess(tmp_path: Path, weights_file: Path) -> None:
    data = photo(tmp_path / "photo.png", height=16, width=24).read_bytes()
    done = subprocess.run(
        [*derain_exe(), "-", "-o", "-", "--weights", str(weights_file)],
        input=data, capture_output=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr.decode()
    # stdout holds the PNG and nothing else: signature first, IEND chunk last, no text around.
    assert done.stdout.startswith(b"\x89PNG\r\n\x1a\n")
    assert done.stdout.endswith(b"IEND\xaeB`\x82")
    with Image.open(io.BytesIO(done.stdout)) as out:
        assert (out.format, out.size) == ("PNG", (24, 16))
        piped = np.asarray(out)
    assert b"cpu" in done.stderr
    to_file = subprocess.run(
        [*derain_exe(), str(tmp_path / "photo.png"), "-o", str(tmp_path / "file.png"), "-q",
         "--weights", str(weights_file)],
        capture_output=True, timeout=120,
    )  # fmt: skip
    assert to_file.returncode == 0 and to_file.stdout == b"" and to_file.stderr == b""
    np.testing.assert_array_equal(piped, np.asarray(Image.open(tmp_path / "file.png")))


# ---------------------------------------------------------------------- bundled example image

EXAMPLES = Path(__file__).resolve().parents[1] / "docs" / "examples"


def test_bundled_example_image(tmp_path: Path, weights_file: Path) -> None:
    example = EXAMPLES / "rainy-camera.jpg"
    assert example.stat().st_size < 150_000
    with Image.open(example) as image:
        assert image.format == "JPEG" and max(image.size) <= 640
        committed = np.asarray(image, dtype=np.float32)
    result = invoke(str(example), "-o", str(tmp_path / "clean.jpg"), weights=weights_file)
    assert result.exit_code == 0, result.output
    assert Image.open(tmp_path / "clean.jpg").size == (512, 512)

    pytest.importorskip("skimage")
    import runpy

    make = runpy.run_path(str(EXAMPLES / "make_example.py"))["make"]
    regenerated = make(tmp_path / "again.jpg")
    again = np.asarray(Image.open(regenerated), dtype=np.float32)
    assert np.abs(again - committed).mean() < 1.0, "make_example.py no longer makes the example"


def test_library_errors_name_settings_and_the_cli_shows_flags(tmp_path: Path) -> None:
    """The library says "tile 1: ..."; the command line says "--tile 1: ..."."""
    from derain_cli.inference.tiling import check_tile

    with pytest.raises(UsageError, match=r"^tile 1: too small"):
        check_tile(1)
    photo(tmp_path / "a.png")
    result = invoke(str(tmp_path / "a.png"), "-o", str(tmp_path / "b.png"), "--tile", "1")
    assert result.exit_code == 2 and "--tile 1: too small" in result.stderr
    suffix = invoke(str(tmp_path / "a.png"), "-o", str(tmp_path / "out/"), "--suffix", "x/y")
    assert suffix.exit_code == 2 and "--suffix 'x/y': must not contain" in suffix.stderr


def test_setting_names_a_keyword_for_the_library_and_a_flag_for_the_cli() -> None:
    from derain_cli.cli.common import FLAGS
    from derain_cli.errors import cli_flags, setting, speak_cli

    assert (setting("tile"), setting("tile", 0), setting("overwrite", True)) == (
        "tile",
        "tile=0",
        "overwrite=True",
    )
    assert setting("train.crop", 48) == "train.crop=48" and cli_flags() is None
    with speak_cli(FLAGS):
        assert (setting("tile"), setting("tile", 0), setting("overwrite", True)) == (
            "--tile",
            "--tile 0",
            "--overwrite",
        )
        assert setting("skip_existing", True) == "--skip-existing"
        assert (setting("output"), setting("train.crop", 48)) == ("-o", "--crop 48")
        assert setting("with_niqe", False) == "--no-niqe"
        assert setting("train.lr") == "train.lr"  # a config key without a flag: as --set spells it
        assert cli_flags() == FLAGS
        with speak_cli(None):  # a spawned rank of a library caller
            assert setting("tile", 0) == "tile=0"
        assert setting("tile") == "--tile"
    assert setting("tile") == "tile"  # restored


def test_cli_errors_from_the_library_name_the_flags(tmp_path: Path) -> None:
    photo(tmp_path / "a.png")
    (tmp_path / "b.png").write_bytes((tmp_path / "a.png").read_bytes())
    exists = invoke(str(tmp_path / "a.png"), "-o", str(tmp_path / "b.png"))
    assert exists.exit_code == 1 and "use --overwrite or --skip-existing" in exists.stderr
    big = invoke(
        str(tmp_path / "a.png"), "-o", str(tmp_path / "c.png"), "--max-megapixels", "0.0001"
    )
    assert big.exit_code == 1 and "(--max-megapixels)" in big.stderr
    report = invoke(str(tmp_path / "a.png"), "-o", str(tmp_path / "c.png"),
                    "--report", str(tmp_path / "a.png"))  # fmt: skip
    assert report.exit_code == 2 and "choose another --report file" in report.stderr
