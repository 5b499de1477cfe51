"""Image fidelity: orientation, metadata, alpha, 16 bits, grayscale, bombs, broken files, atomic."""

from __future__ import annotations

import hashlib
import io
import os
import struct
import warnings
from pathlib import Path

import cv2
import images  # tests/images.py; pytest puts tests/ on sys.path
import numpy as np
import pytest
from PIL import Image, ImageFile, ImageOps

from derain_cli.errors import ImageError, UsageError
from derain_cli.images import codecs
from derain_cli.images import io as imaging
from derain_cli.images.formats import format_for_path
from derain_cli.images.io import (
    DEFAULT_MAX_MEGAPIXELS,
    Picture,
    encode_image,
    read_image,
    write_image,
)
from derain_cli.inference.plan import plan_jobs


def reopen(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def roundtrip(picture: Picture, fmt: str, rgb: np.ndarray | None = None) -> Picture:
    return read_image(encode_image(picture, picture.rgb if rgb is None else rgb, fmt))


def cv2_read(data: bytes) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)


# --- plain reading -----------------------------------------------------------------------------


def test_rgb_png_reads_exact_values() -> None:
    picture = read_image(images.rgb_png(6, 5))
    expected = images.pixels8(6, 5)
    assert picture.rgb.dtype == np.float32 and picture.rgb.shape == (6, 5, 3)
    np.testing.assert_array_equal(np.rint(picture.rgb * 255).astype(np.uint8), expected)
    assert (picture.bit_depth, picture.grayscale, picture.alpha, picture.format) == (
        8,
        False,
        None,
        "PNG",
    )
    assert picture.path is None and picture.name == "<stdin>"


def test_one_pixel_image_round_trips(tmp_path: Path) -> None:
    picture = read_image(images.rgb_png(1, 1))
    write_image(tmp_path / "one.png", picture, picture.rgb)
    again = read_image(tmp_path / "one.png")
    np.testing.assert_array_equal(again.rgb, picture.rgb)


def test_identity_png_write_is_lossless(tmp_path: Path) -> None:
    source = tmp_path / "in.png"
    source.write_bytes(images.rgb_png(9, 7))
    picture = read_image(source)
    assert picture.path == source
    write_image(tmp_path / "out.png", picture, picture.rgb)
    np.testing.assert_array_equal(
        np.asarray(Image.open(tmp_path / "out.png")), images.pixels8(9, 7)
    )


# --- EXIF orientation and metadata -------------------------------------------------------------


@pytest.mark.parametrize("orientation", range(1, 9))
def test_orientation_matches_pillow_exif_transpose(orientation: int) -> None:
    data = images.oriented_png(orientation, height=4, width=7)
    expected = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))))
    picture = read_image(data)
    np.testing.assert_array_equal(np.rint(picture.rgb * 255).astype(np.uint8), expected)


def test_orientation_6_puts_top_left_pixel_top_right() -> None:
    stored = images.pixels8(2, 3)  # 2 rows, 3 columns, as stored in the file
    picture = read_image(images.oriented_png(6, height=2, width=3))
    pixels = np.rint(picture.rgb * 255).astype(np.uint8)
    assert pixels.shape == (3, 2, 3)  # rotated 90 degrees clockwise for display
    np.testing.assert_array_equal(pixels[0, -1], stored[0, 0])
    np.testing.assert_array_equal(pixels[-1, -1], stored[0, -1])
    np.testing.assert_array_equal(pixels[0, 0], stored[-1, 0])


@pytest.mark.parametrize("orientation", [3, 6])
@pytest.mark.parametrize("fmt", ["jpg", "png", "webp", "tiff"])
def test_written_exif_has_orientation_1_and_keeps_other_tags(orientation: int, fmt: str) -> None:
    picture = read_image(images.oriented_jpeg(orientation))
    height, width = (48, 32) if orientation == 6 else (32, 48)
    assert picture.rgb.shape[:2] == (height, width)
    written = reopen(encode_image(picture, picture.rgb, fmt))
    assert written.size == (width, height)
    exif = written.getexif()
    assert exif.get(0x0112) == 1
    assert exif.get(0x010F) == images.MAKE
    assert exif.get_ifd(0x8769).get(0x9003) == images.DATE_TIME_ORIGINAL


def test_jpeg_exif_bytes_kept_except_orientation() -> None:
    source = images.exif_bytes(orientation=6)
    picture = read_image(images.oriented_jpeg(6))
    assert picture.exif is not None and len(picture.exif) == len(source)
    differing = [i for i, (a, b) in enumerate(zip(picture.exif, source, strict=True)) if a != b]
    assert len(differing) == 1  # only the orientation value's low byte changed (6 -> 1)
    assert reopen(encode_image(picture, picture.rgb, "jpg")).info["exif"] == picture.exif


def exif_with_thumbnail(orientation: int, thumbnail: bytes, *, tail: bytes = b"") -> bytes:
    """Hand-built little-endian EXIF: IFD0 (orientation) linked to IFD1 holding a JPEG preview.

    ``tail`` is placed after the preview, as if other data followed it.
    """
    ifd0 = struct.pack("<H", 1) + struct.pack("<HHIHH", 0x0112, 3, 1, orientation, 0)
    ifd1_at = 8 + len(ifd0) + 4
    thumb_at = ifd1_at + 2 + 2 * 12 + 4
    ifd1 = struct.pack("<H", 2)
    ifd1 += struct.pack("<HHII", 0x0201, 4, 1, thumb_at)
    ifd1 += struct.pack("<HHII", 0x0202, 4, 1, len(thumbnail)) + struct.pack("<I", 0)
    tiff = b"II*\x00" + struct.pack("<I", 8) + ifd0 + struct.pack("<I", ifd1_at) + ifd1
    return b"Exif\x00\x00" + tiff + thumbnail + tail


@pytest.mark.parametrize("tail", [b"", b"\x07" * 10], ids=["at-end", "in-middle"])
def test_exif_thumbnail_of_the_rainy_input_is_dropped(tail: bytes) -> None:
    thumbnail = images.rgb_jpeg(8, 8, seed=5)
    exif = exif_with_thumbnail(6, thumbnail, tail=tail)
    assert Image.open(io.BytesIO(images.rgb_jpeg(32, 48, exif=exif))).getexif().get(0x0112) == 6
    picture = read_image(images.rgb_jpeg(32, 48, exif=exif))
    assert picture.rgb.shape[:2] == (48, 32)  # orientation applied
    assert picture.exif is not None and thumbnail not in picture.exif
    for fmt in ("jpg", "png"):
        written = reopen(encode_image(picture, picture.rgb, fmt))
        raw = written.info["exif"]
        assert thumbnail not in raw and (tail == b"" or raw.endswith(tail))
        tiff = raw[len(b"Exif\x00\x00") :]
        (ifd0,) = struct.unpack_from("<I", tiff, 4)
        (count,) = struct.unpack_from("<H", tiff, ifd0)
        assert struct.unpack_from("<I", tiff, ifd0 + 2 + 12 * count) == (0,)  # no IFD1 link
        assert written.getexif().get(0x0112) == 1


def test_orientation_applied_to_16_bit_and_alpha() -> None:
    array = images.pixels16(3, 5, 4)
    image_exif = images.exif_bytes(orientation=8)
    data = codecs.png_bytes(array, icc=None, exif=image_exif)
    picture = read_image(data)
    assert picture.rgb.shape == (5, 3, 3) and picture.bit_depth == 16
    np.testing.assert_array_equal(picture.alpha, np.rot90(array[:, :, 3]))
    np.testing.assert_array_equal(
        np.rint(picture.rgb * 65535).astype(np.uint16), np.rot90(array[:, :, :3])
    )


def test_tiff_source_exif_drops_layout_tags() -> None:
    image = Image.fromarray(images.pixels8(8, 8))
    data = images.encode(image, "TIFF", exif=images.exif_bytes(orientation=3))
    picture = read_image(data)
    exif = reopen(encode_image(picture, picture.rgb, "jpg")).getexif()
    assert exif.get(0x010F) == images.MAKE and exif.get(0x0112) == 1
    assert 273 not in exif and 256 not in exif  # StripOffsets, ImageWidth
    assert exif.get_ifd(0x8769).get(0x9003) == images.DATE_TIME_ORIGINAL


@pytest.mark.parametrize("fmt", ["jpg", "png", "webp", "tiff"])
def test_icc_profile_bytes_identical_after_write(fmt: str) -> None:
    picture = read_image(images.icc_jpeg())
    assert picture.icc_profile == images.srgb_icc()
    assert reopen(encode_image(picture, picture.rgb, fmt)).info["icc_profile"] == images.srgb_icc()


@pytest.mark.parametrize("fmt", ["png", "tiff"])
def test_icc_and_exif_kept_in_16_bit_output(fmt: str) -> None:
    picture = read_image(images.png16(3))
    picture.icc_profile = images.srgb_icc()
    picture.exif = images.exif_bytes(orientation=1)
    written = reopen(encode_image(picture, picture.rgb, fmt))
    assert written.info["icc_profile"] == images.srgb_icc()
    assert written.getexif().get(0x010F) == images.MAKE


# --- alpha ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["png", "tiff", "webp"])
def test_rgba_alpha_byte_identical(fmt: str) -> None:
    source = images.pixels8(16, 20, 4, seed=1)
    picture = read_image(images.rgba_png())
    assert picture.alpha is not None and picture.alpha.dtype == np.uint8
    np.testing.assert_array_equal(picture.alpha, source[:, :, 3])
    # The network's output differs from the input; alpha must not care.
    derained = np.clip(picture.rgb * 0.5 + 0.1, 0, 1)
    written = reopen(encode_image(picture, derained, fmt))
    assert written.mode == "RGBA"
    np.testing.assert_array_equal(np.asarray(written)[:, :, 3], source[:, :, 3])


def test_jpeg_output_drops_alpha() -> None:
    picture = read_image(images.rgba_png())
    written = reopen(encode_image(picture, picture.rgb, "jpg"))
    assert written.mode == "RGB"


def test_gray_alpha_kept_as_la() -> None:
    source = images.pixels8(16, 20, 2, seed=2)
    picture = read_image(images.la_png())
    assert picture.grayscale and picture.alpha is not None
    for fmt in ("png", "tiff"):
        written = reopen(encode_image(picture, picture.rgb, fmt))
        assert written.mode == "LA"
        np.testing.assert_array_equal(np.asarray(written), source)


def test_palette_with_transparency_becomes_rgba() -> None:
    picture = read_image(images.palette_png(transparent=True))
    indices = np.arange(64).reshape(8, 8) % 4
    assert picture.alpha is not None and not picture.grayscale
    np.testing.assert_array_equal(picture.alpha, np.where(indices == 0, 0, 255))
    np.testing.assert_array_equal(picture.rgb[indices == 1], np.tile([0.0, 1.0, 0.0], (16, 1)))
    assert read_image(images.palette_png(transparent=False)).alpha is None


def test_16_bit_alpha_is_kept_and_rounded_for_webp() -> None:
    source = images.pixels16(12, 16, 4, seed=6)
    picture = read_image(images.png16(4))
    assert picture.alpha is not None and picture.alpha.dtype == np.uint16
    np.testing.assert_array_equal(picture.alpha, source[:, :, 3])
    for fmt in ("png", "tiff"):
        again = roundtrip(picture, fmt)
        np.testing.assert_array_equal(again.alpha, source[:, :, 3])
    webp = roundtrip(picture, "webp")
    assert webp.alpha is not None and webp.alpha.dtype == np.uint8
    expected = np.rint(source[:, :, 3] / 257.0)
    assert np.abs(webp.alpha.astype(int) - expected).max() == 0


# --- 16 bits -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("maker", "seed"), [(images.png16, 6), (images.tiff16, 7)])
@pytest.mark.parametrize("fmt", ["png", "tiff"])
def test_16_bit_rgb_round_trip_within_one_lsb(maker, seed: int, fmt: str) -> None:  # noqa: ANN001
    source = images.pixels16(12, 16, 3, seed=seed)
    picture = read_image(maker(3))
    assert picture.bit_depth == 16 and not picture.grayscale
    np.testing.assert_array_equal(np.rint(picture.rgb * 65535).astype(np.uint16), source)
    data = encode_image(picture, picture.rgb, fmt)
    decoded = cv2_read(data)  # an independent decoder
    assert decoded.dtype == np.uint16
    assert np.abs(decoded[:, :, ::-1].astype(int) - source).max() <= 1


def test_16_bit_gray_round_trip() -> None:
    source = images.pixels16(16, 20, 1, seed=5)
    picture = read_image(images.gray16_png())
    assert picture.grayscale and picture.bit_depth == 16 and picture.alpha is None
    for fmt in ("png", "tiff"):
        written = reopen(encode_image(picture, picture.rgb, fmt))
        assert written.mode.startswith("I;16")
        assert np.abs(np.asarray(written).astype(int) - source).max() <= 1


def test_16_bit_gray_alpha_png() -> None:
    source = images.pixels16(6, 7, 2, seed=9)
    picture = read_image(codecs.png_bytes(source, icc=None, exif=None))
    assert picture.grayscale and picture.bit_depth == 16
    np.testing.assert_array_equal(picture.alpha, source[:, :, 1])
    np.testing.assert_array_equal(np.rint(picture.rgb[:, :, 0] * 65535), source[:, :, 0])
    again = roundtrip(picture, "png")
    assert again.grayscale and again.bit_depth == 16
    np.testing.assert_array_equal(again.alpha, source[:, :, 1])
    # Pillow reads 16-bit LA as 8-bit RGBA (high bytes): an independent check of the layout.
    truncated = np.asarray(reopen(encode_image(picture, picture.rgb, "png")))
    np.testing.assert_array_equal(truncated[:, :, [0, 3]], source >> 8)


@pytest.mark.parametrize("sixteen", [False, True])
def test_tiff_orientation_applied_once(sixteen: bool) -> None:
    """Pillow rotates 8-bit TIFFs while loading; the 16-bit (OpenCV) path must rotate too."""
    stored = images.pixels16(3, 5, 3) if sixteen else images.pixels8(3, 5)
    data = images.set_tiff_orientation(codecs.tiff_bytes(stored, icc=None, exif=None), 6)
    picture = read_image(data)
    top = 65535 if sixteen else 255
    np.testing.assert_array_equal(np.rint(picture.rgb * top), np.rot90(stored, k=-1))
    assert reopen(encode_image(picture, picture.rgb, "tiff")).getexif().get(0x0112) == 1


@pytest.mark.parametrize("fmt", ["jpg", "webp"])
def test_16_bit_source_written_as_8_bit_where_required(fmt: str) -> None:
    picture = read_image(images.png16(3))
    written = reopen(encode_image(picture, picture.rgb, fmt))
    assert written.mode == "RGB"


# --- grayscale, 1-bit, CMYK --------------------------------------------------------------------


def test_grayscale_in_grayscale_out_with_bt601_luma() -> None:
    picture = read_image(images.gray_png())
    assert picture.grayscale and picture.bit_depth == 8
    assert np.array_equal(picture.rgb[:, :, 0], picture.rgb[:, :, 2])
    colour = np.random.default_rng(0).random(picture.rgb.shape, dtype=np.float32)
    for fmt in ("png", "jpg", "tiff"):
        assert reopen(encode_image(picture, colour, fmt)).mode == "L"
    written = np.asarray(reopen(encode_image(picture, colour, "png")))
    luma = colour @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    np.testing.assert_array_equal(written, np.rint(luma * 255).astype(np.uint8))
    assert reopen(encode_image(picture, colour, "webp")).mode == "RGB"  # WebP has no gray mode


def test_bilevel_reads_as_grayscale() -> None:
    picture = read_image(images.bilevel_png())
    expected = np.indices((8, 8)).sum(axis=0) % 2
    assert picture.grayscale and picture.bit_depth == 8
    np.testing.assert_array_equal(picture.rgb[:, :, 1], expected.astype(np.float32))


@pytest.mark.parametrize("icc", [None, b"not a real profile"])
def test_cmyk_converted_to_rgb(icc: bytes | None) -> None:
    data = images.cmyk_jpeg(icc=icc)
    picture = read_image(data)
    assert picture.rgb.shape == (16, 16, 3) and not picture.grayscale
    assert picture.icc_profile is None  # pixels are now plain RGB
    expected = np.asarray(reopen(data).convert("RGB")).astype(np.float32) / 255
    np.testing.assert_allclose(picture.rgb, expected, atol=1e-6)


# --- bombs and broken files ----------------------------------------------------------------------


def test_header_only_bomb_is_refused_before_decoding(tmp_path: Path) -> None:
    path = tmp_path / "bomb.png"
    path.write_bytes(images.bomb_png())
    saved = Image.MAX_IMAGE_PIXELS
    with pytest.raises(ImageError) as caught:
        read_image(path)
    assert str(caught.value) == (
        f"{path}: image is 10000.0 megapixels, above the {DEFAULT_MAX_MEGAPIXELS:g} MP limit "
        "(max_megapixels)"
    )
    assert Image.MAX_IMAGE_PIXELS == saved  # Pillow's global is restored


def test_max_megapixels_is_configurable() -> None:
    data = images.rgb_png(100, 100)  # 0.01 MP
    with pytest.raises(ImageError, match=r"0\.0 megapixels, above the 0\.005 MP limit"):
        read_image(data, max_megapixels=0.005)
    assert read_image(data, max_megapixels=0.02).rgb.shape == (100, 100, 3)
    assert read_image(data, max_megapixels=None).rgb.shape == (100, 100, 3)


@pytest.mark.parametrize("signal", ["error", "warning"])
def test_pillow_bomb_checks_become_image_errors(
    monkeypatch: pytest.MonkeyPatch, signal: str
) -> None:
    """Pillow's own checks (TIFF tiles, GIF frames) fire while decoding; both kinds are caught."""
    seen_limits: list[int | None] = []

    def explode(self: ImageFile.ImageFile) -> None:
        seen_limits.append(Image.MAX_IMAGE_PIXELS)
        if signal == "error":
            raise Image.DecompressionBombError("too big")
        warnings.warn("big", Image.DecompressionBombWarning, stacklevel=1)

    monkeypatch.setattr(ImageFile.ImageFile, "load", explode)
    with pytest.raises(ImageError, match="larger than the 3 MP limit"):
        read_image(images.rgb_png(4, 4), max_megapixels=3)
    assert seen_limits == [3_000_000]  # Pillow's limit follows ours while decoding


@pytest.mark.parametrize(
    ("name", "data", "reason"),
    [
        ("truncated.jpg", images.truncated_jpeg(), "truncated or corrupt image data"),
        ("header.jpg", images.rgb_jpeg()[:40], "truncated or corrupt image data"),
        ("empty.jpg", b"", "empty file"),
        ("text.jpg", b"hello, I am text\n", "not an image file"),
    ],
)
def test_broken_files_give_one_line_reasons(
    tmp_path: Path, name: str, data: bytes, reason: str
) -> None:
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(ImageError) as caught:
        read_image(path)
    assert str(caught.value) == f"{path}: {reason}"
    assert caught.value.path == path and caught.value.reason == reason


def test_missing_file_and_folder(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="no such file"):
        read_image(tmp_path / "nope.png")
    with pytest.raises(ImageError, match="is a folder"):
        read_image(tmp_path)


def test_stdin_errors_name_stdin() -> None:
    with pytest.raises(ImageError, match="^<stdin>: empty file$"):
        read_image(b"")
    with pytest.raises(ImageError, match="^<stdin>: not an image file$"):
        read_image(b"plain text")


def test_corrupt_batch_helper(tmp_path: Path) -> None:
    expected = images.make_corrupt_batch(tmp_path)
    for name, should_succeed in expected.items():
        try:
            read_image(tmp_path / name)
            succeeded = True
        except ImageError:
            succeeded = False
        assert succeeded == should_succeed, name


# --- paths, inputs untouched, atomic writes ------------------------------------------------------


def test_non_ascii_paths(tmp_path: Path) -> None:
    folder = tmp_path / "Regentropfen 雨"
    folder.mkdir()
    source = folder / "régen-雨.jpg"
    source.write_bytes(images.rgb_jpeg())
    picture = read_image(source)
    target = folder / "sans-pluie-晴.webp"
    write_image(target, picture, picture.rgb)
    assert read_image(target).rgb.shape == picture.rgb.shape


def test_reading_never_modifies_the_input(tmp_path: Path) -> None:
    path = tmp_path / "in.jpg"
    path.write_bytes(images.oriented_jpeg(6))
    os.chmod(path, 0o444)
    before = (hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns)
    picture = read_image(path)
    write_image(tmp_path / "out.jpg", picture, picture.rgb)
    after = (hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns)
    assert before == after


def test_write_creates_normal_permissions(tmp_path: Path) -> None:
    picture = read_image(images.rgb_png(4, 4))
    target = tmp_path / "out.png"
    write_image(target, picture, picture.rgb)
    umask = os.umask(0o022)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_failed_encoding_leaves_nothing(tmp_path: Path) -> None:
    picture = read_image(images.rgb_png(4, 4))
    target = tmp_path / "out.png"
    with pytest.raises(ImageError, match="cannot encode as png"):
        write_image(target, picture, np.zeros((4, 4), np.float32))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("failing", ["replace", "fsync"])
def test_failed_write_keeps_old_file_and_removes_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    picture = read_image(images.rgb_png(4, 4))
    target = tmp_path / "out.png"
    target.write_bytes(b"previous output")
    seen: list[str] = []

    def broken(*args: object) -> None:
        seen.extend(leftovers(tmp_path))  # the temp file exists at this point...
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(imaging.os, failing, broken)
    with pytest.raises(ImageError, match="cannot write: No space left on device"):
        write_image(target, picture, picture.rgb)
    assert seen and seen[0].startswith(".out.png.")
    assert leftovers(tmp_path) == []  # ...and is gone afterwards
    assert target.read_bytes() == b"previous output"


def test_write_into_missing_folder(tmp_path: Path) -> None:
    picture = read_image(images.rgb_png(4, 4))
    with pytest.raises(ImageError, match="output folder does not exist"):
        write_image(tmp_path / "no" / "out.png", picture, picture.rgb)


# --- formats -------------------------------------------------------------------------------------


def test_format_helpers(tmp_path: Path) -> None:
    assert format_for_path("a/b.JPEG") == "jpg"
    assert format_for_path("x.tif") == "tiff"
    assert format_for_path(Path("x.webp")) == "webp"
    with pytest.raises(UsageError, match="cannot tell the image format"):
        format_for_path("x.bmp")
    with pytest.raises(UsageError, match="unknown image format"):
        encode_image(read_image(images.rgb_png(2, 2)), np.zeros((2, 2, 3), np.float32), "gif")
    # --format auto keeps a source's own format where it can be written, else PNG.
    (tmp_path / "a.jpg").write_bytes(images.rgb_jpeg())
    (tmp_path / "b.gif").write_bytes(images.encode(Image.fromarray(images.pixels8(4, 4)), "GIF"))
    jobs = plan_jobs(str(tmp_path), str(tmp_path / "out"), fmt="auto")
    assert sorted(job.fmt for job in jobs) == ["jpg", "png"]


def test_explicit_format_overrides_suffix(tmp_path: Path) -> None:
    picture = read_image(images.rgb_png(4, 4))
    target = tmp_path / "out.img"
    write_image(target, picture, picture.rgb, fmt="jpeg")
    assert reopen(target.read_bytes()).format == "JPEG"


def test_writing_drops_what_a_format_cannot_hold() -> None:
    rgba16 = read_image(images.png16(4))
    for fmt in ("png", "tiff"):
        kept = read_image(encode_image(rgba16, rgba16.rgb, fmt))
        assert (kept.alpha is not None, kept.bit_depth) == (True, 16)
    jpg = read_image(encode_image(rgba16, rgba16.rgb, "jpg"))
    assert (jpg.alpha is None, jpg.bit_depth) == (True, 8)
    webp = read_image(encode_image(rgba16, rgba16.rgb, "webp"))
    assert (webp.alpha is not None, webp.bit_depth) == (True, 8)
    gray = read_image(images.gray_png())
    assert not read_image(encode_image(gray, gray.rgb, "webp")).grayscale
    assert read_image(encode_image(gray, gray.rgb, "jpg")).grayscale
