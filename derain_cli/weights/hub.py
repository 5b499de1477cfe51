"""Weights from the Hugging Face Hub: ``hf://`` specs, cached downloads, sha256 verification.

Downloads go through ``huggingface_hub.hf_hub_download`` into a Hub-layout cache. Settings are read
from the environment *at call time* and handed to the client as arguments (``endpoint``,
``cache_dir``, ``local_files_only``), because ``huggingface_hub.constants`` snapshots
``HF_ENDPOINT`` and ``HF_HUB_OFFLINE`` once, at import.

Every file is checked against each sha256 we know for it: the registry's, the repo's
``<file>.sha256`` sidecar when it has one, and the Hub's LFS etag (which is the file's sha256 and
names the cached blob). A mismatch deletes the cached copy, so a bad download is never reused.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from derain_cli.errors import WeightsError
from derain_cli.weights.checksums import parse_sidecar, sha256_file, verify_sha256

HF_SCHEME = "hf://"
DEFAULT_FILENAME = "G_B.safetensors"
DEFAULT_REVISION = "main"
_SHA256 = re.compile(r"[0-9a-f]{64}")
_REPO = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*")


@dataclass(frozen=True)
class HubRef:
    """``hf://OWNER/REPO[@REVISION][/FILE]`` parsed."""

    repo_id: str
    revision: str = DEFAULT_REVISION
    filename: str = DEFAULT_FILENAME

    @property
    def spec(self) -> str:
        return f"{HF_SCHEME}{self.repo_id}@{self.revision}/{self.filename}"


def parse_hf_spec(spec: str) -> HubRef:
    """Parse ``hf://OWNER/REPO[@REVISION][/FILE]`` (FILE may contain folders)."""
    if not spec.startswith(HF_SCHEME):
        raise WeightsError(f"{spec}: not an hf:// weights spec")
    parts = spec[len(HF_SCHEME) :].split("/")
    if len(parts) < 2 or not parts[0] or not parts[1]:
        raise WeightsError(f"{spec}: expected hf://OWNER/REPO[@REVISION][/FILE]")
    name, _, revision = parts[1].partition("@")
    repo_id = f"{parts[0]}/{name}"
    filename = "/".join(parts[2:]) or DEFAULT_FILENAME
    if not _REPO.fullmatch(repo_id) or (parts[1].count("@") and not revision):
        raise WeightsError(f"{spec}: expected hf://OWNER/REPO[@REVISION][/FILE]")
    if any(p in ("", ".", "..") for p in filename.split("/")):
        raise WeightsError(f"{spec}: invalid file path {filename!r}")
    return HubRef(repo_id=repo_id, revision=revision or DEFAULT_REVISION, filename=filename)


def derain_home() -> Path:
    """``$DERAIN_HOME``, or the per-user cache folder from platformdirs."""
    import platformdirs

    home = os.environ.get("DERAIN_HOME")
    return Path(home).expanduser() if home else Path(platformdirs.user_cache_dir("derain"))


def hub_cache_dir() -> Path:
    """Where downloads land: ``$DERAIN_HOME/hub``, else ``$HF_HUB_CACHE``, else our cache folder."""
    if os.environ.get("DERAIN_HOME"):
        return derain_home() / "hub"
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    return derain_home() / "hub"


def offline() -> bool:
    from huggingface_hub import constants

    flag = os.environ.get("HF_HUB_OFFLINE", "")
    return flag.strip().upper() in {"1", "ON", "YES", "TRUE"} or constants.HF_HUB_OFFLINE


def endpoint() -> str | None:
    value = os.environ.get("HF_ENDPOINT")
    return value.rstrip("/") if value else None


@contextlib.contextmanager
def download_progress(enabled: bool) -> Iterator[None]:
    """Show (or, for ``--quiet``, hide) ``huggingface_hub``'s download bars inside the block.

    The client prints its own tqdm bars on stderr; ``--quiet`` must silence them too. The
    previous global state is restored afterwards.
    """
    if enabled:
        yield
        return
    from huggingface_hub.utils import (
        are_progress_bars_disabled,
        disable_progress_bars,
        enable_progress_bars,
    )

    was_disabled = are_progress_bars_disabled()
    disable_progress_bars()
    try:
        yield
    finally:
        if not was_disabled:
            enable_progress_bars()


def cached_file(ref: HubRef) -> Path | None:
    """The cached copy of ``ref`` if there is one (no network)."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(
        ref.repo_id, ref.filename, cache_dir=hub_cache_dir(), revision=ref.revision
    )
    return Path(found) if isinstance(found, str) else None


def fetch(ref: HubRef, *, sha256: str | None = None) -> tuple[Path, str]:
    """Download (or reuse the cached) ``ref``, verify it, return ``(path, sha256)``.

    ``sha256`` is the registry's checksum when the caller has one; the repo's sidecar and the LFS
    etag are checked as well when present.
    """
    fresh = cached_file(ref) is None
    path = _download(ref, ref.filename)
    commit = _commit_of(path)
    expected: list[tuple[str, str]] = []
    if sha256:
        expected.append(("the registry", sha256.lower()))
    sidecar = _sidecar(ref, commit)
    if sidecar:
        expected.append((f"{ref.filename}.sha256 in the repo", sidecar))
    blob = Path(os.path.realpath(path))
    etag = blob.name if _SHA256.fullmatch(blob.name) else None
    if etag is None and fresh and not offline():
        etag = _lfs_sha256(ref, commit)  # no symlinked blob (e.g. Windows): ask the Hub
    if etag:
        expected.append(("the Hub's LFS etag", etag))
    actual = verify_sha256(
        path,
        expected,
        name=ref.spec,
        on_mismatch=lambda actual: _discard(path, actual),
        consequence=": the download is corrupt and was deleted from the cache",
    )
    return path, actual


def _download(ref: HubRef, filename: str, *, revision: str | None = None) -> Path:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.utils import (  # stable import path across huggingface_hub 0.x-2.x
        EntryNotFoundError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    where = endpoint() or "the Hugging Face Hub"
    _fail_fast_when_unreachable(ref, filename, revision or ref.revision, where)
    try:
        found = hf_hub_download(
            ref.repo_id,
            filename,
            revision=revision or ref.revision,
            cache_dir=hub_cache_dir(),
            endpoint=endpoint(),
            local_files_only=offline(),
            library_name="derain",
        )
    except LocalEntryNotFoundError:
        if offline():
            raise WeightsError(
                f"{ref.spec}: not in the local cache ({hub_cache_dir()}) and HF_HUB_OFFLINE=1 "
                "forbids downloading: run `derain weights download` while online, or unset "
                "HF_HUB_OFFLINE"
            ) from None
        raise WeightsError(
            f"{ref.spec}: cannot reach {where} and the file is not cached ({hub_cache_dir()})"
        ) from None
    except EntryNotFoundError:  # after LocalEntryNotFoundError, its subclass
        raise WeightsError(f"{ref.spec}: no file {filename!r} in {ref.repo_id}") from None
    except RevisionNotFoundError:
        raise WeightsError(f"{ref.spec}: revision {ref.revision!r} not found") from None
    except RepositoryNotFoundError:
        raise WeightsError(f"{ref.spec}: repository not found on {where} (or private)") from None
    except HfHubHTTPError as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise WeightsError(f"{ref.spec}: download failed: {reason}") from None
    except Exception as exc:  # network and disk errors: one line, the chain kept for --debug
        raise WeightsError(f"{ref.spec}: download failed ({type(exc).__name__}: {exc})") from exc
    return Path(str(found))


def _fail_fast_when_unreachable(ref: HubRef, filename: str, revision: str, where: str) -> None:
    """Refuse at once, in one line, a file that is not cached when the Hub cannot be reached.

    ``hf_hub_download`` retries a failed connection five times with growing waits when nothing
    is cached (23 s and six log lines per file on a machine without network). One request
    without retries tells first; HTTP answers (404, 5xx...) are left to ``hf_hub_download``,
    which words them, and retries the transient ones.
    """
    from huggingface_hub import get_hf_file_metadata, hf_hub_url, try_to_load_from_cache
    from huggingface_hub.utils import HfHubHTTPError

    if offline():
        return  # hf_hub_download reads the cache only, and says so
    cached = try_to_load_from_cache(
        ref.repo_id, filename, cache_dir=hub_cache_dir(), revision=revision
    )
    if isinstance(cached, str):
        return
    url = hf_hub_url(ref.repo_id, filename, revision=revision, endpoint=endpoint())
    try:
        get_hf_file_metadata(url, endpoint=endpoint())
    except HfHubHTTPError:
        return
    except Exception as exc:  # connection refused, no DNS, timeout: the network is the problem
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise WeightsError(
            f"{ref.spec}: cannot reach {where} ({reason}) and the file is not cached "
            f"({hub_cache_dir()}); check the network, or set HF_HUB_OFFLINE=1 to use the "
            "cache alone"
        ) from None


def _lfs_sha256(ref: HubRef, commit: str | None) -> str | None:
    """The LFS etag (the file's sha256) the Hub declares for ``ref``, or None."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_url

    url = hf_hub_url(
        ref.repo_id, ref.filename, revision=commit or ref.revision, endpoint=endpoint()
    )
    try:
        etag = get_hf_file_metadata(url, endpoint=endpoint()).etag
    except Exception:  # best effort: an extra check; registry and sidecar checks still apply
        return None
    return etag if etag and _SHA256.fullmatch(etag) else None


def _commit_of(path: Path) -> str | None:
    """The commit folder of a Hub-cache snapshot path (``.../snapshots/<commit>/<file>``)."""
    index = _snapshots_index(path)
    if index is not None and index + 1 < len(path.parts):
        return path.parts[index + 1]
    return None


def _snapshots_index(path: Path) -> int | None:
    """Position of the last ``snapshots`` component of a Hub-cache path (None: not in one)."""
    parts = path.parts
    if "snapshots" not in parts:
        return None
    return len(parts) - 1 - parts[::-1].index("snapshots")


def _sidecar(ref: HubRef, commit: str | None) -> str | None:
    """The repo's ``<file>.sha256`` at the same commit, or None when it has none.

    A cached copy, or the client's cached "does not exist" marker, answers without a request.
    """
    from huggingface_hub import try_to_load_from_cache

    name = f"{ref.filename}.sha256"
    known = None
    if commit is not None:
        known = try_to_load_from_cache(
            ref.repo_id, name, cache_dir=hub_cache_dir(), revision=commit
        )
    if isinstance(known, str):
        side = Path(known)
    elif known is not None:  # huggingface_hub's _CACHED_NO_EXIST sentinel
        return None
    else:
        try:
            side = _download(ref, name, revision=commit)
        except WeightsError:
            return None
    try:
        return parse_sidecar(side.read_text(encoding="utf-8", errors="replace"))
    except OSError:
        return None


def _discard(path: Path, sha256: str) -> None:
    """Delete a cached snapshot entry and every blob of that repo with the same (bad) bytes.

    Usually the snapshot entry is a symlink to its blob; where symlinks are unavailable the client
    copies the blob instead, so blobs are also matched by content.
    """
    blob = Path(os.path.realpath(path))
    size = blob.stat().st_size if blob.is_file() else None
    path.unlink(missing_ok=True)
    if blob != path:
        blob.unlink(missing_ok=True)
    index = _snapshots_index(path)
    if index is not None:
        blobs = Path(*path.parts[:index]) / "blobs"
        for candidate in blobs.glob("*") if blobs.is_dir() else ():
            same_size = candidate.is_file() and candidate.stat().st_size == size
            if same_size and sha256_file(candidate) == sha256:
                candidate.unlink(missing_ok=True)
