"""Weights: safetensors I/O, the authors' .pth, the registry, and real Hub downloads.

The Hub tests run the real ``huggingface_hub`` client against ``tests/hub_server.py`` on
127.0.0.1. Test weights are tiny random-init generators: they are fixtures, never a model.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from hub_server import HubServer
from typer.testing import CliRunner

from derain_cli.cli.app import app, route
from derain_cli.errors import WeightsError
from derain_cli.nets.registry import build_generator
from derain_cli.weights import registry as weights_registry
from derain_cli.weights.checksums import read_sidecar, sha256_file
from derain_cli.weights.files import (
    KEY_ARCH,
    KEY_FORMAT,
    KEY_HPARAMS,
    LoadedWeights,
    count_parameters,
    save_weights,
)
from derain_cli.weights.hub import HubRef, cached_file, hub_cache_dir, parse_hf_spec
from derain_cli.weights.loading import load_file, load_weights

REPO = Path(__file__).resolve().parents[1]
TINY = {"channels": 8, "blocks": 2}
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def tiny_generator(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_generator("nlcl-resnet", TINY)


def outputs(module: torch.nn.Module) -> torch.Tensor:
    x = torch.rand(1, 3, 24, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
        return module.eval()(x)


def cli(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, route(list(args)), prog_name="derain")
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def tiny_file(tmp_path: Path) -> tuple[Path, torch.nn.Module, str]:
    module = tiny_generator()
    path = tmp_path / "tiny.safetensors"
    digest = save_weights(
        path,
        module,
        arch="nlcl-resnet",
        hparams=TINY,
        metadata={"derain.training": {"steps": 0}, "note": "random init test fixture"},
    )
    return path, module, digest


# ------------------------------------------------------------------------ safetensors round trip


def test_round_trip_gives_identical_outputs(tiny_file: tuple[Path, torch.nn.Module, str]) -> None:
    path, module, digest = tiny_file
    loaded = load_weights(str(path))
    assert isinstance(loaded, LoadedWeights)
    assert loaded.arch == "nlcl-resnet" and loaded.hparams == TINY
    assert not loaded.module.training
    assert all(
        p.dtype == torch.float32 and p.device.type == "cpu" for p in loaded.module.parameters()
    )
    assert torch.equal(outputs(loaded.module), outputs(module))
    assert loaded.sha256 == digest == sha256_file(path) == read_sidecar(path)
    assert loaded.metadata[KEY_ARCH] == "nlcl-resnet"
    assert json.loads(loaded.metadata[KEY_HPARAMS]) == TINY
    assert loaded.metadata[KEY_FORMAT] == "1"
    assert json.loads(loaded.metadata["derain.training"]) == {"steps": 0}
    assert loaded.metadata["note"] == "random init test fixture"
    assert not list(path.parent.glob("*.tmp"))  # atomic write left no temporary file
    umask = os.umask(0o022)
    os.umask(umask)
    for written in (path, path.with_name(path.name + ".sha256")):  # not mkstemp's owner-only 0600
        assert written.stat().st_mode & 0o777 == 0o666 & ~umask, written


S2D_HPARAMS = {"channels": 8, "blocks": 2, "factor": 2, "output": "subtract_rain"}


def test_s2d_round_trip_rebuilds_an_identical_module(tmp_path: Path) -> None:
    """``nlcl-s2d``: its hyper-parameters (factor, output) come back from the file's metadata."""
    torch.manual_seed(0)
    module = build_generator("nlcl-s2d", S2D_HPARAMS)
    path = tmp_path / "s2d.safetensors"
    digest = save_weights(path, module, arch="nlcl-s2d", hparams=S2D_HPARAMS)
    loaded = load_file(path)
    assert loaded.arch == "nlcl-s2d" and loaded.hparams == S2D_HPARAMS
    assert loaded.sha256 == digest and type(loaded.module) is type(module)
    assert str(loaded.module) == str(module.eval())  # same layers, factor and shapes
    assert loaded.module.output == "subtract_rain" and loaded.module.factor == 2
    original, rebuilt = module.state_dict(), loaded.module.state_dict()
    assert original.keys() == rebuilt.keys()
    assert all(torch.equal(original[k], rebuilt[k]) for k in original)
    x = torch.rand(1, 3, 21, 30, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
        assert torch.equal(loaded.module(x), module(x))
    wrong = tmp_path / "s2d-as-resnet.safetensors"
    save_weights(wrong, module, arch="nlcl-resnet", hparams={"channels": 8, "blocks": 2})
    with pytest.raises(WeightsError, match="tensors do not fit arch 'nlcl-resnet'"):
        load_file(wrong)


def test_sidecar_mismatch_is_rejected(tiny_file: tuple[Path, torch.nn.Module, str]) -> None:
    path, _, _ = tiny_file
    (path.parent / (path.name + ".sha256")).write_text("0" * 64 + "  tiny.safetensors\n")
    with pytest.raises(WeightsError, match="sha256 mismatch"):
        load_weights(str(path))


def write_raw_safetensors(path: Path, state: dict[str, torch.Tensor], meta: dict[str, str]) -> None:
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in state.items()}, str(path), metadata=meta)


def load_error(path: Path) -> str:
    """The one-line message of the WeightsError that loading ``path`` raises."""
    with pytest.raises(WeightsError) as caught:
        load_weights(str(path))
    message = str(caught.value)
    assert "\n" not in message and message.startswith(str(path))
    return message


def test_friendly_errors(tmp_path: Path, tiny_file: tuple[Path, torch.nn.Module, str]) -> None:
    path, module, _ = tiny_file
    assert "weights file not found" in load_error(tmp_path / "missing.safetensors")

    text = tmp_path / "notes.safetensors"
    text.write_text("these are not weights")
    assert "corrupt or not a safetensors file" in load_error(text)

    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(path.read_bytes()[:300])
    assert "corrupt or not a safetensors file" in load_error(truncated)

    unknown = tmp_path / "unknown.safetensors"
    meta = {KEY_ARCH: "transformer-9000", KEY_HPARAMS: "{}"}
    write_raw_safetensors(unknown, module.state_dict(), meta)
    assert "unknown architecture 'transformer-9000'" in load_error(unknown)

    bad_hparams = tmp_path / "hparams.safetensors"
    meta = {KEY_ARCH: "nlcl-resnet", KEY_HPARAMS: json.dumps({"width": 3})}
    write_raw_safetensors(bad_hparams, module.state_dict(), meta)
    assert "do not fit 'nlcl-resnet'" in load_error(bad_hparams)

    wrong_shape = tmp_path / "shape.safetensors"
    meta = {KEY_ARCH: "nlcl-resnet", KEY_HPARAMS: json.dumps({"channels": 16, "blocks": 2})}
    write_raw_safetensors(wrong_shape, module.state_dict(), meta)
    assert "wrong shape (e.g. gen.0.weight (8, 3, 3, 3) vs (16, 3, 3, 3))" in load_error(
        wrong_shape
    )

    missing_keys = tmp_path / "missing_keys.safetensors"
    state = {k: v for k, v in module.state_dict().items() if not k.startswith("gen.2.")}
    write_raw_safetensors(
        missing_keys, state, {KEY_ARCH: "nlcl-resnet", KEY_HPARAMS: json.dumps(TINY)}
    )
    assert "4 missing (e.g. gen.2.model.0.conv.weight)" in load_error(missing_keys)

    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"\x00" * 64)
    assert "not a readable torch checkpoint" in load_error(garbage)


# ----------------------------------------------------------------------------- authors' .pth


def test_authors_checkpoint_loads_strictly(reference: Path) -> None:
    loaded = load_weights(str(reference / "nlcl-realrain-G_B.pth"))
    assert loaded.arch == "nlcl-resnet"
    assert loaded.hparams == {"in_channels": 3, "channels": 32, "blocks": 16}
    assert count_parameters(loaded.module) == 316_195
    raw = torch.load(reference / "nlcl-realrain-G_B.pth", map_location="cpu", weights_only=True)
    assert set(raw) == set(loaded.module.state_dict())
    assert torch.equal(loaded.module.state_dict()["gen.18.weight"], raw["gen.18.weight"])


def test_convert_then_info(reference: Path, tmp_path: Path) -> None:
    src = reference / "nlcl-realrain-G_B.pth"
    dest = tmp_path / "realrain.safetensors"
    code, _, err = cli("weights", "convert", str(src), str(dest))
    assert code == 0, err
    assert read_sidecar(dest) == sha256_file(dest)

    code, out, err = cli("weights", "info", str(dest), "--json")
    assert code == 0, err
    info = json.loads(out)
    assert info["arch"] == "nlcl-resnet" and info["parameters"] == 316_195
    assert info["metadata"]["derain.source_file"] == "nlcl-realrain-G_B.pth"
    assert info["metadata"]["derain.source_sha256"] == sha256_file(src)
    assert info["sha256"] == sha256_file(dest)
    assert torch.equal(
        outputs(load_weights(str(dest)).module), outputs(load_weights(str(src)).module)
    )

    code, out, _ = cli("weights", "info", str(dest))
    assert code == 0 and "316,195" in out  # on stdout, for pipes

    code, _, err = cli("weights", "convert", str(src), str(dest))
    assert code == 2 and "already exists" in err


class _Marker:
    """Unpickling this would create a file: proof that loading ran code."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (self.path, "w"))


def test_pth_with_pickled_objects_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "code-ran"
    evil = tmp_path / "evil.pth"
    torch.save({"gen.0.weight": torch.zeros(8, 3, 3, 3), "hook": _Marker(str(marker))}, evil)
    with pytest.raises(WeightsError, match="refused: the checkpoint holds pickled objects"):
        load_weights(str(evil))
    assert not marker.exists()
    code, _, err = cli("weights", "info", str(evil))
    assert code == 2 and "weights_only=True" in err and not marker.exists()


# --------------------------------------------------------------------------- registry, default


def test_registry_without_a_default_says_how_to_get_weights(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DERAIN_REGISTRY", str(write_registry(tmp_path, {}, None)))
    for spec in (None, "default"):
        with pytest.raises(WeightsError, match="no default weights are bundled yet") as caught:
            load_weights(spec)
        assert "pass weights FILE" in str(caught.value) and "hf://" in str(caught.value)
    code, _, err = cli("weights", "info", "default")
    assert code == 2
    assert "no default weights are bundled yet" in err and "--weights" in err
    assert "Traceback" not in err


def test_bundled_registry_is_found_and_valid() -> None:
    folder = weights_registry.bundled_dir()
    assert folder == REPO / "weights"
    registry = weights_registry.load_registry()
    assert set(registry.aliases) == {"default"}
    # the bundled default (tests/test_default_model.py checks what it is)
    assert registry.aliases["default"] in registry.entries
    for entry in registry.entries.values():  # every bundled entry is really there, unchanged
        if entry.file is not None:
            assert sha256_file(entry.file) == entry.sha256


def test_unknown_name_lists_known() -> None:
    with pytest.raises(WeightsError, match="unknown weights 'nope'.*registered: default"):
        load_weights("nope")


def test_parse_hf_spec() -> None:
    assert parse_hf_spec("hf://me/model") == HubRef("me/model", "main", "G_B.safetensors")
    assert parse_hf_spec(f"hf://me/model@{COMMIT}/sub/x.safetensors") == HubRef(
        "me/model", COMMIT, "sub/x.safetensors"
    )
    for bad in ("hf://me", "hf://me/", "hf:///x", "hf://me/model@", "hf://me/model/../x"):
        with pytest.raises(WeightsError):
            parse_hf_spec(bad)


# ------------------------------------------------------------------------------------- Hub


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[HubServer]:
    """A local Hub; ``huggingface_hub`` pointed at it and at temporary caches."""
    from huggingface_hub import constants

    with HubServer() as server:
        monkeypatch.setenv("HF_ENDPOINT", server.endpoint)
        monkeypatch.setenv("DERAIN_HOME", str(tmp_path / "derain-home"))
        monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
        monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.delenv("HF_TOKEN", raising=False)
        # Read once at import by huggingface_hub: telemetry would otherwise contact the real Hub.
        monkeypatch.setattr(constants, "HF_HUB_DISABLE_TELEMETRY", True)
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        yield server


def host_tiny(hub: HubServer, tmp_path: Path, repo: str, **kwargs: object) -> tuple[bytes, str]:
    module = tiny_generator(seed=3)
    path = tmp_path / f"{repo.replace('/', '_')}.safetensors"
    digest = save_weights(path, module, arch="nlcl-resnet", hparams=TINY, metadata={})
    data = path.read_bytes()
    hub.add_file(repo, "G_B.safetensors", data, commit=COMMIT, **kwargs)  # type: ignore[arg-type]
    return data, digest


def test_hub_download_and_load(hub: HubServer, tmp_path: Path) -> None:
    data, digest = host_tiny(hub, tmp_path, "owner/derain-tiny")
    loaded = load_weights("hf://owner/derain-tiny")
    assert (
        loaded.sha256 == digest and loaded.source == "hf://owner/derain-tiny@main/G_B.safetensors"
    )
    assert torch.equal(outputs(loaded.module), outputs(tiny_generator(seed=3)))
    # It really went through the server: HEAD on /resolve, then GET from the "CDN" host.
    assert hub.requests("HEAD", "/owner/derain-tiny/resolve/main/G_B.safetensors")
    (get,) = hub.requests("GET", "/cdn/owner/derain-tiny/")
    assert get.host.startswith("localhost:")
    cached = cached_file(HubRef("owner/derain-tiny", COMMIT, "G_B.safetensors"))
    assert cached is not None and cached.read_bytes() == data
    assert hub_cache_dir() in cached.parents and tmp_path / "derain-home" in cached.parents


@pytest.mark.parametrize("symlinks", [True, False], ids=["symlinks", "copies"])
def test_corrupt_download_is_rejected_and_not_cached(
    hub: HubServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, symlinks: bool
) -> None:
    from huggingface_hub import constants

    # Without symlinks (Windows) the cache holds copies: the bad blob must go as well.
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_SYMLINKS", not symlinks)
    host_tiny(hub, tmp_path, "owner/broken")
    hub.corrupt("owner/broken", "G_B.safetensors")
    with pytest.raises(WeightsError, match="sha256 mismatch.*deleted from the cache"):
        load_weights(f"hf://owner/broken@{COMMIT}")
    assert hub.requests("GET", "/cdn/owner/broken/")
    ref = HubRef("owner/broken", COMMIT, "G_B.safetensors")
    assert cached_file(ref) is None
    blobs = hub_cache_dir() / "models--owner--broken" / "blobs"
    assert not [p for p in blobs.glob("*") if p.is_file()]
    # Offline, the bad bytes cannot come back from the cache either.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsError, match="HF_HUB_OFFLINE"):
        load_weights(f"hf://owner/broken@{COMMIT}")
    monkeypatch.delenv("HF_HUB_OFFLINE")
    # Once the server is fixed the same spec downloads and loads.
    hub.repos["owner/broken"].files["G_B.safetensors"].served = None
    assert load_weights(f"hf://owner/broken@{COMMIT}").arch == "nlcl-resnet"


def test_wrong_sidecar_in_repo_is_rejected(hub: HubServer, tmp_path: Path) -> None:
    # Not LFS: the etag is a git sha1, so only the repo's sidecar can catch the mismatch.
    host_tiny(hub, tmp_path, "owner/sidecar", lfs=False)
    hub.add_file("owner/sidecar", "G_B.safetensors.sha256", b"f" * 64 + b"\n", commit=COMMIT)
    with pytest.raises(WeightsError, match=r"G_B\.safetensors\.sha256 in the repo says fffff"):
        load_weights("hf://owner/sidecar")
    assert hub.requests("GET", "/owner/sidecar/resolve/")


def test_offline_without_cache_is_a_clear_error(
    hub: HubServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    host_tiny(hub, tmp_path, "owner/derain-tiny")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsError, match="not in the local cache.*HF_HUB_OFFLINE=1"):
        load_weights(f"hf://owner/derain-tiny@{COMMIT}")
    code, _, err = cli("weights", "info", "hf://owner/derain-tiny")
    assert code == 2 and "HF_HUB_OFFLINE=1" in err
    assert hub.log == []


def test_offline_after_caching_works(
    hub: HubServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, digest = host_tiny(hub, tmp_path, "owner/derain-tiny")
    assert load_weights("hf://owner/derain-tiny").sha256 == digest
    seen = len(hub.log)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for spec in ("hf://owner/derain-tiny", f"hf://owner/derain-tiny@{COMMIT}"):
        assert load_weights(spec).sha256 == digest
    assert len(hub.log) == seen  # no request while offline


def test_quiet_run_hides_the_hub_download_bar(
    hub: HubServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--quiet`` silences huggingface_hub's own tqdm bars; without it they still show."""
    from PIL import Image

    monkeypatch.setenv("TQDM_POSITION", "-1")  # force the client's bars on a non-terminal
    host_tiny(hub, tmp_path, "owner/quiet")
    host_tiny(hub, tmp_path, "owner/loud")
    Image.new("RGB", (16, 12), (90, 120, 200)).save(tmp_path / "in.png")
    args = [str(tmp_path / "in.png"), "-o"]
    code, out, err = cli(*args, str(tmp_path / "q.png"), "-q", "--weights", "hf://owner/quiet")
    assert (code, out, err) == (0, "", "")
    code, _, err = cli(*args, str(tmp_path / "l.png"), "--weights", "hf://owner/loud")
    assert code == 0 and "G_B.safetensors" in err and "100%" in err
    from huggingface_hub.utils import are_progress_bars_disabled

    assert not are_progress_bars_disabled()  # the global switch is restored


def write_registry(tmp_path: Path, entries: dict[str, object], default: str | None) -> Path:
    path = tmp_path / "registry.json"
    registry = {"format_version": 1, "aliases": {"default": default}, "weights": entries}
    path.write_text(json.dumps(registry))
    return path


def test_registry_entries_download_list_and_default(
    hub: HubServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, digest = host_tiny(hub, tmp_path, "owner/derain-tiny")
    local = tmp_path / "bundled.safetensors"
    local_digest = save_weights(local, tiny_generator(5), arch="nlcl-resnet", hparams=TINY)
    hub_entry = {"repo_id": "owner/derain-tiny", "revision": COMMIT, "filename": "G_B.safetensors"}
    entries = {
        "tiny-hub": {"arch": "nlcl-resnet", "sha256": digest, "hub": hub_entry},
        "tiny-bad": {"arch": "nlcl-resnet", "sha256": "e" * 64, "hub": hub_entry},
        "tiny-local": {"arch": "nlcl-resnet", "sha256": local_digest, "file": local.name},
    }
    monkeypatch.setenv("DERAIN_REGISTRY", str(write_registry(tmp_path, entries, "tiny-local")))

    code, out, _ = cli("weights", "list", "--json")
    status = {row["name"]: row["status"] for row in json.loads(out)["weights"]}
    assert code == 0
    assert status == {
        "tiny-hub": "remote",
        "tiny-bad": "remote",
        "tiny-local": "bundled",
        "default": "alias",
    }

    code, out, err = cli("weights", "download", "tiny-hub")
    assert code == 0, err
    assert (
        Path(out.strip()).read_bytes() == (tmp_path / "owner_derain-tiny.safetensors").read_bytes()
    )
    code, out, _ = cli("weights", "list", "--json")
    assert {r["name"]: r["status"] for r in json.loads(out)["weights"]}["tiny-hub"] == "cached"

    code, _, err = cli("weights", "download", "tiny-bad")
    assert code == 2 and "the registry says eeeeeeeeeeee" in err

    assert load_weights(None).sha256 == local_digest
    assert load_weights("tiny-hub").source == "tiny-hub"


def test_download_takes_registered_names_and_hub_specs_only(tmp_path: Path) -> None:
    """A local weights file is no name to download, though ``load_weights`` takes it."""
    local = tmp_path / "G_B.safetensors"
    save_weights(local, tiny_generator(), arch="nlcl-resnet", hparams=TINY)
    code, _, err = cli("weights", "download", str(local))
    assert code == 2 and f"unknown weights '{local}'" in err
    assert load_weights(str(local)).source == str(local)


def test_rain_weights_are_refused_before_the_network_is_built(tmp_path: Path) -> None:
    """G_R named as such is refused for what it is, even when its tensors would not load."""
    path = tmp_path / "nlcl-G_R.pth"
    torch.save({"gen.0.weight": torch.zeros(8, 3, 7, 7)}, path)
    with pytest.raises(WeightsError, match="the rain generator G_R"):
        load_weights(str(path), background=True)
    with pytest.raises(WeightsError, match="do not fit"):
        load_weights(str(path))


# ------------------------------------------------------------------------------------ wheel


@pytest.mark.slow
def test_wheel_ships_registry_and_lookup_finds_it(tmp_path: Path) -> None:
    """Build the wheel from a copy of the project, install it elsewhere, look the registry up."""
    import importlib.metadata
    import shutil

    record_before = importlib.metadata.distribution("derain").read_text("RECORD")
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        if (REPO / name).is_file():
            shutil.copy(REPO / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(REPO / "derain_cli", src / "derain_cli", ignore=ignore)
    shutil.copytree(REPO / "weights", src / "weights", ignore=ignore)
    pip = [sys.executable, "-m", "pip", "-q", "--disable-pip-version-check"]
    wheels = tmp_path / "wheels"
    subprocess.run(
        [*pip, "wheel", str(src), "-w", str(wheels), "--no-deps", "--no-build-isolation"],
        check=True,
        cwd=src,
        capture_output=True,
    )
    (wheel,) = wheels.glob("derain-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert any(n.endswith("data/share/derain/weights/registry.json") for n in names)
    assert "derain_cli/presets/adapt.toml" in names  # derain adapt's recipe

    prefix = tmp_path / "prefix"
    # --ignore-installed: without it pip would first uninstall this venv's (editable) derain.
    install = ["install", "--no-deps", "--no-index", "--ignore-installed", "--prefix", str(prefix)]
    subprocess.run([*pip, *install, str(wheel)], check=True, capture_output=True)
    assert importlib.metadata.distribution("derain").read_text("RECORD") == record_before
    (site,) = prefix.glob("lib/python*/site-packages")
    probe = (
        "import derain_cli.weights.registry as w; "
        "print(w.__file__); print(w.bundled_dir()); print(len(w.load_registry().aliases))"
    )
    # -S: no site-packages of this venv (nor its editable install); only the installed wheel.
    env = {k: v for k, v in os.environ.items() if k != "DERAIN_REGISTRY"}
    env["PYTHONPATH"] = str(site)
    result = subprocess.run(
        [sys.executable, "-S", "-c", probe],
        env=env,
        cwd=tmp_path,  # not the checkout: its derain_cli must not shadow the installed one
        capture_output=True,
        text=True,
        check=True,
    )
    module_file, folder, aliases = result.stdout.split()
    assert Path(module_file).is_relative_to(site)
    assert Path(folder).resolve() == (prefix / "share" / "derain" / "weights").resolve()
    assert json.loads((Path(folder) / "registry.json").read_text())["format_version"] == 1
    assert aliases == "1"


def test_unreachable_hub_fails_at_once_in_one_line(
    hub: HubServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """With no network, an uncached hf:// spec printed six retry lines over 23 s (issue "Trust
    II"): huggingface_hub retries a failed connection five times when nothing is cached."""
    import socket
    import time

    with socket.socket() as probe:  # a local port that nobody listens on: connection refused
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    start = time.monotonic()
    code, _, err = cli("weights", "info", "hf://owner/derain-tiny")
    assert time.monotonic() - start < 5
    assert code == 2, err
    (line,) = [line for line in err.splitlines() if line.strip()]
    assert line.startswith("derain: error: hf://owner/derain-tiny@main/G_B.safetensors: cannot "
                           f"reach http://127.0.0.1:{port} (")  # fmt: skip
    assert line.endswith("check the network, or set HF_HUB_OFFLINE=1 to use the cache alone")
    assert "Retry" not in capfd.readouterr().err
