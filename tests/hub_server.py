"""A tiny Hugging Face Hub look-alike for tests: the real ``huggingface_hub`` client talks to it.

It serves only what ``huggingface_hub.hf_hub_download`` (2.x) asks for, as read from the client's
source (``file_download.get_hf_file_metadata`` / ``_get_metadata_or_catch_error`` / ``http_get``):

* ``HEAD /{owner}/{repo}/resolve/{revision}/{path}`` answers with ``X-Repo-Commit`` (the commit
  the revision resolves to), an ``ETag`` and a ``Content-Length``. Large files (``lfs=True``) act
  like the Hub's LFS files: a ``302`` whose ``Location`` points at another host (``localhost``
  instead of ``127.0.0.1``, so the client treats it as a CDN and stops following), carrying
  ``X-Linked-Etag`` (the sha256 of the *declared* content) and ``X-Linked-Size``.
* ``GET`` on the same URLs, and on the ``/cdn/...`` URLs, sends the bytes.
* Missing repos, revisions and files answer ``404`` with the ``X-Error-Code`` the client maps to
  ``RepositoryNotFoundError``, ``RevisionNotFoundError`` and ``RemoteEntryNotFoundError``.

``corrupt(repo, path)`` makes the server send different bytes of the same length than it declares,
as a broken mirror or a flipped bit on the wire would. Every request is appended to ``log``.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from urllib.parse import quote, unquote


@dataclass
class HostedFile:
    content: bytes
    lfs: bool
    served: bytes | None = None  # what GET really sends; differs from ``content`` when corrupted

    @property
    def body(self) -> bytes:
        return self.content if self.served is None else self.served


@dataclass
class HostedRepo:
    commit: str
    branches: dict[str, str] = field(default_factory=dict)
    files: dict[str, HostedFile] = field(default_factory=dict)


@dataclass(frozen=True)
class Request:
    method: str
    host: str
    path: str


def git_blob_sha1(content: bytes) -> str:
    """The etag the Hub uses for non-LFS files."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


class HubServer:
    """Start with ``with HubServer() as hub:``; ``hub.endpoint`` is the ``HF_ENDPOINT`` to use."""

    def __init__(self) -> None:
        self.repos: dict[str, HostedRepo] = {}
        self.log: list[Request] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> HubServer:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def add_file(
        self,
        repo_id: str,
        path: str,
        content: bytes,
        *,
        commit: str,
        lfs: bool | None = None,
        branch: str = "main",
    ) -> None:
        """Host ``content`` at ``repo_id@commit/path`` (``branch`` points at ``commit``)."""
        with self._lock:
            repo = self.repos.setdefault(repo_id, HostedRepo(commit=commit))
            repo.branches[branch] = commit
            is_lfs = lfs if lfs is not None else not path.endswith((".json", ".md", ".sha256"))
            repo.files[path] = HostedFile(content=content, lfs=is_lfs)

    def corrupt(self, repo_id: str, path: str) -> None:
        """Serve different bytes (same length) while still declaring the original sha256."""
        hosted = self.repos[repo_id].files[path]
        flipped = bytearray(hosted.content)
        middle = len(flipped) // 2
        flipped[middle] ^= 0xFF
        hosted.served = bytes(flipped)

    def requests(self, method: str | None = None, contains: str = "") -> list[Request]:
        with self._lock:
            return [
                r for r in self.log if (method is None or r.method == method) and contains in r.path
            ]

    # -- request handling -------------------------------------------------------------------

    def record(self, request: Request) -> None:
        with self._lock:
            self.log.append(request)

    def resolve(
        self, owner: str, name: str, revision: str, path: str
    ) -> tuple[int, dict[str, str], HostedFile | None]:
        repo_id = f"{owner}/{name}"
        repo = self.repos.get(repo_id)
        if repo is None:
            return 404, {"X-Error-Code": "RepoNotFound"}, None
        commit = repo.branches.get(revision, revision if revision == repo.commit else None)
        if commit is None:
            return 404, {"X-Error-Code": "RevisionNotFound"}, None
        hosted = repo.files.get(path)
        headers = {"X-Repo-Commit": commit}
        if hosted is None:
            return 404, {**headers, "X-Error-Code": "EntryNotFound"}, None
        if hosted.lfs:
            sha = hashlib.sha256(hosted.content).hexdigest()
            cdn = f"http://localhost:{self.port}/cdn/{quote(repo_id)}/{commit}/{quote(path)}"
            headers |= {
                "Location": cdn,
                "X-Linked-Etag": f'"{sha}"',
                "X-Linked-Size": str(len(hosted.content)),
                "ETag": f'W/"{git_blob_sha1(hosted.content)}"',
            }
            return 302, headers, hosted
        headers["ETag"] = f'"{git_blob_sha1(hosted.content)}"'
        return 200, headers, hosted

    def cdn(self, repo_id: str, commit: str, path: str) -> HostedFile | None:
        repo = self.repos.get(repo_id)
        if repo is None or commit not in repo.branches.values():
            return None
        return repo.files.get(path)


def _make_handler(hub: HubServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib name
            """Keep test output quiet; ``hub.log`` records requests instead."""

        def do_HEAD(self) -> None:  # noqa: N802 - stdlib naming
            self._answer(send_body=False)

        def do_GET(self) -> None:  # noqa: N802 - stdlib naming
            self._answer(send_body=True)

        def _answer(self, *, send_body: bool) -> None:
            path = unquote(self.path.split("?", 1)[0])
            hub.record(Request(self.command, self.headers.get("Host", ""), path))
            parts = path.lstrip("/").split("/")
            if parts[0] == "cdn" and len(parts) >= 5:
                hosted = hub.cdn(f"{parts[1]}/{parts[2]}", parts[3], "/".join(parts[4:]))
                if hosted is None:
                    self._send(404, {}, b"")
                else:
                    self._send(200, {"ETag": '"cdn"'}, hosted.body, send_body=send_body)
                return
            if len(parts) >= 5 and parts[2] == "resolve":
                owner, name, _, revision = parts[:4]
                status, headers, hosted = hub.resolve(owner, name, revision, "/".join(parts[4:]))
                if status == 302 or hosted is None:
                    self._send(status, headers, b"")
                else:
                    self._send(status, headers, hosted.body, send_body=send_body)
                return
            self._send(404, {"X-Error-Code": "RepoNotFound"}, b"")

        def _send(
            self, status: int, headers: dict[str, str], body: bytes, *, send_body: bool = True
        ) -> None:
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if send_body and body:
                self.wfile.write(body)

    return Handler
