"""The public API: what docs/api.md promises, including its first example run as written."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import derain_cli
from derain_cli import Derainer
from derain_cli.errors import DerainError, PixelError, WeightsError

REPO = Path(__file__).resolve().parents[1]


def test_the_api_page_example_runs_as_written() -> None:
    text = (REPO / "docs" / "api.md").read_text(encoding="utf-8")
    example = text.split("## Example", 1)[1]
    code = re.search(r"```python\n(.*?)```", example, re.S)
    assert code is not None
    done = subprocess.run(
        [sys.executable, "-c", code.group(1)], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr


def test_import_is_lazy_and_names_resolve() -> None:
    done = subprocess.run(
        [sys.executable, "-c", "import sys, derain_cli; print('torch' in sys.modules)"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.stdout.strip() == "False"
    for name in derain_cli.__all__:
        assert getattr(derain_cli, name) is not None
    with pytest.raises(AttributeError):
        derain_cli.no_such_name  # noqa: B018


@pytest.fixture(scope="module")
def derainer() -> Derainer:
    return Derainer.from_pretrained(device="cpu")


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
@pytest.mark.parametrize("channels", [0, 1, 3, 4])
def test_derain_image_returns_the_callers_kind(
    derainer: Derainer, dtype: type, channels: int
) -> None:
    rng = np.random.default_rng(0)
    top = {np.uint8: 255, np.uint16: 65535, np.float32: 1.0}[dtype]
    shape = (24, 32) if channels == 0 else (24, 32, channels)
    image = (rng.random(shape) * top).astype(dtype)
    out = derainer.derain_image(image)
    assert out.dtype == image.dtype and out.shape == image.shape
    if channels == 4:
        assert np.array_equal(out[..., 3], image[..., 3])
    values = image.astype(np.float32) / top
    grey = channels in (0, 1)
    rgb = np.repeat(values.reshape(24, 32, 1), 3, axis=2) if grey else values[..., :3]
    reference = derainer(rgb)
    reference = reference.mean(axis=2).reshape(shape) if grey else reference
    got = out.astype(np.float64) / top
    got = got if grey else got[..., :3]
    step = 0.5 / top if dtype != np.float32 else 0.0
    assert np.abs(got - reference).max() <= step + 1e-6


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "LA", "P", "I;16"])
def test_derain_image_keeps_pil_modes(derainer: Derainer, mode: str) -> None:
    rng = np.random.default_rng(1)
    base = Image.fromarray((rng.random((20, 28, 3)) * 255).astype(np.uint8))
    if mode == "I;16":
        image = Image.fromarray((rng.random((20, 28)) * 65535).astype(np.uint16))  # I;16
    else:
        image = base.convert(mode)
    out = derainer.derain_image(image)
    expected_mode = {"P": "RGB"}.get(mode, mode)
    assert isinstance(out, Image.Image) and out.size == image.size and out.mode == expected_mode
    if "A" in mode:
        assert np.array_equal(np.asarray(out)[..., -1], np.asarray(image)[..., -1])


def test_bad_inputs_and_weights_are_refused(derainer: Derainer, tmp_path: Path) -> None:
    with pytest.raises(PixelError, match="numpy array or a PIL image"):
        derainer.derain_image([[0, 1], [1, 0]])
    with pytest.raises(PixelError, match="H x W"):
        derainer.derain_image(np.zeros((4, 4, 2), np.uint8))
    with pytest.raises(PixelError, match="uint8, uint16 or float"):
        derainer.derain_image(np.zeros((4, 4, 3), np.int32))
    with pytest.raises(WeightsError):
        Derainer.from_pretrained(tmp_path / "missing.safetensors")
    with pytest.raises(WeightsError, match="G_R"):
        Derainer.from_pretrained("nlcl-cpu-v1-rain")


def test_tensor_conversions_round_trip_and_never_write_into_the_input() -> None:
    from derain_cli.images.tensors import from_model_range, pixels_to_tensor, to_model_range

    rgb = np.random.default_rng(2).random((5, 7, 3)).astype(np.float32)
    before = rgb.copy()
    model = to_model_range(rgb)
    assert model.shape == (1, 3, 5, 7) and float(model.min()) >= -1.0
    assert np.allclose(from_model_range(model), rgb, atol=1e-6)
    assert np.array_equal(rgb, before)
    assert np.allclose(pixels_to_tensor((rgb * 255).astype(np.uint8)).numpy()[0, 0],
                       np.rint(rgb[..., 0] * 255 - 0.5 + 0.5) / 255, atol=1 / 255)  # fmt: skip


def test_settings_checked_once_go_to_from_pretrained_as_they_are() -> None:
    settings = derain_cli.DerainerSettings.check(device="cpu", tile=128, overlap=16)
    derainer = Derainer.from_pretrained("default", settings=settings)
    assert (derainer.device.type, derainer.tile, derainer.overlap) == ("cpu", 128, 16)
    with pytest.raises(TypeError, match="not both"):
        Derainer.from_pretrained("default", settings=settings, tile=256)


def test_from_pretrained_refuses_tiny_tiles_and_names_the_keyword() -> None:
    """A 1-pixel tile ran for hours through the API; the CLI refused it (test failed before)."""
    from derain_cli.errors import UsageError

    with pytest.raises(UsageError, match=r"^tile 1: too small"):
        Derainer.from_pretrained("default", tile=1)
    with pytest.raises(UsageError, match=r"^device cuda:7: "):
        Derainer.from_pretrained("default", device="cuda:7")


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (
            np.zeros((8, 8, 3), np.bool_),
            r"^image: expected uint8, uint16 or float pixels, got bool",
        ),
        (
            np.zeros((8, 8, 3), np.int64),
            r"^image: expected uint8, uint16 or float pixels, got int64",
        ),
        (np.zeros((3, 8, 8), np.uint8), r"^image: got shape \(3, 8, 8\), channels first; .*"),
        (np.zeros((2, 8, 8, 3), np.uint8), r"^image: got a 4-D array .*one image at a time"),
        (np.zeros((0, 0, 3), np.uint8), r"^image: it is empty \(0 x 0 pixels\)$"),
        (np.zeros((8, 8, 3, 1, 1), np.float32), r"^image: expected an H x W, "),
    ],
)
def test_unusable_arrays_raise_one_derain_error(
    derainer: Derainer, image: np.ndarray, message: str
) -> None:
    """bool and int arrays, channels first, batches and empty arrays raised plain TypeError or
    ValueError from deep inside (some from torch), not the DerainError docs/api.md promises."""
    with pytest.raises(DerainError, match=message) as caught:
        derainer.derain_image(image)
    assert isinstance(caught.value, PixelError) and "\n" not in str(caught.value)
    with pytest.raises(PixelError, match="^image: "):
        derainer(image)  # the raw call refuses them too


def test_non_finite_and_out_of_range_floats_are_refused(derainer: Derainer) -> None:
    """One NaN pixel gave an all-NaN result; a float image in 0-255 came back almost all white."""
    rng = np.random.default_rng(3)
    image = rng.random((16, 16, 3)).astype(np.float32)
    with_nan = image.copy()
    with_nan[4, 5, 1] = np.nan
    with pytest.raises(PixelError, match=r"^image: 1 value\(s\) are NaN or infinite"):
        derainer.derain_image(with_nan)
    with pytest.raises(PixelError, match=r"got 0\.\d+ to 254\.\d+ \(8-bit values\? divide by 255"):
        derainer.derain_image(image * 255)
    with pytest.raises(PixelError, match="16-bit values"):
        derainer.derain_image(image * 65535)
    with pytest.raises(PixelError, match=r"got -0\.9\d+ to .*rescale them to \[0, 1\]"):
        derainer.derain_image(image * 2 - 1)
    nearly = np.clip(image + 5e-4, 0, None)  # rounding noise just above 1 is still accepted
    assert derainer.derain_image(nearly).shape == image.shape
