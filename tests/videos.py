"""Small videos for tests, written with PyAV: a moving pattern, optional rain, audio, rotation."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Probe:
    frames: int
    pts: list[int]
    time_base: Fraction
    width: int
    height: int
    pix_fmt: str
    rotation: int
    audio_samples: int
    audio_rate: int
    duration: float  # seconds, of the video stream's frames (last pts + one frame)
    codec: str


def scene(
    height: int, width: int, index: int, rng: np.random.Generator | None = None
) -> np.ndarray:
    """A static textured background with a bright square moving right; optional rain streaks."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack(
        [
            0.4 + 0.2 * np.sin(xs / 5.0),
            0.45 + 0.2 * np.cos(ys / 7.0),
            0.5 + 0.1 * np.sin((xs + ys) / 9.0),
        ],
        axis=2,
    )
    side = max(4, height // 5)
    left = (index * 2) % max(1, width - side)
    base[height // 3 : height // 3 + side, left : left + side] = (0.9, 0.2, 0.1)
    if rng is not None:
        for _ in range(max(3, height * width // 400)):
            x, y = int(rng.integers(0, width)), int(rng.integers(0, height - 6))
            base[y : y + 6, x : x + 1] += 0.3
    return np.clip(base, 0, 1).astype(np.float32)


def make_video(
    path: Path,
    *,
    frames: int = 12,
    size: tuple[int, int] = (48, 64),
    fps: int = 12,
    audio: bool = True,
    rotation: int = 0,
    rain_seed: int | None = 0,
    codec: str = "libx264",
    pix_fmt: str = "yuv420p",
) -> Path:
    """Write ``frames`` frames of :func:`scene` (H x W = ``size``) and a 440 Hz tone as long."""
    height, width = size
    rng = np.random.default_rng(rain_seed) if rain_seed is not None else None
    pictures = [scene(height, width, index, rng) for index in range(frames)]
    return write_video(
        path, pictures, fps=fps, audio=audio, rotation=rotation, codec=codec, pix_fmt=pix_fmt
    )


def write_video(
    path: Path,
    pictures: list[np.ndarray],
    *,
    fps: int = 12,
    audio: bool = True,
    rotation: int = 0,
    codec: str = "libx264",
    pix_fmt: str = "yuv420p",
    options: dict[str, str] | None = None,
) -> Path:
    """Encode float RGB ``pictures`` (H, W, 3) in [0, 1], with a tone as long if ``audio``."""
    import av

    height, width = pictures[0].shape[:2]
    with av.open(str(path), "w") as out:
        video = out.add_stream(codec, rate=fps, options=options or {})
        video.width, video.height, video.pix_fmt = width, height, pix_fmt
        if rotation:
            video.set_display_rotation(rotation)
        sound = None
        if audio:
            sound = out.add_stream("aac", rate=16000)
            sound.layout = "mono"
        for index, picture in enumerate(pictures):
            rgb = (np.clip(picture, 0, 1) * 255 + 0.5).astype(np.uint8)
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = index
            frame.time_base = Fraction(1, fps)
            for packet in video.encode(frame):
                out.mux(packet)
        for packet in video.encode(None):
            out.mux(packet)
        if sound is not None:
            total = 16000 * len(pictures) // fps
            t = np.arange(total, dtype=np.float32) / 16000
            tone = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
            for start in range(0, total, 1024):
                chunk = tone[start : start + 1024][None, :]
                frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="mono")
                frame.sample_rate = 16000
                frame.pts = start
                for packet in sound.encode(frame):
                    out.mux(packet)
            for packet in sound.encode(None):
                out.mux(packet)
    return path


def probe(path: Path) -> Probe:
    """Decode every frame and audio sample of ``path``."""
    import av

    with av.open(str(path)) as container:
        video = container.streams.video[0]
        pts: list[int] = []
        rotation = 0
        pix_fmt = ""
        for frame in container.decode(video):
            pts.append(int(frame.pts))
            rotation = int(frame.rotation or 0)
            pix_fmt = frame.format.name
        codec = video.codec_context.name
        width, height, time_base = video.width, video.height, video.time_base
        rate = video.average_rate or video.guessed_rate
    samples, audio_rate = 0, 0
    with av.open(str(path)) as container:
        if container.streams.audio:
            stream = container.streams.audio[0]
            audio_rate = stream.rate
            for frame in container.decode(stream):
                samples += frame.samples
    step = float(1 / (rate * time_base)) if rate else 0.0
    duration = float((pts[-1] - pts[0] + step) * time_base) if pts else 0.0
    return Probe(
        len(pts),
        pts,
        time_base,
        width,
        height,
        pix_fmt,
        rotation,
        samples,
        audio_rate,
        duration,
        codec,
    )


def write_with_extra_streams(path: Path, *, subtitles: bool, data: bool, frames: int = 6) -> Path:
    """A clip with SubRip subtitles (Matroska) or a KLV data stream (MPEG-TS), and a title."""
    import av

    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=12)
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        out.metadata["title"] = "Rain test"
        extra = None
        if subtitles:
            extra = out.add_mux_stream("subrip", time_base=Fraction(1, 1000))
            extra.metadata["language"] = "fra"
        elif data:
            extra = out.add_data_stream("klv")
        for index in range(frames):
            rgb = (scene(48, 64, index) * 255).astype(np.uint8)
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts, frame.time_base = index, Fraction(1, 12)
            for packet in video.encode(frame):
                out.mux(packet)
        for packet in video.encode(None):
            out.mux(packet)
        if extra is not None:
            for k, ms in enumerate((0, 200)):
                packet = av.Packet(b"rain %d" % k)
                packet.stream = extra
                packet.pts = packet.dts = ms if subtitles else ms * 90
                packet.duration = 100
                packet.time_base = Fraction(1, 1000) if subtitles else Fraction(1, 90000)
                out.mux(packet)
    return path


def subtitles_of(path: Path) -> list[tuple[bytes, int, str]]:
    """(text, pts in ms, language) of each subtitle packet."""
    import av

    with av.open(str(path)) as container:
        if not container.streams.subtitles:
            return []
        stream = container.streams.subtitles[0]
        language = stream.metadata.get("language", "")
        return [(bytes(p), int(p.pts), language) for p in container.demux(stream) if p.size]
