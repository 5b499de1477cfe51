"""Decode a video into RGB frames and encode derained frames back, with PyAV (FFmpeg in the wheel).

:class:`VideoSource` opens a file and walks it in demux order: each frame of its main video
stream comes out as a :class:`Frame` (float32 RGB in [0, 1], turned upright as the display matrix
says, so rain falls downwards for the model), each packet of its audio and subtitle streams comes
out as it was. :class:`VideoSink` takes the same sequence and writes a new file: frames are turned
back, converted to the input's pixel format and colour tags where the encoder allows, and encoded
with the input's timestamps; packets are remuxed untouched. So the frame count, frame times,
duration, rotation, audio and subtitles all survive.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from derain_cli.errors import VideoError
from derain_cli.video.formats import Encoder, container_for

if TYPE_CHECKING:
    import av
    import av.container

#: Stream kinds copied packet by packet into the output.
REMUXED_KINDS = ("audio", "subtitle")


def ffmpeg_reason(exc: BaseException) -> str:
    """FFmpeg's own words for an error, without the errno and file name PyAV adds."""
    strerror = getattr(exc, "strerror", None)
    if isinstance(strerror, str) and strerror:
        return strerror[0].lower() + strerror[1:]
    return str(exc) or type(exc).__name__


@dataclass
class Frame:
    """One decoded picture: upright RGB plus what the encoder needs to put it back."""

    rgb: np.ndarray  # float32 (H, W, 3) in [0, 1], display orientation
    pts: int | None
    index: int


@dataclass(frozen=True)
class StreamInfo:
    """The main video stream's properties, read from its first frame."""

    width: int
    height: int
    pix_fmt: str
    bits: int
    rotation: int  # counter-clockwise degrees from the display matrix (0, 90, 180, -90)
    time_base: Fraction
    rate: Fraction
    color_range: int
    colorspace: int
    color_primaries: int
    color_trc: int
    sample_aspect_ratio: Fraction | None

    @property
    def rgb_format(self) -> str:
        return "rgb48le" if self.bits > 8 else "rgb24"

    @property
    def top(self) -> float:
        """The largest RGB sample value frames are converted at (16-bit RGB above 8 bits)."""
        return 65535.0 if self.bits > 8 else 255.0


def _turns(rotation: int) -> int:
    """Quarter turns (counter-clockwise) that bring a stored frame upright."""
    return round(rotation / 90) % 4


class VideoSource:
    """An opened input video. Iterate for frames and remuxed packets, in demux order."""

    def __init__(self, path: Path) -> None:
        import av

        self.path = path
        try:
            self.container: av.container.InputContainer = av.open(str(path), "r")
        except av.error.FFmpegError as exc:
            raise VideoError(path, f"cannot read video ({ffmpeg_reason(exc)})") from None
        except OSError as exc:
            raise VideoError(path, f"cannot read video ({exc.strerror or exc})") from None
        videos = [s for s in self.container.streams.video if not _is_cover_art(s)]
        if not videos:
            self.container.close()
            raise VideoError(path, "no video stream in this file")
        self.video = max(videos, key=lambda s: (s.codec_context.width or 0) * (s.height or 0))
        self.video.thread_type = "AUTO"
        self.remuxed = [s for s in self.container.streams if s.type in REMUXED_KINDS]
        dropped = [
            s for s in self.container.streams if s is not self.video and s not in self.remuxed
        ]
        self.dropped_kinds = sorted({"cover art" if _is_cover_art(s) else s.type for s in dropped})
        self.info: StreamInfo | None = None

    @property
    def frame_estimate(self) -> int | None:
        """The frame count the container states, else duration x rate; ``None`` if unknown."""
        if self.video.frames:
            return int(self.video.frames)
        rate = self.video.average_rate or self.video.guessed_rate
        if self.video.duration and self.video.time_base and rate:
            return max(1, round(float(self.video.duration * self.video.time_base * rate)))
        if self.container.duration and rate:
            return max(1, round(self.container.duration / 1_000_000 * float(rate)))
        return None

    def __iter__(self) -> Iterator[Frame | av.Packet]:
        import av

        index = 0
        streams = [self.video, *self.remuxed]
        try:
            for packet in self.container.demux(streams):
                if packet.stream is not self.video:
                    if packet.dts is not None and packet.size:
                        yield packet
                    continue
                for frame in packet.decode():
                    assert isinstance(frame, av.VideoFrame)
                    yield self._frame(frame, index)
                    index += 1
        except av.error.FFmpegError as exc:
            where = f" at frame {index}" if index else ""
            raise VideoError(
                self.path, f"cannot decode video{where} ({ffmpeg_reason(exc)})"
            ) from None
        if index == 0:
            raise VideoError(self.path, "the video stream has no decodable frame")

    def _frame(self, frame: av.VideoFrame, index: int) -> Frame:
        info = self.info
        if info is None:
            info = self.info = self._read_info(frame)
        elif (frame.width, frame.height) != (info.width, info.height):
            raise VideoError(
                self.path,
                f"frame {index} is {frame.width}x{frame.height}, not {info.width}x{info.height} "
                "(size changes inside a video are not supported)",
            )
        pixels = frame.to_ndarray(
            format=info.rgb_format,
            src_colorspace=info.colorspace or None,
            src_color_range=info.color_range or None,
        )
        rgb = np.rot90(pixels, _turns(info.rotation)).astype(np.float32) / info.top
        return Frame(np.ascontiguousarray(rgb), frame.pts, index)

    def _read_info(self, frame: av.VideoFrame) -> StreamInfo:
        context = self.video.codec_context
        rate = self.video.average_rate or self.video.guessed_rate or Fraction(25)
        return StreamInfo(
            width=frame.width,
            height=frame.height,
            pix_fmt=frame.format.name,
            bits=max(c.bits for c in frame.format.components),
            rotation=int(frame.rotation or 0),
            time_base=self.video.time_base or Fraction(1, int(rate)),
            rate=Fraction(rate),
            color_range=int(frame.color_range or 0),
            colorspace=int(frame.colorspace or 0),
            color_primaries=int(frame.color_primaries or 0),
            color_trc=int(frame.color_trc or 0),
            sample_aspect_ratio=context.sample_aspect_ratio,
        )

    def close(self) -> None:
        self.container.close()


def _is_cover_art(stream: Any) -> bool:
    import av

    return bool(stream.disposition & av.stream.Disposition.attached_pic)


class VideoSink:
    """A new video file shaped like ``source``: :meth:`open` on the first frame, then write."""

    def __init__(self, path: Path, source: VideoSource, encoder: Encoder) -> None:
        self.path = path
        self.source = source
        self.encoder = encoder
        self.container_name = container_for(path)
        self.container: av.container.OutputContainer | None = None
        self.stream: Any = None
        self.streams: dict[int, Any] = {}  # input stream index -> output stream
        self.last_pts: int | None = None
        self.frames = 0
        self.error: BaseException | None = (
            None  # set by the thread that writes, raised by its owner
        )
        self.colorspace = UNSPECIFIED  # the output's YUV matrix, set by open()
        self.unfit: list[str] = []  # remuxed streams the output container cannot hold

    def open(self, info: StreamInfo, target: Path) -> None:
        """Create the output at ``target`` (a temporary name) with all its streams."""
        import av

        codec = self.encoder.codec_for(self.container_name)
        out = av.open(str(target), "w", format=self.container_name)
        self.container = out
        try:
            out.metadata.update(self.source.container.metadata)
            if codec == "libsvtav1":  # SVT-AV1 logs through its own variable, not FFmpeg's
                os.environ.setdefault("SVT_LOG", "1")  # errors only
            stream: Any = out.add_stream(
                codec, rate=info.rate, options=self.encoder.options_for(codec)
            )
            stream.width, stream.height = info.width, info.height
            stream.pix_fmt = _pixel_format(
                stream.codec_context.codec, info.pix_fmt, info.width, info.height
            )
            stream.time_base = info.time_base
            stream.codec_context.time_base = info.time_base
            stream.codec_context.color_range = info.color_range
            stream.codec_context.colorspace = self.colorspace = _yuv_matrix(info.colorspace)
            stream.codec_context.color_primaries = info.color_primaries
            stream.codec_context.color_trc = info.color_trc
            if info.sample_aspect_ratio:
                stream.codec_context.sample_aspect_ratio = info.sample_aspect_ratio
            if info.rotation:
                stream.set_display_rotation(info.rotation)
            stream.metadata.update(self.source.video.metadata)
            self.stream = stream
            for template in self.source.remuxed:
                name = template.codec_context.name
                if name not in out.supported_codecs:  # e.g. AAC into WebM, mov_text into MKV
                    self.unfit.append(f"{template.type} ({name})")
                    continue
                copy = out.add_stream_from_template(template)
                copy.metadata.update(template.metadata)
                copy.disposition = template.disposition
                self.streams[template.index] = copy
            chapters = self.source.container.chapters()
            if chapters:
                out.set_chapters(chapters)
        except (av.error.FFmpegError, ValueError, TypeError) as exc:
            raise VideoError(self.path, f"cannot set up the {codec} encoder ({exc})") from None

    def write_frame(self, rgb: np.ndarray, frame: Frame) -> None:
        import av

        info = self.source.info
        assert self.container is not None and info is not None
        dtype = np.uint16 if info.bits > 8 else np.uint8
        upright = np.clip(rgb * info.top + 0.5, 0, info.top).astype(dtype)
        stored = np.ascontiguousarray(np.rot90(upright, -_turns(info.rotation)))
        picture = av.VideoFrame.from_ndarray(stored, format=info.rgb_format)
        picture = picture.reformat(
            format=self.stream.pix_fmt,
            dst_colorspace=self.colorspace or None,
            dst_color_range=info.color_range or None,
            dst_color_trc=info.color_trc or None,
            dst_color_primaries=info.color_primaries or None,
        )
        picture.pts = self._next_pts(frame, info)
        picture.time_base = info.time_base
        try:
            packets = self.stream.encode(picture)
        except av.error.FFmpegError as exc:
            name = self.stream.codec_context.name
            reason = f"cannot encode {info.width}x{info.height} {self.stream.pix_fmt} with {name}"
            raise VideoError(self.path, f"{reason} ({ffmpeg_reason(exc)})") from None
        self._mux(packets)
        self.frames += 1

    def _next_pts(self, frame: Frame, info: StreamInfo) -> int:
        """The input's timestamp; made up from the rate when missing, nudged when not increasing."""
        pts = frame.pts
        if pts is None:
            pts = round(frame.index / (info.rate * info.time_base))
        if self.last_pts is not None and pts <= self.last_pts:
            pts = self.last_pts + 1
        self.last_pts = pts
        return pts

    def write_packet(self, packet: av.Packet) -> None:
        stream = self.streams.get(packet.stream.index)
        if stream is None:
            return
        packet.stream = stream
        self._mux([packet])

    def _mux(self, packets: list[av.Packet]) -> None:
        import av

        assert self.container is not None
        try:
            for packet in packets:
                self.container.mux(packet)
        except av.error.FFmpegError as exc:
            raise VideoError(self.path, f"cannot write video ({ffmpeg_reason(exc)})") from None

    def finish(self) -> None:
        """Flush the encoder and write the trailer."""
        assert self.container is not None
        self._mux(self.stream.encode(None))
        self.close()

    def close(self) -> None:
        if self.container is not None:
            container, self.container = self.container, None
            container.close()


#: FFmpeg's colour matrices: RGB (planar GBR, no matrix), unspecified, BT.601 (SMPTE 170M).
RGB_MATRIX, UNSPECIFIED, SMPTE170M = 0, 2, 6


def _yuv_matrix(source: int) -> int:
    """The output's matrix: the input's (unspecified stays unspecified, so players treat input and
    output alike), or BT.601 for RGB sources, which are converted with BT.601: copying their
    "RGB" tag onto YUV planes would make players read them as GBR."""
    return SMPTE170M if source == RGB_MATRIX else source


def _pixel_format(codec: Any, wanted: str, width: int, height: int) -> str:
    """The input's pixel format if the encoder takes it, else 4:2:0 (what players expect), or
    4:4:4 when the size is odd (chroma subsampling needs even sides)."""
    names = [f.name for f in (codec.video_formats or ())]
    if not names or wanted in names:
        return wanted
    deep = "10" in wanted or "12" in wanted or "16" in wanted or "48" in wanted
    even = width % 2 == 0 and height % 2 == 0
    subsampled = ("yuv420p10le", "yuv420p") if deep else ("yuv420p",)
    full = ("yuv444p10le", "yuv444p") if deep else ("yuv444p",)
    for fallback in (*(subsampled if even else ()), *full, "yuv420p"):
        if fallback in names:
            return fallback
    return names[0]
