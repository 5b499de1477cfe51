"""Video in, video out: what survives (frames, times, audio, rotation), errors, atomicity, CLI.

Videos are generated here (tests/videos.py): a few dozen tiny frames with an AAC tone. The model
is the bundled default where quality matters and an identity or a scaling where only the
plumbing is under test.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner, Result
from videos import (  # tests/videos.py
    make_video,
    probe,
    subtitles_of,
    write_with_extra_streams,
)

from derain_cli.cli.app import app
from derain_cli.errors import UsageError, VideoError
from derain_cli.inference.plan import VIDEO, plan_jobs
from derain_cli.video.consistency import TemporalSettings
from derain_cli.video.formats import Encoder, check_encoder
from derain_cli.video.pipeline import VideoOptions, derain_video

LOSSLESS = VideoOptions(Encoder(crf=0), temporal=None)
#: The same encoder on the command line. Comparisons of the CLI's clip with the library's use it:
#: x264's lossy output for identical frames differed now and then under load (multi-threaded).
LOSSLESS_FLAGS = ("--crf", "0")


def invoke(*args: str) -> Result:
    return CliRunner().invoke(app, ["run", *args])


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def decoded_frames(path: Path) -> list[np.ndarray]:
    import av

    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


# ------------------------------------------------------------------------------ what survives


def test_frames_timestamps_audio_and_rotation_survive(tmp_path: Path) -> None:
    src = make_video(tmp_path / "clip.mp4", frames=20, rotation=90)
    seen: list[tuple[int, ...]] = []

    def record(rgb: np.ndarray) -> np.ndarray:
        seen.append(rgb.shape)
        return rgb * 0.9

    summary = derain_video(src, tmp_path / "out.mp4", record)
    before, after = probe(src), probe(tmp_path / "out.mp4")
    assert summary.frames == after.frames == before.frames == 20
    assert after.pts == before.pts and after.time_base == before.time_base
    assert after.duration == pytest.approx(before.duration)
    assert (after.width, after.height, after.pix_fmt) == (before.width, before.height, "yuv420p")
    assert after.rotation == before.rotation == 90
    assert after.audio_samples == before.audio_samples > 0
    assert after.audio_rate == before.audio_rate
    # The model sees the picture upright: 64 x 48 stored, turned a quarter to 48 wide, 64 tall.
    assert set(seen) == {(64, 48, 3)}


def test_subtitles_language_and_title_survive(tmp_path: Path) -> None:
    import av

    src = write_with_extra_streams(tmp_path / "sub.mkv", subtitles=True, data=False)
    summary = derain_video(src, tmp_path / "out.mkv", lambda rgb: rgb)
    assert subtitles_of(tmp_path / "out.mkv") == subtitles_of(src)
    assert [text for text, _, _ in subtitles_of(src)] == [b"rain 0", b"rain 1"]
    assert subtitles_of(src)[0][2] == "fra" and summary.notes == []
    with av.open(str(tmp_path / "out.mkv")) as container:
        assert container.metadata["title"] == "Rain test"


def test_a_data_stream_is_dropped_with_a_note(tmp_path: Path) -> None:
    src = write_with_extra_streams(tmp_path / "data.ts", subtitles=False, data=True)
    summary = derain_video(src, tmp_path / "out.ts", lambda rgb: rgb)
    assert summary.frames == 6
    assert summary.notes == ["not copied to the output: data stream(s)"]


def test_identity_round_trip_keeps_the_picture(tmp_path: Path) -> None:
    """YUV -> RGB -> YUV with the same colour tags: no colour shift, no geometry change."""
    src = make_video(tmp_path / "clip.mkv", frames=6, rotation=-90, audio=False)
    derain_video(src, tmp_path / "out.mkv", lambda rgb: rgb, LOSSLESS)
    for a, b in zip(decoded_frames(src), decoded_frames(tmp_path / "out.mkv"), strict=True):
        assert np.abs(a.astype(int) - b.astype(int)).mean() < 1.5


def test_ten_bit_input_keeps_its_pixel_format(tmp_path: Path) -> None:
    src = make_video(tmp_path / "deep.mkv", frames=4, audio=False, pix_fmt="yuv420p10le")
    derain_video(src, tmp_path / "out.mkv", lambda rgb: rgb, LOSSLESS)
    assert probe(tmp_path / "out.mkv").pix_fmt == "yuv420p10le"


def test_webm_gets_vp9_and_codec_option_is_used(tmp_path: Path) -> None:
    webm = make_video(tmp_path / "clip.webm", frames=4, audio=False, codec="libvpx-vp9")
    derain_video(webm, tmp_path / "out.webm", lambda rgb: rgb)
    assert probe(tmp_path / "out.webm").codec == "vp9"
    mp4 = make_video(tmp_path / "clip.mp4", frames=4, audio=False)
    derain_video(mp4, tmp_path / "out.mp4", lambda rgb: rgb, VideoOptions(Encoder("mpeg4")))
    assert probe(tmp_path / "out.mp4").codec == "mpeg4"


def test_default_model_on_a_clip_and_the_filter_steadies_it(tmp_path: Path, shared: Path) -> None:
    """The shipped model on a rainy clip of a clean photo: the temporal stage (fusion) flickers
    less than frame-by-frame deraining on static pixels and moves the output no further from the
    clean frames than half a grey level (the fusion's own gains are in tests/test_fusion.py).

    Whether the model itself beats this tiny clip's input is not asserted: nlcl-cpu-v2 dims the
    fine bright texture of this 96x128 photo of fruit along with the rain and ends a little
    below the input (weights/README.md, "Limits"); the model's own floor is held by
    tests/test_default_model.py on the README's example."""
    from videos import write_video

    from derain_cli.images.io import read_image
    from derain_cli.inference.engine import Derainer
    from derain_cli.synth.clip import rainy_clip
    from derain_cli.video.flicker import temporal_error
    from derain_cli.weights.loading import load_weights

    photo = read_image(shared / "data" / "clean" / "ocv-fruits.jpg").rgb
    clip = rainy_clip(photo, np.random.default_rng(5), frames=6, size=(96, 128), motion="object")
    src = write_video(tmp_path / "rain.mp4", clip.rainy, audio=False, options={"crf": "0"})
    derainer = Derainer(load_weights(None), device="cpu")
    outputs = {}
    for name, temporal in (("independent", None), ("temporal", TemporalSettings())):
        out = tmp_path / f"{name}.mp4"
        derain_video(src, out, derainer, VideoOptions(Encoder(crf=0), temporal))
        outputs[name] = [f / 255.0 for f in decoded_frames(out)]
    rainy = [f / 255.0 for f in decoded_frames(src)]

    def error(frames: list[np.ndarray]) -> float:
        return float(
            np.mean([np.abs(f - c).mean() for f, c in zip(frames, clip.clean, strict=True)])
        )

    # No harm beyond half a grey level from the fusion: it favours the darker samples, and v2
    # already dims this photo's sparkling highlights (docs/video.md, "Measured with").
    assert error(outputs["temporal"]) < error(outputs["independent"]) + 0.002
    assert error(outputs["temporal"]) < error(rainy) + 0.002
    steadier = temporal_error(outputs["temporal"], clip.clean)
    assert steadier < temporal_error(outputs["independent"], clip.clean)


class CountingBatches:
    """A stand-in model that takes batches: halves the picture; records what it is given."""

    def __init__(self, batch: int) -> None:
        self.batch = batch
        self.calls: list[int] = []  # frames per call

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        self.calls.append(1)
        return rgb * 0.5

    def derain_batch(self, frames: Sequence[np.ndarray]) -> list[np.ndarray]:
        self.calls.append(len(frames))
        return [rgb * 0.5 for rgb in frames]

    def batch_for(self, height: int, width: int) -> int:
        return self.batch


def test_fusion_streams_in_batches_and_keeps_frames_times_and_audio(tmp_path: Path) -> None:
    """Window 2, batches of 3: every frame once, in order, with its timestamp; audio untouched;
    outputs trail the model by at most batch + window frames (memory stays bounded)."""
    src = make_video(tmp_path / "clip.mp4", frames=17)
    model = CountingBatches(batch=3)
    progress: list[tuple[int, int]] = []  # (frames written, frames derained by then)

    def tick(done: int, total: int | None) -> None:
        progress.append((done, sum(model.calls)))

    options = VideoOptions(temporal=TemporalSettings(window=2))
    summary = derain_video(src, tmp_path / "out.mp4", model, options, on_frame=tick)
    before, after = probe(src), probe(tmp_path / "out.mp4")
    assert summary.frames == after.frames == before.frames == 17
    assert after.pts == before.pts and after.time_base == before.time_base
    assert after.audio_samples == before.audio_samples > 0
    assert model.calls == [3, 3, 3, 3, 3, 2]
    assert [done for done, _ in progress] == list(range(1, 18))
    assert all(derained - done <= 3 + 2 for done, derained in progress)


def test_frames_derained_in_batches_are_the_frames_derained_one_by_one(tmp_path: Path) -> None:
    """A real (small) generator, batches of 4 on the CPU against one frame per pass (no temporal
    stage: its thresholds would turn float rounding into a level here and there)."""
    import torch

    from derain_cli.inference.engine import Derainer
    from derain_cli.nets.generator import NLCLGenerator

    torch.manual_seed(0)
    derainer = Derainer(NLCLGenerator(channels=8, blocks=2), device="cpu")
    src = make_video(tmp_path / "clip.mkv", frames=6, audio=False)
    for batch in (1, 4):
        options = VideoOptions(Encoder(crf=0), None, batch=batch)
        derain_video(src, tmp_path / f"batch{batch}.mkv", derainer, options)
    ones, fours = decoded_frames(tmp_path / "batch1.mkv"), decoded_frames(tmp_path / "batch4.mkv")
    assert len(ones) == len(fours) == 6
    assert all(np.array_equal(a, b) for a, b in zip(ones, fours, strict=True))


# ------------------------------------------------------------------ errors and atomic output


def test_corrupt_and_truncated_videos_are_one_line_errors(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"\x00\x01 not a video" * 100)
    good = make_video(tmp_path / "good.mp4", frames=8)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    for bad in (garbage, cut):
        with pytest.raises(VideoError) as caught:
            derain_video(bad, tmp_path / "out.mp4", lambda rgb: rgb)
        assert str(caught.value).startswith(f"{bad}: ") and "\n" not in str(caught.value)
        assert not (tmp_path / "out.mp4").exists() and leftovers(tmp_path) == []


def test_interrupt_leaves_no_partial_file_and_keeps_the_old_one(tmp_path: Path) -> None:
    src = make_video(tmp_path / "clip.mp4", frames=12)
    out = tmp_path / "out.mp4"
    out.write_bytes(b"previous result")
    calls = 0

    def interrupted(rgb: np.ndarray) -> np.ndarray:
        nonlocal calls
        calls += 1
        if calls == 4:
            raise KeyboardInterrupt
        return rgb

    with pytest.raises(KeyboardInterrupt):
        derain_video(src, out, interrupted, overwrite=True)
    assert out.read_bytes() == b"previous result" and leftovers(tmp_path) == []


def test_encoder_failure_leaves_nothing(tmp_path: Path) -> None:
    """WebM cannot hold MPEG-4 Part 2: the muxer refuses, and no file is left behind."""
    src = make_video(tmp_path / "clip.mp4", frames=4, audio=False)
    with pytest.raises(VideoError, match="out.webm"):
        derain_video(src, tmp_path / "out.webm", lambda rgb: rgb, VideoOptions(Encoder("mpeg4")))
    assert not (tmp_path / "out.webm").exists() and leftovers(tmp_path) == []


@pytest.mark.parametrize(
    ("encoder", "message"),
    [
        (Encoder("no-such-codec"), "no such video encoder"),
        (Encoder("aac"), "'aac': an audio encoder, not a video one"),
        (Encoder("ffv1", crf=10), "crf does not apply"),
        (Encoder(crf=60), "out of range"),
    ],
)
def test_nonsense_encoder_options_are_refused(encoder: Encoder, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        check_encoder(encoder)


# ------------------------------------------------------------------------------- planning, CLI


def test_plan_mixes_images_and_videos_and_videos_keep_their_container(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("a.jpg", "b.MOV", "c.mkv", "notes.txt"):
        (folder / name).write_bytes(b"x")
    jobs = plan_jobs(str(folder), str(tmp_path / "out"), fmt="png")
    assert [(j.output.name if j.output else None, j.fmt) for j in jobs] == [
        ("a.png", "png"),
        ("b.MOV", VIDEO),
        ("c.mkv", VIDEO),
    ]


@pytest.mark.parametrize(
    ("src", "out", "fmt", "message"),
    [
        ("clip.mp4", "-", "auto", "cannot be written to stdout"),
        ("clip.mp4", "clean.png", "auto", "is a video; name the output"),
        ("photo.jpg", "clean.mp4", "auto", "is not a video"),
        ("clip.mp4", "clean.mp4", "png", "format png: is for images"),
    ],
)
def test_plan_refuses_video_nonsense(
    tmp_path: Path, src: str, out: str, fmt: str, message: str
) -> None:
    (tmp_path / src).write_bytes(b"x")
    dest = out if out == "-" else str(tmp_path / out)
    with pytest.raises(UsageError, match=message):
        plan_jobs(str(tmp_path / src), dest, fmt=fmt)


def test_cli_batch_continues_past_a_bad_video(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    make_video(folder / "good.mp4", frames=6)
    (folder / "bad.mp4").write_bytes(b"definitely not a video")
    report = tmp_path / "report.jsonl"
    result = invoke(str(folder), "-o", str(tmp_path / "out"), "--report", str(report))
    assert result.exit_code == 1, result.output
    assert "bad.mp4: cannot read video" in result.stderr
    assert "1 done, 0 skipped, 1 failed" in result.stderr and "6 video frames" in result.stderr
    records = {Path(r["input"]).name: r for r in map(json.loads, report.read_text().splitlines())}
    assert records["good.mp4"]["status"] == "ok" and records["good.mp4"]["frames"] == 6
    assert records["bad.mp4"]["status"] == "failed" and "frames" not in records["bad.mp4"]
    assert probe(tmp_path / "out" / "good.mp4").frames == 6
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["good.mp4"]


def test_cli_refuses_a_bad_codec_before_loading_weights(tmp_path: Path) -> None:
    src = make_video(tmp_path / "clip.mp4", frames=4)
    result = invoke(str(src), "-o", str(tmp_path / "out.mp4"), "--codec", "nope",
                    "--weights", str(tmp_path / "missing.safetensors"))  # fmt: skip
    assert result.exit_code == 2 and "--codec 'nope'" in result.stderr
    assert not (tmp_path / "out.mp4").exists()


def frames_apart(first: list[np.ndarray], second: list[np.ndarray]) -> float:
    """The largest mean absolute difference, in grey levels, between two clips' frames."""
    pairs = zip(first, second, strict=True)
    return max(float(np.abs(a.astype(float) - b.astype(float)).mean()) for a, b in pairs)


def test_cli_temporal_is_on_by_default_and_no_temporal_turns_it_off(tmp_path: Path) -> None:
    from derain_cli.inference.engine import Derainer
    from derain_cli.weights.loading import load_weights

    src = make_video(tmp_path / "clip.mp4", frames=6, audio=False)
    for name, extra in (("default", []), ("independent", ["--no-temporal"])):
        result = invoke(str(src), "-o", str(tmp_path / f"{name}.mp4"), *LOSSLESS_FLAGS, *extra)
        assert result.exit_code == 0, result.output
    derainer = Derainer(load_weights(None), device="cpu")
    for name, temporal in (("lib-default", TemporalSettings()), ("lib-independent", None)):
        options = VideoOptions(LOSSLESS.encoder, temporal)
        derain_video(src, tmp_path / f"{name}.mp4", derainer, options)
    read = {p.stem: decoded_frames(p) for p in tmp_path.glob("*.mp4") if p.stem != "clip"}
    # The CLI's frames are the library's, and the fusion changes them.
    for name in ("default", "independent"):
        pairs = zip(read[name], read[f"lib-{name}"], strict=True)
        assert all(np.array_equal(a, b) for a, b in pairs)
    assert frames_apart(read["default"], read["independent"]) > 1.0


def test_cli_temporal_window_and_strength_reach_the_library(tmp_path: Path) -> None:
    from derain_cli.inference.engine import Derainer
    from derain_cli.weights.loading import load_weights

    src = make_video(tmp_path / "clip.mp4", frames=5, audio=False)
    flags = ["--temporal-window", "1", "--temporal-strength", "0.5", *LOSSLESS_FLAGS]
    result = invoke(str(src), "-o", str(tmp_path / "cli.mp4"), *flags)
    assert result.exit_code == 0, result.output
    derainer = Derainer(load_weights(None), device="cpu")
    flagged = TemporalSettings(window=1, strength=0.5)
    for name, options in (
        ("lib", VideoOptions(LOSSLESS.encoder, flagged)),
        ("lib-lossy", VideoOptions(Encoder(), flagged)),
        ("lib-default", VideoOptions(Encoder(), TemporalSettings())),
    ):
        derain_video(src, tmp_path / f"{name}.mp4", derainer, options)
    names = ("cli", "lib", "lib-lossy", "lib-default")
    cli, lib, lossy, default = (decoded_frames(tmp_path / f"{name}.mp4") for name in names)
    # The flags reach the library (the same clip) and change it (measured as before, after the
    # default lossy encoder).
    assert all(np.array_equal(a, b) for a, b in zip(cli, lib, strict=True))
    assert frames_apart(lossy, default) > 1.0
    refused = invoke(str(src), "-o", str(tmp_path / "no.mp4"), "--temporal-window", "9")
    assert refused.exit_code == 2 and "--temporal-window" in refused.stderr


def test_cli_shows_frames_with_fps_on_a_terminal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import io

    from rich.console import Console

    from derain_cli.cli import run as run_cli

    screen = io.StringIO()
    console = Console(file=screen, force_terminal=True, width=120, highlight=False)
    monkeypatch.setattr(run_cli, "err_console", console)
    src = make_video(tmp_path / "clip.mp4", frames=8, audio=False)
    result = invoke(str(src), "-o", str(tmp_path / "out.mp4"))
    assert result.exit_code == 0, result.output
    shown = screen.getvalue()
    assert "clip.mp4" in shown and "8/8" in shown and "frames" in shown and "fps" in shown


def test_odd_sized_rgb_video_is_encoded_full_chroma_with_a_yuv_matrix(tmp_path: Path) -> None:
    """PNG-in-MOV, 65x49 RGB: 4:2:0 cannot hold odd sizes, and the "RGB" matrix tag must not be
    copied onto YUV planes (players would read them as GBR: wrong colours)."""
    import av

    src = make_video(tmp_path / "odd.mov", frames=3, size=(49, 65), audio=False, codec="png",
                     pix_fmt="rgb24")  # fmt: skip
    derain_video(src, tmp_path / "out.mov", lambda rgb: rgb, LOSSLESS)
    after = probe(tmp_path / "out.mov")
    assert (after.width, after.height, after.frames) == (65, 49, 3)
    assert after.pix_fmt.startswith(("yuv444p", "yuvj444p"))
    with av.open(str(tmp_path / "out.mov")) as container:
        assert next(container.decode(video=0)).colorspace != 0  # not "RGB"
    for a, b in zip(decoded_frames(src), decoded_frames(tmp_path / "out.mov"), strict=True):
        assert np.abs(a.astype(int) - b.astype(int)).mean() < 1.5


def test_a_stream_the_output_container_cannot_hold_is_dropped_with_a_note(tmp_path: Path) -> None:
    """AAC audio cannot go into WebM: the video is still written, and the user is told."""
    src = make_video(tmp_path / "clip.mp4", frames=4)
    summary = derain_video(src, tmp_path / "out.webm", lambda rgb: rgb)
    after = probe(tmp_path / "out.webm")
    assert after.frames == 4 and after.codec == "vp9" and after.audio_samples == 0
    assert summary.notes == ["the output container cannot hold: audio (aac); not copied"]


# ------------------------------------------------- the library keeps the command's safety rules


def test_derain_video_refuses_its_input_and_an_existing_output(tmp_path: Path) -> None:
    """derain_video(a, a) replaced a.mp4; an existing output was replaced silently; str paths
    crashed with AttributeError (issue "Trust II")."""
    src = make_video(tmp_path / "clip.mp4", frames=3, size=(32, 32), audio=False)
    original = src.read_bytes()
    (tmp_path / "sub").mkdir()
    refused = r"output would replace the input .*; choose another output$"
    for same in (src, str(src), tmp_path / "sub" / ".." / "clip.mp4"):
        with pytest.raises(UsageError, match=refused):
            derain_video(src, same, lambda rgb: rgb)
    (tmp_path / "link.mp4").hardlink_to(src)
    with pytest.raises(UsageError, match="replace the input"):
        derain_video(src, tmp_path / "link.mp4", lambda rgb: rgb, overwrite=True)
    assert src.read_bytes() == original

    out = tmp_path / "out.mp4"
    out.write_bytes(b"earlier result")
    with pytest.raises(VideoError, match=r"out\.mp4: output exists \(use overwrite=True\)"):
        derain_video(str(src), str(out), lambda rgb: rgb)
    assert out.read_bytes() == b"earlier result"
    summary = derain_video(str(src), str(out), lambda rgb: rgb, overwrite=True)
    assert summary.frames == 3 and out.read_bytes() != b"earlier result"
    assert leftovers(tmp_path) == []
