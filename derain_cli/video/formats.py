"""Which files are videos, which container each suffix means, and which encoder options make sense.

Nothing here imports PyAV at module level: the planner asks :func:`is_video_name` for every file
of a folder, and a batch of photos should not pay for FFmpeg. :func:`check_encoder` does import it,
once, before any work starts, so a misspelt codec fails like any other bad option.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from derain_cli.errors import UsageError, setting

#: Video suffix -> FFmpeg muxer. The output keeps its input's container (``.mov`` stays ``.mov``).
CONTAINERS: dict[str, str] = {
    ".mp4": "mp4",
    ".m4v": "mp4",
    ".mov": "mov",
    ".mkv": "matroska",
    ".webm": "webm",
    ".avi": "avi",
    ".ts": "mpegts",
    ".mts": "mpegts",
    ".m2ts": "mpegts",
}
VIDEO_SUFFIXES: frozenset[str] = frozenset(CONTAINERS)

#: The encoder a container gets without ``--codec`` (WebM allows only VP8, VP9 and AV1).
DEFAULT_CODEC = "libx264"
_CONTAINER_CODEC = {"webm": "libvpx-vp9"}
#: Without ``--crf``: visually lossless for H.264 / H.265; VP9's and AV1's scales differ.
DEFAULT_CRF = {"libx264": 18, "libx265": 20, "libvpx-vp9": 24, "libaom-av1": 24, "libsvtav1": 24}
_CRF_RANGE = {"libx264": 51, "libx265": 51, "libvpx-vp9": 63, "libaom-av1": 63, "libsvtav1": 63}


def is_video_name(name: str | Path) -> bool:
    return Path(name).suffix.lower() in VIDEO_SUFFIXES


def container_for(path: Path) -> str:
    """The FFmpeg muxer of an output path (its suffix must be a video suffix)."""
    try:
        return CONTAINERS[path.suffix.lower()]
    except KeyError:
        known = ", ".join(sorted(VIDEO_SUFFIXES))
        raise UsageError(f"{path}: not a video name (use {known})") from None


@dataclass(frozen=True)
class Encoder:
    """How frames are encoded: an FFmpeg encoder name and its quality (CRF, if it has one)."""

    codec: str | None = None  # None: the container's default (H.264; VP9 for WebM)
    crf: int | None = None  # None: the codec's default from DEFAULT_CRF

    def codec_for(self, container: str) -> str:
        return self.codec or _CONTAINER_CODEC.get(container, DEFAULT_CODEC)

    def options_for(self, codec: str) -> dict[str, str]:
        """FFmpeg private options for ``codec``: its CRF, VP9's constant-quality mode, and
        x265's own log (two dozen ``x265 [info]`` lines on stderr per video) cut to errors."""
        options = {"x265-params": "log-level=error"} if codec == "libx265" else {}
        crf = self.crf if self.crf is not None else DEFAULT_CRF.get(codec)
        if crf is None:
            return options
        options["crf"] = str(crf)
        if codec == "libvpx-vp9":
            options["b"] = "0"  # constant quality: without it VP9 treats CRF as a bitrate cap
        if codec == "libx264":
            options["preset"] = "medium"
        return options


def check_encoder(encoder: Encoder) -> None:
    """Refuse an encoder FFmpeg does not have, or a CRF it cannot take, before any work starts."""
    if encoder.codec is None and encoder.crf is None:
        return
    import av

    if encoder.codec is not None:
        try:
            codec = av.codec.Codec(encoder.codec, "w")
        except Exception:  # PyAV raises UnknownCodecError, a ValueError subclass
            raise UsageError(
                f"{setting('codec')} {encoder.codec!r}: no such video encoder in this FFmpeg "
                "(try libx264, libx265, libvpx-vp9, mpeg4 or ffv1)"
            ) from None
        if codec.type != "video":
            raise UsageError(
                f"{setting('codec')} {encoder.codec!r}: "
                f"{_article(codec.type)} {codec.type} encoder, not a video one"
            )
    if encoder.crf is None:
        return
    if encoder.codec is not None and encoder.codec not in _CRF_RANGE:
        raise UsageError(
            f"{setting('crf')} does not apply to {setting('codec')} {encoder.codec} "
            "(it has no CRF mode)"
        )
    top = _CRF_RANGE.get(encoder.codec or DEFAULT_CODEC, 51)
    if not 0 <= encoder.crf <= top:
        raise UsageError(
            f"{setting('crf')} {encoder.crf}: out of range for this codec (0 to {top})"
        )


def _article(word: str) -> str:
    """``a`` or ``an`` before ``word`` (``an audio encoder``, ``a subtitle encoder``)."""
    return "an" if word[:1].lower() in "aeiou" else "a"
