"""`derain inspect-patches`: exact repeats are the nearest matches; the PNG shows the JSON."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from derain_cli import inspect as ins
from derain_cli.cli.app import app, route
from derain_cli.weights.loading import rain_weights_beside

runner = CliRunner()
REPEATS = [(0, 0), (48, 32), (16, 64)]  # (x, y) top-left corners on the 8-px training grid


def _repeat_image() -> np.ndarray:
    """Noise with one distinct 16x16 patch copied exactly at REPEATS (uint8 levels)."""
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (96, 80, 3), dtype=np.uint8)
    patch = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    for x, y in REPEATS:
        img[y : y + 16, x : x + 16] = patch
    return img


def _as_float(img: np.ndarray) -> np.ndarray:
    return img.astype(np.float32) / 255.0


def test_exact_repeats_are_nearest_at_distance_zero() -> None:
    result = ins.inspect_image(_as_float(_repeat_image()), at=[REPEATS[0]], k=4, max_side=None)
    (query,) = result.queries
    assert (query.x, query.y) == REPEATS[0]
    nearest = query.nearest
    assert {(m.x, m.y) for m in nearest[:2]} == set(REPEATS[1:])
    assert [m.distance for m in nearest[:2]] == [0.0, 0.0]
    assert nearest[2].distance > 1.0
    distances = [m.distance for m in nearest]
    assert distances == sorted(distances)
    far = [m.distance for m in query.farthest]
    assert far == sorted(far, reverse=True) and far[0] > distances[-1]


def test_random_queries_are_seeded_and_on_the_grid() -> None:
    img = _as_float(_repeat_image())
    a = ins.inspect_image(img, queries=3, k=2, seed=5, max_side=None).to_dict()
    b = ins.inspect_image(img, queries=3, k=2, seed=5, max_side=None).to_dict()
    assert a == b and len(a["queries"]) == 3
    assert all(q["x"] % 8 == 0 and q["y"] % 8 == 0 for q in a["queries"])


def test_png_tiles_equal_crops_at_json_coordinates() -> None:
    img = _repeat_image()
    result = ins.inspect_image(_as_float(img), queries=2, k=3, seed=1, max_side=None)
    doc = result.to_dict()
    picture = np.asarray(Image.open(io.BytesIO(ins.png_bytes(result))).convert("RGB"))
    size, boxes = ins.layout(result)
    assert picture.shape[:2] == (size[1], size[0])
    checked = 0
    for box in boxes:
        if box.kind == "thumb":
            continue
        q = doc["queries"][box.query]
        src = q if box.kind == "query" else q[box.kind][box.rank]
        p = doc["patch"]
        crop = img[src["y"] : src["y"] + p, src["x"] : src["x"] + p]
        expected = np.repeat(np.repeat(crop, ins.ZOOM, axis=0), ins.ZOOM, axis=1)
        np.testing.assert_array_equal(picture[box.y0 : box.y1, box.x0 : box.x1], expected)
        checked += 1
    assert checked == 2 * 2 * (1 + 3)  # queries x (nearest, farthest) x (query + k)


def test_large_images_are_searched_downscaled_with_original_coordinates() -> None:
    rng = np.random.default_rng(2)
    img = rng.random((600, 400, 3), dtype=np.float32)
    result = ins.inspect_image(img, queries=2, k=2, max_side=300, at=[(200, 100)])
    doc = result.to_dict()
    assert doc["scale"] == 0.5 and doc["patch"] == 32 and doc["search_patch"] == 16
    q = doc["queries"][0]
    assert (q["x"], q["y"]) == (192, 96)  # the nearest grid position (16-px grid here)
    for m in q["nearest"] + q["farthest"]:
        assert 0 <= m["x"] <= 400 - 32 and 0 <= m["y"] <= 600 - 32


def test_exact_repeats_found_on_a_downscaled_search_in_original_pixels() -> None:
    """Long side 192 searched at 96 (scale 0.5): a 32-px patch repeated on the 16-px original
    grid comes back as the nearest matches at distance 0, at its original coordinates."""
    rng = np.random.default_rng(3)
    img = rng.integers(0, 256, (192, 160, 3), dtype=np.uint8)
    repeats = [(32, 16), (96, 128), (0, 80)]
    patch = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    for x, y in repeats:
        img[y : y + 32, x : x + 32] = patch
    doc = ins.inspect_image(_as_float(img), at=[repeats[0]], k=3, max_side=96).to_dict()
    assert (doc["scale"], doc["patch"], doc["search_patch"]) == (0.5, 32, 16)
    (q,) = doc["queries"]
    assert (q["x"], q["y"]) == repeats[0]
    assert {(m["x"], m["y"]) for m in q["nearest"][:2]} == set(repeats[1:])
    assert [m["distance"] for m in q["nearest"][:2]] == [0.0, 0.0]
    assert q["nearest"][2]["distance"] > 1.0


def _write_png(path: Path, img: np.ndarray) -> Path:
    Image.fromarray(img).save(path)
    return path


def test_cli_json_and_png(tmp_path: Path) -> None:
    src = _write_png(tmp_path / "rep.png", _repeat_image())
    out = tmp_path / "grid.png"
    result = runner.invoke(
        app, route(["inspect-patches", str(src), "-o", str(out), "--at", "0,0", "--k", "2",
                    "--json"])
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["image"] == str(src) and doc["patch"] == 16
    nearest = doc["queries"][0]["nearest"]
    assert [m["distance"] for m in nearest] == [0.0, 0.0]
    assert {(m["x"], m["y"]) for m in nearest} == {(48, 32), (16, 64)}
    assert Image.open(out).format == "PNG"


@pytest.mark.parametrize(
    "args",
    [
        ["--at", "1;2", "--json"],
        [],  # neither -o nor --json
        ["-o", "x.jpg"],
        ["--rain-weights", "r.safetensors", "--json"],
        ["--patch", "200", "--json"],
    ],
)
def test_cli_bad_usage_exits_2(tmp_path: Path, args: list[str]) -> None:
    src = _write_png(tmp_path / "rep.png", _repeat_image())
    result = runner.invoke(app, route(["inspect-patches", str(src), *args]))
    assert result.exit_code == 2, result.output


@pytest.mark.parametrize("point", ["9999,9999", "80,0", "0,96", "-1,0"])
def test_cli_at_outside_the_image_is_refused(tmp_path: Path, point: str) -> None:
    """Not clamped to the border: exit 2, naming the point and the image size (80x96)."""
    src = _write_png(tmp_path / "rep.png", _repeat_image())
    result = runner.invoke(app, route(["inspect-patches", str(src), "--at", point, "--json"]))
    assert result.exit_code == 2, result.output
    message = " ".join(result.stderr.split())
    assert f"--at {point}: outside" in message and "80x96 pixels" in message
    assert result.stdout == ""


def test_at_inside_the_image_snaps_to_the_nearest_grid_position() -> None:
    """The last pixel (79, 95) snaps to the last 16-px patch on the 8-px grid, (64, 80)."""
    doc = ins.inspect_image(_as_float(_repeat_image()), at=[(79, 95), (13, 2)], k=1).to_dict()
    assert [(q["x"], q["y"]) for q in doc["queries"]] == [(64, 80), (16, 0)]


def test_cli_refuses_to_replace_an_existing_grid_and_says_w_x_h(tmp_path: Path) -> None:
    """An existing -o file was replaced silently, and a too-small image was named H x W
    ("image 12x40") where every other message says W x H (issue "Trust II")."""
    src = _write_png(tmp_path / "rep.png", _repeat_image())
    out = tmp_path / "grid.png"
    out.write_bytes(b"an earlier grid")
    args = ["inspect-patches", str(src), "-o", str(out), "--at", "0,0"]
    result = runner.invoke(app, route(args))
    assert result.exit_code == 2 and out.read_bytes() == b"an earlier grid"
    assert f"-o {out}: exists (use --overwrite to replace it)" in " ".join(result.stderr.split())
    assert runner.invoke(app, route([*args, "--overwrite"])).exit_code == 0
    assert Image.open(out).format == "PNG"
    same = runner.invoke(app, route(["inspect-patches", str(src), "-o", str(src), "--overwrite"]))
    assert same.exit_code == 2 and "would replace the input image" in same.stderr
    small = _write_png(tmp_path / "small.png", np.zeros((12, 40, 3), np.uint8))  # 40 x 12 px
    result = runner.invoke(app, route(["inspect-patches", str(small), "--json"]))
    assert result.exit_code == 2
    assert "image 40x12 is smaller than the patch size 16" in result.stderr


def test_cli_missing_image_is_bad_usage(tmp_path: Path) -> None:
    """Like ``derain run``: an input that does not exist is exit 2, named in one line."""
    missing = tmp_path / "nope.png"
    result = runner.invoke(app, route(["inspect-patches", str(missing), "--json"]))
    assert result.exit_code == 2, result.output
    assert f"{missing}: no such file" in " ".join(result.stderr.split())


def _save_generator(path: Path, seed: int) -> None:
    import torch

    from derain_cli.nets.registry import build_generator
    from derain_cli.weights.files import save_weights

    torch.manual_seed(seed)
    hparams = {"in_channels": 3, "channels": 4, "blocks": 1}
    module = build_generator("nlcl-resnet", hparams)
    save_weights(path, module, arch="nlcl-resnet", hparams=hparams, metadata={})


def test_cli_with_weights_searches_b_and_r(tmp_path: Path) -> None:
    src = _write_png(tmp_path / "rep.png", _repeat_image())
    run = tmp_path / "run"
    run.mkdir()
    _save_generator(run / "G_B.safetensors", 0)
    args = ["inspect-patches", str(src), "--weights", str(run / "G_B.safetensors"), "--k", "2"]
    result = runner.invoke(app, route([*args, "--json", "-o", str(tmp_path / "g.png")]))
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert (doc["nearest_layer"], doc["farthest_layer"], doc["rain_layer"]) == ("B", "R", "O - B")
    _save_generator(run / "G_R.safetensors", 1)
    result = runner.invoke(app, route([*args, "--json"]))
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["rain_layer"] == "G_R"
    assert rain_weights_beside(str(run / "G_B.safetensors")) == run / "G_R.safetensors"


def test_registered_weights_find_their_rain_entry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--weights default` pairs with the bundled G_R (`<name>-rain`); it used to find none."""
    monkeypatch.delenv("DERAIN_REGISTRY", raising=False)
    assert rain_weights_beside("default") == "nlcl-cpu-v2-rain"
    assert rain_weights_beside("nlcl-cpu-v1") == "nlcl-cpu-v1-rain"
    assert rain_weights_beside("nlcl-cpu-v1-rain") is None
    assert rain_weights_beside("no-such-weights") is None
    src = tmp_path / "o.png"
    Image.fromarray(np.full((64, 64, 3), 128, np.uint8)).save(src)
    args = ["inspect-patches", str(src), "--weights", "default", "--k", "2", "--json"]
    result = CliRunner().invoke(app, route([*args, "-o", str(tmp_path / "g.png")]))
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["rain_layer"] == "G_R"
