"""The derainer: devices, precisions, tiled == untiled (InstanceNorm too), the authors' output."""

from __future__ import annotations

import threading
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from _tiles import fine_tiles
from PIL import Image
from torch import nn

from derain_cli import runtime
from derain_cli.errors import DerainError, UsageError
from derain_cli.inference import arena, engine, memory, stream_plan
from derain_cli.inference.engine import Derainer, auto_tile
from derain_cli.inference.tiling import grid_tiles, plan_tiles, strip_tiles
from derain_cli.nets.generator import OUTPUTS, NLCLGenerator, Output

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def psnr(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    diff = (a.astype(np.float64) - b.astype(np.float64)) ** 2
    mse = float(diff[mask].mean() if mask is not None else diff.mean())
    return float("inf") if mse == 0 else 10.0 * np.log10(1.0 / mse)


def border_band(height: int, width: int, cuts_y: set[int], cuts_x: set[int], band: int = 3):
    """Mask of the pixels within ``band`` of an internal tile boundary."""
    mask = np.zeros((height, width), dtype=bool)
    for y in cuts_y - {0, height}:
        mask[max(y - band, 0) : y + band] = True
    for x in cuts_x - {0, width}:
        mask[:, max(x - band, 0) : x + band] = True
    return mask


def grid_band(height: int, width: int, tile: int) -> np.ndarray:
    """Pixels near the boundaries of the cores the streamed engine really uses."""
    boxes = strip_tiles(height, width, tile)
    return border_band(
        height, width, {b.y0 for b in boxes} | {b.y1 for b in boxes}, {b.x0 for b in boxes}
    )


def synthetic_rain(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A smooth gradient scene with bright diagonal streaks and noise: varied statistics."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    scene = np.stack([xx / width, yy / height, 0.5 + 0.3 * np.sin(xx / 9.0)], axis=-1)
    streaks = ((xx + 2 * yy).astype(int) % 17 < 2) * 0.4
    image = scene * 0.7 + streaks[..., None] + rng.normal(0, 0.03, scene.shape)
    return np.clip(image, 0, 1).astype(np.float32)


def small_generator(output: Output = "direct") -> NLCLGenerator:
    torch.manual_seed(0)
    return NLCLGenerator(channels=8, blocks=3, output=output)


def test_bad_tile_options_are_usage_errors() -> None:
    with pytest.raises(UsageError):
        Derainer(small_generator(), device="cpu", tile=-1)
    # The rule of from_pretrained and the command line (a 1-pixel tile ran for hours): failed
    # before, when a derainer built around a module took any positive tile.
    with pytest.raises(UsageError, match=r"^tile 8: too small"):
        Derainer(small_generator(), device="cpu", tile=8)
    with pytest.raises(UsageError):
        Derainer(small_generator(), device="cpu", tile=64, overlap=-1)


# --------------------------------------------------------------------------- conversions


def test_accepts_loaded_weights_and_bare_modules() -> None:
    image = synthetic_rain(24, 20)
    bare = Derainer(small_generator(), device="cpu", tile=0)
    wrapped = Derainer(SimpleNamespace(module=small_generator(), arch="nlcl-resnet"), device="cpu")
    assert wrapped.arch == "nlcl-resnet"
    assert wrapped.description.startswith("cpu") and wrapped.description.endswith("fp32")
    out = bare(image)
    assert out.shape == image.shape and out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 1.0
    np.testing.assert_array_equal(out, wrapped(image))
    with pytest.raises(TypeError):
        Derainer(SimpleNamespace(other=1))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="H x W x 3"):
        bare(image[..., 0])


def test_uses_the_authors_value_convention() -> None:
    """[0, 1] in -> [-1, 1] to the network -> [0, 1] out, clipped."""

    class Affine(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * 2.0  # doubles the distance from mid-grey, so it must clip

    image = np.linspace(0, 1, 16 * 16 * 3, dtype=np.float32).reshape(16, 16, 3)
    out = Derainer(Affine(), device="cpu", tile=0)(image)
    expected = np.clip(image * 2.0 - 0.5, 0.0, 1.0)
    np.testing.assert_allclose(out, expected, atol=1e-6)


# --------------------------------------------------------------------------- tiling


@pytest.mark.parametrize("output", OUTPUTS)
def test_instance_norm_network_tiles_exactly(output: Output) -> None:
    """Whole-image statistics make tiles agree with the untiled run, seams included.

    ``subtract_rain`` reads the input again after the last norm (``B = O - relu(y)``): the
    streamer must keep the input on the host until then.
    """
    generator = small_generator(output)
    image = synthetic_rain(80, 96)
    whole = Derainer(generator, device="cpu", tile=0)(image)
    tiled_engine = Derainer(generator, settings=fine_tiles(32))
    assert tiled_engine.needs_statistics and tiled_engine.stream_plan is not None
    tiled = tiled_engine(image)
    band = grid_band(80, 96, 32)
    assert band.sum() > 1000
    assert psnr(tiled, whole) >= 35.0
    assert psnr(tiled, whole, band) >= 35.0
    assert np.abs(tiled - whole).max() < 1e-4  # in fact equal up to rounding


def test_subtract_rain_only_removes_light() -> None:
    """``B = O - relu(y)``: never brighter than the input; the input itself when y <= 0."""
    generator = small_generator("subtract_rain")
    image = synthetic_rain(40, 48)
    out = Derainer(generator, device="cpu", tile=0)(image)
    assert (out <= image + 1e-6).all()
    assert np.abs(out - image).max() > 1e-3  # an untrained net does remove something
    last = generator.gen[-1]
    assert isinstance(last, torch.nn.Conv2d)
    with torch.no_grad():
        last.weight.zero_()
        last.bias.fill_(-0.5)
    assert np.abs(Derainer(generator, device="cpu", tile=0)(image) - image).max() < 1e-6


def test_unknown_generator_output_is_refused() -> None:
    with pytest.raises(ValueError, match="generator output 'tanh'"):
        NLCLGenerator(channels=8, blocks=1, output="tanh")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("norms", "tile", "most_rows", "most_cols"),
    [(True, 32, 32, 32), (True, 48, 20, 96), (False, 32, 32, 32)],
    ids=["streamed-grid", "streamed-strips", "feathered"],
)
def test_tiled_runs_never_compute_on_the_whole_image(
    norms: bool, tile: int, most_rows: int, most_cols: int
) -> None:
    """Every layer sees tile-sized inputs only (core + halo + conv padding), never the image."""
    torch.manual_seed(0)
    net: nn.Module = small_generator()
    if not norms:
        net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 3, 3, padding=1))
    derainer = Derainer(net, settings=fine_tiles(tile, overlap=8))
    seen: list[tuple[int, int]] = []
    for layer in derainer.module.modules():
        if isinstance(layer, nn.Conv2d):
            layer.register_forward_pre_hook(lambda _m, args: seen.append(args[0].shape[-2:]))
    image = synthetic_rain(80, 96)
    tiled = derainer(image)
    assert seen and max(h for h, _ in seen) <= most_rows + 2 * 2 + 2
    assert max(w for _, w in seen) <= most_cols + 2 * 2 + 2
    assert max(h * w for h, w in seen) < 80 * 96
    whole = Derainer(net, device="cpu", tile=0)(image)
    assert np.abs(tiled - whole).max() < 1e-4


def test_per_tile_statistics_would_show_seams() -> None:
    """The problem solved above is real: naive tiles with their own InstanceNorm stats differ."""
    generator = small_generator().eval()
    image = synthetic_rain(80, 96)
    whole = Derainer(generator, device="cpu", tile=0)(image)
    naive = np.zeros_like(whole)
    with torch.inference_mode():
        for box in grid_tiles(80, 96, 32):  # one tile per pixel, per-tile statistics
            tile = torch.from_numpy(image[box.slices]).permute(2, 0, 1)[None] * 2 - 1
            out = (generator(tile)[0].permute(1, 2, 0).numpy() + 1) / 2
            naive[box.slices] = np.clip(out, 0, 1)
    assert psnr(naive, whole) < 35.0


def test_stream_plan_of_the_authors_layout() -> None:
    plan = Derainer(NLCLGenerator(), device="cpu", tile=64).stream_plan
    assert plan is not None
    assert len(plan.norms) == 2 * 16 + 1
    assert len(plan.segments) == len(plan.norms) + 1
    # Receptive radius between two norms: gen.0 + the first block conv (2), one conv inside the
    # body (1), the tail's second conv + the last conv (2).
    assert [s.halo for s in plan.segments] == [2] + [1] * 32 + [2]


def test_network_without_norms_uses_feathered_tiles() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 3, 3, padding=1))
    image = synthetic_rain(70, 90)
    whole = Derainer(net, device="cpu", tile=0)(image)
    tiled_engine = Derainer(net, settings=fine_tiles(32, overlap=8))
    assert not tiled_engine.needs_statistics
    tiled = tiled_engine(image)
    boxes = plan_tiles(70, 90, 32, 8)
    band = border_band(70, 90, {b.y0 for b in boxes}, {b.x0 for b in boxes} | {b.x1 for b in boxes})
    assert psnr(tiled, whole, band) >= 35.0
    # A quarter of the overlap (2 px) covers the receptive radius (2 px): exact merge.
    np.testing.assert_allclose(tiled, whole, atol=1e-5)


def test_untraceable_instance_norm_network_runs_whole_or_refuses_tiles() -> None:
    class Global(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 3, padding=1)
            self.norm = nn.InstanceNorm2d(3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.norm(self.conv(x)) + x.mean()  # a global mean: cannot be streamed

    image = synthetic_rain(40, 40)
    auto = Derainer(Global(), device="cpu")
    assert auto.stream_plan is None and auto.tile_for(5000, 5000) == 0
    with pytest.raises(UsageError, match="use tile=0"):
        Derainer(Global(), settings=fine_tiles(16))(image)


def test_traceable_space_to_depth_network_is_refused_cleanly() -> None:
    """A traceable pixel-unshuffle front: the shape probe fails, which means "cannot stream"."""
    net = nn.Sequential(
        nn.PixelUnshuffle(2),
        nn.Conv2d(12, 4, 3, padding=1),
        nn.InstanceNorm2d(4),
        nn.Conv2d(4, 12, 3, padding=1),
        nn.PixelShuffle(2),
    )
    derainer = Derainer(net, device="cpu")
    assert derainer.stream_plan is None and derainer.unsupported_reason
    image = synthetic_rain(24, 32)
    assert Derainer(net, device="cpu", tile=0)(image).shape == image.shape
    with pytest.raises(UsageError, match="use tile=0"):
        Derainer(net, settings=fine_tiles(16))(image)


def test_images_smaller_than_the_tile_are_not_tiled() -> None:
    derainer = Derainer(small_generator(), device="cpu", tile=64)
    assert derainer.tile_for(64, 40) == 0
    assert derainer.tile_for(65, 40) == 64


def test_auto_tile_follows_free_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    cpu = torch.device("cpu")
    assert auto_tile(4000, 3000, cpu, 640) == memory.CPU_MAX_TILE  # plenty of RAM: capped
    assert auto_tile(800, 600, cpu, 640) == 0
    monkeypatch.setattr(runtime, "free_device_bytes", lambda device: 200 * 200 * 640 * 2)
    assert auto_tile(800, 600, cpu, 640) == 192  # sqrt(half the memory / 640) floored to 64
    generator = small_generator()
    image = synthetic_rain(140, 150)
    derainer = Derainer(generator, device="cpu")
    monkeypatch.setattr(runtime, "free_device_bytes", lambda device: 64 * 64 * 2 * 8 * 4 * 5)
    assert derainer.tile_for(140, 150) == memory.MIN_AUTO_TILE
    whole = Derainer(generator, device="cpu", tile=0)(image)
    np.testing.assert_allclose(derainer(image), whole, atol=1e-4)


def test_calls_from_several_threads_match_sequential_calls() -> None:
    derainer = Derainer(small_generator(), settings=fine_tiles(24))
    images = [synthetic_rain(40, 56, seed) for seed in range(4)]
    expected = [derainer(image) for image in images]
    results: dict[int, np.ndarray] = {}

    def work(index: int) -> None:
        results[index] = derainer(images[index])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for index, image in enumerate(expected):
        np.testing.assert_array_equal(results[index], image)


# --------------------------------------------------------------------------- authors' checkpoint


def _load_rgb(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0


def _authors_generator(reference: Path) -> NLCLGenerator:
    generator = NLCLGenerator()
    state = torch.load(reference / "nlcl-realrain-G_B.pth", map_location="cpu", weights_only=True)
    generator.load_state_dict(state, strict=True)
    return generator


def test_authors_checkpoint_tiled_equals_untiled(reference: Path) -> None:
    image = _load_rgb(reference / "realrain-Eg1-input.png")[:192, :256]
    generator = _authors_generator(reference)
    whole = Derainer(generator, device="cpu", tile=0)(image)
    tiled = Derainer(generator, device="cpu", tile=96, overlap=32)(image)
    assert psnr(tiled, whole) >= 35.0
    assert psnr(tiled, whole, grid_band(192, 256, 96)) >= 35.0


@pytest.mark.slow
def test_authors_checkpoint_reproduces_the_authors_output(reference: Path) -> None:
    image = _load_rgb(reference / "realrain-Eg1-input.png")
    expected = _load_rgb(reference / "realrain-Eg1-authors-output.png")
    assert image.shape == (512, 1024, 3)
    out = Derainer(_authors_generator(reference), device="cpu", tile=0)(image)
    assert psnr(np.round(out * 255.0) / 255.0, expected) >= 45.0


# --------------------------------------------------------------------------- GPU


@pytest.mark.gpu
@needs_cuda
def test_cuda_bf16_matches_cpu_fp32_and_tiles_exactly() -> None:
    generator = NLCLGenerator()
    image = synthetic_rain(256, 320)
    cpu = Derainer(generator, device="cpu", tile=0)(image)
    cuda = Derainer(NLCLGenerator(), device="cuda", tile=0)
    cuda.module.load_state_dict(generator.state_dict())
    assert cuda.dtype is torch.bfloat16 and "cuda (" in cuda.description
    whole = cuda(image)
    cuda.tile = 96
    tiled = cuda(image)
    assert psnr(whole, cpu) >= 30.0  # random weights amplify bf16 rounding; trained are closer
    assert psnr(tiled, whole, grid_band(256, 320, 96)) >= 35.0


@pytest.mark.gpu
@needs_cuda
def test_cuda_tiles_use_less_device_memory() -> None:
    generator = NLCLGenerator()
    image = synthetic_rain(1024, 1024)
    derainer = Derainer(generator, device="cuda", precision="fp32", tile=0)
    torch.cuda.reset_peak_memory_stats()
    whole = derainer(image)
    untiled_peak = torch.cuda.max_memory_allocated()
    derainer.tile = 256
    torch.cuda.reset_peak_memory_stats()
    tiled = derainer(image)
    tiled_peak = torch.cuda.max_memory_allocated()
    assert tiled_peak < untiled_peak / 4
    assert psnr(tiled, whole) >= 50.0


@pytest.mark.parametrize("shape", [(1, 1), (1, 5), (7, 2), (3, 40)])
def test_tiny_images_are_padded_not_refused(shape: tuple[int, int]) -> None:
    """InstanceNorm cannot normalise one pixel: tiny images run on an edge-padded canvas."""
    derainer = Derainer(NLCLGenerator(channels=8, blocks=1), device="cpu")
    rgb = np.random.default_rng(0).random((*shape, 3), dtype=np.float32)
    out = derainer(rgb)
    assert out.shape == rgb.shape and np.isfinite(out).all()
    side = engine.MIN_SIDE
    canvas = np.pad(
        rgb, ((0, max(0, side - shape[0])), (0, max(0, side - shape[1])), (0, 0)), "edge"
    )
    np.testing.assert_allclose(out, derainer(canvas)[: shape[0], : shape[1]], atol=1e-6)


# --------------------------------------------------------------------------- host memory


def _mapped_under(folder: Path) -> list[str]:
    """Files under ``folder`` mapped into this process (Linux ``/proc/self/maps``)."""
    maps = Path("/proc/self/maps")
    if not maps.exists():
        return []
    return [line for line in maps.read_text().splitlines() if str(folder) in line]


@pytest.fixture
def spill_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "spill"
    folder.mkdir()
    monkeypatch.setenv(arena.TMPDIR_ENV, str(folder))
    monkeypatch.delenv(arena.HOST_MEMORY_ENV, raising=False)
    return folder


@pytest.mark.parametrize("tile", [32, 48], ids=["grid", "strips"])
def test_memory_mapped_buffers_give_the_same_result(spill_dir: Path, tile: int) -> None:
    generator = small_generator()
    image = synthetic_rain(80, 96)
    whole = Derainer(generator, device="cpu", tile=0)(image)
    in_ram = Derainer(generator, settings=fine_tiles(tile), host_memory=2**40)
    mapped = Derainer(generator, settings=fine_tiles(tile), host_memory=1)
    ram_out, mapped_out = in_ram(image), mapped(image)
    assert mapped.spilled and not in_ram.spilled
    np.testing.assert_array_equal(mapped_out, ram_out)  # same arithmetic, other storage
    assert np.abs(mapped_out - whole).max() < 1e-6
    assert list(spill_dir.iterdir()) == []


def test_buffers_live_in_temporary_files_only_during_the_run(
    spill_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    derainer = Derainer(small_generator(), settings=fine_tiles(48), host_memory=1024)
    seen: list[tuple[list[Path], list[str]]] = []
    run_segment = Derainer._run_segment

    def spy(self: Derainer, *args: object) -> dict:
        seen.append((list(spill_dir.iterdir()), _mapped_under(spill_dir)))
        return run_segment(self, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(Derainer, "_run_segment", spy)
    derainer(synthetic_rain(80, 96))
    folders, mapped = seen[-1]
    assert len(folders) == 1 and folders[0].name.startswith("derain-")
    if Path("/proc/self/maps").exists():
        assert len(mapped) == 2  # two 8-channel buffers, unlinked but mapped
    assert list(spill_dir.iterdir()) == [] and _mapped_under(spill_dir) == []


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_temporary_files_are_removed_when_the_model_fails(
    spill_dir: Path, monkeypatch: pytest.MonkeyPatch, error: type[BaseException]
) -> None:
    derainer = Derainer(small_generator(), settings=fine_tiles(48), host_memory=0)
    calls: list[int] = []
    run_segment = Derainer._run_segment

    def failing(self: Derainer, *args: object) -> dict:
        calls.append(1)
        if len(calls) == 7:
            assert list(spill_dir.iterdir())  # the files are there mid-run
            raise error("boom")
        return run_segment(self, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(Derainer, "_run_segment", failing)
    with pytest.raises(error, match="boom"):
        derainer(synthetic_rain(80, 96))
    assert list(spill_dir.iterdir()) == [] and _mapped_under(spill_dir) == []


def test_host_buffers_are_two_activations_and_the_estimate_is_exact(
    spill_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pieces write over inputs they no longer need: 2 full-size tensors, not 4."""
    arenas: list[engine.HostArena] = []

    class Recorded(engine.HostArena):
        def __enter__(self) -> engine.HostArena:
            arenas.append(self)
            return super().__enter__()

    monkeypatch.setattr(engine, "HostArena", Recorded)
    derainer = Derainer(small_generator(), settings=fine_tiles(48))
    assert derainer.stream_plan is not None
    for budget in (2**40, 0):
        derainer.host_memory = budget
        derainer(synthetic_rain(80, 96))
    expected = stream_plan.host_buffer_bytes(derainer.stream_plan, 80, 96, 4)
    assert expected == 2 * 8 * 80 * 96 * 4
    assert [a.allocated for a in arenas] == [expected, expected]
    assert [a.spill_to for a in arenas] == [None, spill_dir]


def test_default_budget_follows_available_memory_and_the_environment(
    spill_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    image = synthetic_rain(80, 96)
    needed = 2 * 8 * 80 * 96 * 4
    derainer = Derainer(small_generator(), settings=fine_tiles(48))
    monkeypatch.setattr(runtime, "available_host_bytes", lambda: 4 * needed)
    derainer(image)
    assert not derainer.spilled
    monkeypatch.setattr(runtime, "available_host_bytes", lambda: needed)  # half is too little
    derainer(image)
    assert derainer.spilled
    monkeypatch.setenv(arena.HOST_MEMORY_ENV, "0.5")
    assert Derainer(small_generator(), device="cpu").host_memory == 2**19
    for bad in ("lots", "-1", "nan"):
        monkeypatch.setenv(arena.HOST_MEMORY_ENV, bad)
        with pytest.raises(UsageError, match=arena.HOST_MEMORY_ENV):
            Derainer(small_generator(), device="cpu")
    with pytest.raises(UsageError, match="host memory"):
        Derainer(small_generator(), device="cpu", host_memory=-1)


def test_spilling_problems_are_one_line_errors(
    spill_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    image = synthetic_rain(80, 96)
    derainer = Derainer(small_generator(), settings=fine_tiles(48), host_memory=0)
    monkeypatch.setenv(arena.TMPDIR_ENV, str(spill_dir / "missing"))
    with pytest.raises(UsageError, match="not an existing folder"):
        derainer(image)
    monkeypatch.setenv(arena.TMPDIR_ENV, str(spill_dir))
    full = SimpleNamespace(total=10**9, used=10**9, free=1000)
    monkeypatch.setattr(arena.shutil, "disk_usage", lambda _path: full)
    with pytest.raises(DerainError, match="not enough free disk space"):
        derainer(image)
    assert list(spill_dir.iterdir()) == []


def test_tmpfs_temp_folder_is_avoided(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(arena.TMPDIR_ENV, raising=False)
    monkeypatch.setattr(arena, "_filesystem_type", lambda _path: "tmpfs")
    expected = Path("/var/tmp") if Path("/var/tmp").is_dir() else None
    if expected is not None and arena.os.access(expected, arena.os.W_OK):
        assert arena.spill_directory() == expected
    monkeypatch.setattr(arena, "_filesystem_type", lambda _path: "ext4")
    assert arena.spill_directory() == Path(arena.tempfile.gettempdir())


def test_large_images_are_never_run_whole_on_the_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """45 MP untiled would need ~29 GB at 640 B/px: CPU tiles are capped whatever the RAM."""
    monkeypatch.setattr(runtime, "free_device_bytes", lambda device: 2**40)
    assert auto_tile(5504, 8256, torch.device("cpu"), 640) == memory.CPU_MAX_TILE
    derainer = Derainer(NLCLGenerator(), device="cpu")
    assert derainer.bytes_per_pixel == 640
    assert derainer.tile_for(5504, 8256) == memory.CPU_MAX_TILE


# --------------------------------------------------------------------------- batches of frames


def test_a_batch_gives_the_pictures_one_call_each_gives(monkeypatch: pytest.MonkeyPatch) -> None:
    """derain_batch runs same-size frames through one pass (InstanceNorm stays per image);
    mixed sizes, tiled frames and batches beyond the free memory go one at a time."""
    derainer = Derainer(small_generator(), device="cpu")
    frames = [synthetic_rain(40, 56, seed) for seed in range(3)]
    singles = [derainer(frame) for frame in frames]
    passes = 0
    forward = derainer.module.forward

    def counted(x: torch.Tensor) -> torch.Tensor:
        nonlocal passes
        passes += 1
        return forward(x)

    monkeypatch.setattr(derainer.module, "forward", counted)
    batched = derainer.derain_batch(frames)
    assert passes == 1
    for one, many in zip(singles, batched, strict=True):
        np.testing.assert_allclose(many, one, atol=1e-5)
    mixed = derainer.derain_batch([frames[0], synthetic_rain(48, 56)])
    np.testing.assert_allclose(mixed[0], singles[0], atol=1e-5)
    assert passes == 3
    monkeypatch.setattr(runtime, "free_device_bytes", lambda device: 0)
    assert len(derainer.derain_batch(frames)) == 3 and passes == 6
    assert derainer.batch_for(480, 640) == 1  # a CPU: one at a time (not faster batched)
