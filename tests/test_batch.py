"""Input/output planning and the streamed runner (no model: a fake derainer callable)."""

from __future__ import annotations

import io
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from derain_cli.errors import UsageError
from derain_cli.inference import batch
from derain_cli.inference.batch import Job, plan_jobs, stream_jobs


def write_png(path: Path, height: int = 8, width: int = 12, seed: int = 0) -> np.ndarray:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return pixels


def invert(rgb: np.ndarray) -> np.ndarray:
    return 1.0 - rgb


def outputs(jobs: list[Job]) -> list[str]:
    return [str(job.output) for job in jobs]


# ------------------------------------------------------------------------------------- planning


def test_single_file_to_named_file(tmp_path: Path) -> None:
    write_png(tmp_path / "a.png")
    (job,) = plan_jobs(str(tmp_path / "a.png"), str(tmp_path / "b.jpg"))
    assert job == Job(tmp_path / "a.png", tmp_path / "b.jpg", "jpg")


def test_single_file_into_existing_folder_and_trailing_slash(tmp_path: Path) -> None:
    write_png(tmp_path / "a.png")
    (tmp_path / "out").mkdir()
    (job,) = plan_jobs(str(tmp_path / "a.png"), str(tmp_path / "out"), suffix="_c")
    assert job.output == tmp_path / "out" / "a_c.png"
    (job,) = plan_jobs(str(tmp_path / "a.png"), str(tmp_path / "new") + "/")
    assert job.output == tmp_path / "new" / "a.png"


def test_single_file_without_output_goes_next_to_it(tmp_path: Path) -> None:
    write_png(tmp_path / "a.png")
    (job,) = plan_jobs(str(tmp_path / "a.png"), None)
    assert job.output == tmp_path / "a-derained.png"


def test_stdin_and_stdout(tmp_path: Path) -> None:
    assert plan_jobs("-", "-") == [Job(None, None, "png")]
    assert plan_jobs("-", None) == [Job(None, None, "png")]
    assert plan_jobs("-", "-", fmt="jpg") == [Job(None, None, "jpg")]
    assert plan_jobs("-", str(tmp_path / "x.webp")) == [Job(None, tmp_path / "x.webp", "webp")]
    write_png(tmp_path / "a.png")
    assert plan_jobs(str(tmp_path / "a.png"), "-")[0].output is None
    with pytest.raises(UsageError, match="file name or '-'"):
        plan_jobs("-", str(tmp_path))


def test_folder_lists_images_only_and_not_subfolders(tmp_path: Path) -> None:
    src = tmp_path / "in"
    for name in ["b.png", "a.JPG", "c.bmp", "notes.txt", ".hidden.png", "sub/d.png"]:
        path = src / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    jobs = plan_jobs(str(src), str(tmp_path / "out"))
    assert [job.input.name for job in jobs if job.input] == ["a.JPG", "b.png", "c.bmp"]
    out = tmp_path / "out"
    assert outputs(jobs) == [str(out / "a.JPG"), str(out / "b.png"), str(out / "c.png")]
    assert [job.fmt for job in jobs] == ["jpg", "png", "png"]


def test_recursive_folder_mirrors_tree_and_skips_nested_output(tmp_path: Path) -> None:
    src = tmp_path / "in"
    for name in ["a.png", "x/b.jpg", "x/y/c.tif", "clean/old.png", ".git/z.png"]:
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_bytes(b"x")
    jobs = plan_jobs(str(src), str(src / "clean"), recursive=True, suffix="_c")
    out = src / "clean"
    assert outputs(jobs) == [str(out / "a_c.png"), str(out / "x/b_c.jpg"), str(out / "x/y/c_c.tif")]
    with pytest.raises(UsageError, match="inside the output folder"):
        plan_jobs(str(src / "**" / "old.png"), str(src / "clean"))


def test_glob_mirrors_below_first_wildcard(tmp_path: Path) -> None:
    for name in ["in/a/1.jpg", "in/b/1.jpg", "in/b/2.png", "in/top.jpg"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    jobs = plan_jobs(str(tmp_path / "in" / "**" / "*.jpg"), str(tmp_path / "out"))
    out = tmp_path / "out"
    assert outputs(jobs) == [str(out / "a/1.jpg"), str(out / "b/1.jpg"), str(out / "top.jpg")]
    jobs = plan_jobs(str(tmp_path / "in" / "*" / "*.png"), str(tmp_path / "out"))
    assert outputs(jobs) == [str(out / "b/2.png")]


@pytest.mark.parametrize(
    ("name", "fmt", "expected"),
    [
        ("a.jpeg", "auto", ("a.jpeg", "jpg")),
        ("a.JPG", "auto", ("a.JPG", "jpg")),
        ("a.tiff", "auto", ("a.tiff", "tiff")),
        ("a.webp", "auto", ("a.webp", "webp")),
        ("a.gif", "auto", ("a.png", "png")),
        ("a.jpeg", "jpg", ("a.jpeg", "jpg")),
        ("a.png", "jpg", ("a.jpg", "jpg")),
        ("a.png", "tiff", ("a.tif", "tiff")),
        ("a.png", "webp", ("a.webp", "webp")),
        ("a.jpg", "png", ("a.png", "png")),
    ],
)
def test_output_format_and_suffix(
    tmp_path: Path, name: str, fmt: str, expected: tuple[str, str]
) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / name).write_bytes(b"x")
    (job,) = plan_jobs(str(tmp_path / "in"), str(tmp_path / "out"), fmt=fmt)
    assert (job.output.name if job.output else None, job.fmt) == expected


@pytest.mark.parametrize(
    ("setup", "args", "message"),
    [
        ("empty", ("in", "out"), "no images or videos found"),
        ("one", ("in", None), "-o OUT"),
        ("one", ("in", "-"), "single image"),
        ("one", ("in", "file.txt"), "output folder is a file"),
        ("one", ("missing.png", "out.png"), "no such file or folder"),
        ("one", ("in/*.gif", "out"), "no images or videos match"),
        ("one", ("in/a.png", "in/a.png"), "would replace the input"),
        ("one", ("in", "in"), "would replace the input"),
        ("one", ("in/a.png", "out.gif"), "cannot tell the output format"),
        ("one", ("in/a.png", "out"), "cannot tell the output format"),
        ("pair", ("in", "in"), "would replace the input"),
        ("twins", ("in", "out"), "both"),
    ],
)
def test_usage_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, setup: str, args: tuple, message: str
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("in").mkdir()
    Path("file.txt").write_text("x")
    if setup != "empty":
        write_png(Path("in/a.png"))
    if setup == "pair":  # a.jpg -> a.png would replace the input a.png
        Path("in/a.jpg").write_bytes(b"x")
    if setup == "twins":  # a.jpg and a.jpeg -> out/a.png twice
        Path("in/b.jpg").write_bytes(b"x")
        Path("in/b.jpeg").write_bytes(b"x")
    fmt = "png" if setup in {"pair", "twins"} else "auto"
    with pytest.raises(UsageError, match=message):
        plan_jobs(*args, fmt=fmt)


# ------------------------------------------------------------------------ several inputs (IN...)


def test_several_files_land_directly_in_the_output_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the shell makes of ``derain *.jpg -o out``: OUT is created, repeats count once."""
    monkeypatch.chdir(tmp_path)
    for name in ["a.png", "b.jpg", "c.gif"]:
        write_png(Path(name))
    jobs = plan_jobs(["a.png", "b.jpg", "./a.png", "c.gif", "a.png"], "out", suffix="_c")
    assert [str(job.input) for job in jobs] == ["a.png", "b.jpg", "c.gif"]
    assert outputs(jobs) == ["out/a_c.png", "out/b_c.jpg", "out/c_c.png"]
    assert [job.fmt for job in jobs] == ["png", "jpg", "png"]


def test_one_input_left_after_dedup_keeps_single_file_rules(tmp_path: Path) -> None:
    write_png(tmp_path / "a.png")
    a = str(tmp_path / "a.png")
    assert plan_jobs([a, a], None) == plan_jobs(a, None)
    assert plan_jobs([a, a], None)[0].output == tmp_path / "a-derained.png"
    assert plan_jobs(["-", "-"], "-") == [Job(None, None, "png")]


def test_file_folder_and_glob_mix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One folder among the inputs: its images land directly in OUT (its tree with -r)."""
    monkeypatch.chdir(tmp_path)
    for name in ["x.png", "in/a.png", "in/sub/b.png", "shots/day1/c.jpg", "shots/day2/d.jpg"]:
        write_png(Path(name))
    jobs = plan_jobs(["x.png", "in", "shots/*/*.jpg", "in/a.png"], "out", recursive=True)
    assert outputs(jobs) == ["out/x.png", "out/a.png", "out/sub/b.png", "out/day1/c.jpg",
                             "out/day2/d.jpg"]  # fmt: skip
    assert [str(job.input) for job in jobs][1] == "in/a.png"  # processed once, at first mention
    flat = plan_jobs(["x.png", "in"], "out")
    assert outputs(flat) == ["out/x.png", "out/a.png"]


def test_several_folders_each_mirrored_under_their_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ["x.png", "rainy/a.png", "rainy/sub/b.png", "more/a.png"]:
        write_png(Path(name))
    jobs = plan_jobs(["rainy", "more", "x.png"], "out", recursive=True)
    assert outputs(jobs) == ["out/rainy/a.png", "out/rainy/sub/b.png", "out/more/a.png",
                             "out/x.png"]  # fmt: skip
    flat = plan_jobs(["rainy/", "more", "rainy"], "out")  # `rainy/` and `rainy` are one input
    assert outputs(flat) == ["out/rainy/a.png", "out/more/a.png"]
    monkeypatch.chdir(tmp_path / "rainy")
    (job,) = [j for j in plan_jobs([".", "../more"], "../out") if j.input == Path("a.png")]
    assert job.output == Path("../out/rainy/a.png")  # `.` is named after the real folder


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((["a.png", "-"], "out"), "cannot be combined"),
        ((["-", "in"], "out"), "cannot be combined"),
        ((["a.png", "b.png"], None), "-o OUT (a folder) is required because 2 inputs"),
        ((["a.png", "b.png"], "-"), "single image"),
        ((["a.png", "b.png"], "file.txt"), "file.txt: output folder is a file"),
        ((["a.png", "gone.png", "b.png", "nope"], "out"), "gone.png, nope: no such file"),
        ((["a.png", "in/*.gif"], "out"), "in/*.gif: no images or videos match"),
        ((["a.png", "empty"], "out"), "empty: no images or videos found"),
        ((["a.png", "in"], "in"), "in: this input folder is (inside) the output folder"),
        ((["in", "other/in"], "out"), "in and other/in would both be written to out/in"),
        ((["a.png", "other/in/a.png"], "out"), "both a.png and other/in/a.png"),
        ((["a.png", "in"], "out"), "both a.png and in/a.png"),
        ((["a.png", "b.png"], "."), "would replace the input"),
    ],
)
def test_several_inputs_usage_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: tuple, message: str
) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ["a.png", "b.png", "in/a.png", "other/in/a.png"]:
        write_png(Path(name))
    Path("empty").mkdir()
    Path("file.txt").write_text("x")
    with pytest.raises(UsageError) as caught:
        plan_jobs(*args)
    assert message in str(caught.value)
    assert not Path("out").exists()


def test_option_conflicts(tmp_path: Path) -> None:
    write_png(tmp_path / "a.png")
    with pytest.raises(UsageError, match="exclude each other"):
        plan_jobs(str(tmp_path / "a.png"), "x.png", skip_existing=True, overwrite=True)
    with pytest.raises(UsageError, match="contradicts"):
        plan_jobs(str(tmp_path / "a.png"), str(tmp_path / "x.png"), fmt="jpg")
    with pytest.raises(UsageError, match="separator"):
        plan_jobs(str(tmp_path / "a.png"), str(tmp_path / "o") + "/", suffix="a/b")
    with pytest.raises(UsageError, match="format .*: unknown"):
        plan_jobs(str(tmp_path / "a.png"), "x.png", fmt="bmp")


# ------------------------------------------------------------------------------------ streaming


def test_stream_writes_each_output_in_order(tmp_path: Path) -> None:
    sources = {f"{i}.png": write_png(tmp_path / "in" / f"{i}.png", seed=i) for i in range(3)}
    jobs = plan_jobs(str(tmp_path / "in"), str(tmp_path / "out"))
    results = list(stream_jobs(jobs, invert))
    assert [(r.status, Path(r.input).name) for r in results] == [
        ("ok", "0.png"),
        ("ok", "1.png"),
        ("ok", "2.png"),
    ]
    for result in results:
        assert result.error is None and result.megapixels == pytest.approx(8 * 12 / 1e6)
        written = np.asarray(Image.open(result.output))
        np.testing.assert_array_equal(written, 255 - sources[Path(result.input).name])
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["0.png", "1.png", "2.png"]


def test_existing_outputs_refused_skipped_or_overwritten(tmp_path: Path) -> None:
    write_png(tmp_path / "in" / "a.png")
    target = tmp_path / "out" / "a.png"
    target.parent.mkdir()
    target.write_bytes(b"keep me")
    jobs = plan_jobs(str(tmp_path / "in"), str(tmp_path / "out"))

    (refused,) = stream_jobs(jobs, invert)
    assert refused.status == "failed" and "output exists" in (refused.error or "")
    assert target.read_bytes() == b"keep me"

    (skipped,) = stream_jobs(jobs, invert, skip_existing=True)
    assert (skipped.status, skipped.error) == ("skipped", None)
    assert target.read_bytes() == b"keep me"

    (replaced,) = stream_jobs(jobs, invert, overwrite=True)
    assert replaced.status == "ok"
    assert Image.open(target).size == (12, 8)


def test_failures_do_not_stop_the_batch(tmp_path: Path) -> None:
    write_png(tmp_path / "in" / "a.png")
    (tmp_path / "in" / "b.png").write_bytes(b"not a png")
    write_png(tmp_path / "in" / "c.png")
    write_png(tmp_path / "in" / "d.png", height=5)
    jobs = plan_jobs(str(tmp_path / "in"), str(tmp_path / "out"))

    def picky(rgb: np.ndarray) -> np.ndarray:
        if rgb.shape[0] == 5:
            raise RuntimeError("out of memory")
        return rgb

    results = list(stream_jobs(jobs, picky))
    assert [r.status for r in results] == ["ok", "failed", "ok", "failed"]
    assert results[1].error and "b.png" not in results[1].error  # the CLI prefixes the name
    assert results[3].error == "RuntimeError: out of memory"
    assert isinstance(results[3].exception, RuntimeError)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.png", "c.png"]


def test_stdin_to_stdout_png(tmp_path: Path) -> None:
    pixels = write_png(tmp_path / "a.png")
    stdin, stdout = io.BytesIO((tmp_path / "a.png").read_bytes()), io.BytesIO()
    (result,) = stream_jobs(plan_jobs("-", "-"), invert, stdin=stdin, stdout=stdout)
    assert (result.input, result.output, result.status) == ("-", "-", "ok")
    assert stdout.getvalue().startswith(b"\x89PNG")
    np.testing.assert_array_equal(np.asarray(Image.open(stdout)), 255 - pixels)

    (bad,) = stream_jobs(plan_jobs("-", "-"), invert, stdin=io.BytesIO(b""), stdout=io.BytesIO())
    assert bad.status == "failed" and bad.error == "empty file"


def test_decode_of_next_image_overlaps_compute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Decode i+1 runs while compute i runs; the decoder stays at most a bounded queue ahead."""
    for i in range(5):
        write_png(tmp_path / "in" / f"{i}.png", seed=i)
    jobs = plan_jobs(str(tmp_path / "in"), str(tmp_path / "out"))
    lock = threading.Lock()
    decode_spans: list[tuple[float, float]] = []
    compute_spans: list[tuple[float, float]] = []
    real_read = batch.read_image

    def slow_read(source: object, **kwargs: object) -> object:
        start = time.perf_counter()
        time.sleep(0.06)
        picture = real_read(source, **kwargs)  # type: ignore[arg-type]
        with lock:
            decode_spans.append((start, time.perf_counter()))
        return picture

    def slow_derain(rgb: np.ndarray) -> np.ndarray:
        start = time.perf_counter()
        time.sleep(0.06)
        compute_spans.append((start, time.perf_counter()))
        return rgb

    monkeypatch.setattr(batch, "read_image", slow_read)
    results = list(stream_jobs(jobs, slow_derain, prefetch=1))
    assert [r.status for r in results] == ["ok"] * 5
    for i in range(4):
        compute_start, compute_end = compute_spans[i]
        decode_start, decode_end = decode_spans[i + 1]
        assert decode_start < compute_end and compute_start < decode_end, f"no overlap at {i}"


def test_decoder_is_bounded_and_stops_when_closed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for i in range(10):
        write_png(tmp_path / "in" / f"{i:02d}.png", seed=i)
    jobs = plan_jobs(str(tmp_path / "in"), str(tmp_path / "out"))
    decoded: list[str] = []
    real_read = batch.read_image

    def counting_read(source: object, **kwargs: object) -> object:
        decoded.append(str(source))
        return real_read(source, **kwargs)  # type: ignore[arg-type]

    def slow_derain(rgb: np.ndarray) -> np.ndarray:
        time.sleep(0.05)
        return rgb

    monkeypatch.setattr(batch, "read_image", counting_read)
    results = stream_jobs(jobs, slow_derain, prefetch=2)
    first = next(results)
    assert first.status == "ok"
    time.sleep(0.1)  # give the decoder every chance to run ahead
    # one computed + 2 queued + 1 waiting in the decoder thread
    assert len(decoded) <= 4
    results.close()
    time.sleep(0.1)
    assert not any(t.name == "derain-decoder" and t.is_alive() for t in threading.enumerate())
    assert len(decoded) <= 4
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["00.png"]


def test_result_record_fields() -> None:
    record = batch.Result("a.png", "b.png", "ok", None, 0.123456, 1.5).record()
    assert record == {
        "input": "a.png",
        "output": "b.png",
        "status": "ok",
        "error": None,
        "seconds": 0.1235,
        "megapixels": 1.5,
    }
