"""A local stand-in for the Hugging Face Hub's file server, for tests that must see a real download.

`huggingface_hub.hf_hub_download` with `HF_ENDPOINT=http://127.0.0.1:PORT` asks `HEAD` then `GET`
`/{org}/{name}/resolve/{revision}/{file}` and reads three headers from the `HEAD` answer: `X-Repo-Commit` (the commit
the revision points at), `ETag` (the blob's name in the cache) and `Content-Length`. A missing file is a 404 with
`X-Error-Code: EntryNotFound`, an unknown repo one with `RepoNotFound` (huggingface_hub's `hf_raise_for_status` reads
that header). This server answers those from repos written in the Hub cache layout (`tests.support.hubcache`), so a
test downloads files it wrote itself, at a chosen speed (`bytes_per_s`), and counts the weight downloads (`gets`).
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote

from .hubcache import repo_dir


class FakeHub:
    """Serves the repos of `source` (a Hub cache folder). gets: Counter of (repo, file) GETs answered."""

    def __init__(self, source: Path, bytes_per_s: float | None = None) -> None:
        self.source = Path(source)
        self.bytes_per_s = bytes_per_s
        self.gets: Counter[tuple[str, str]] = Counter()
        self.url = ""

    def file(self, repo: str, revision: str, name: str) -> tuple[str, Path] | None:
        """(commit, path) of a served file; None when the repo has no such file. KeyError: no such repo."""
        root = repo_dir(self.source, repo)
        ref = root / "refs" / revision
        if not ref.is_file():
            raise KeyError(repo)
        commit = ref.read_text().strip()
        path = root / "snapshots" / commit / name
        return (commit, path) if path.is_file() else None


def _handler(hub: FakeHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:  # quiet
            pass

        def _answer(self, body: bool) -> None:
            parts = unquote(self.path.split("?")[0]).strip("/").split("/")
            if len(parts) < 5 or parts[2] != "resolve":
                self.send_error(404)
                return
            repo, revision, name = "/".join(parts[:2]), parts[3], "/".join(parts[4:])
            try:
                found = hub.file(repo, revision, name)
            except KeyError:
                self._missing("RepoNotFound")
                return
            if found is None:
                self._missing("EntryNotFound")
                return
            commit, path = found
            data = path.read_bytes()
            self.send_response(200)
            self.send_header("X-Repo-Commit", commit)
            self.send_header("ETag", '"' + hashlib.sha1(data).hexdigest() + '"')
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if not body:
                return
            hub.gets[(repo, name)] += 1
            step = 64 * 1024
            for start in range(0, len(data), step):
                self.wfile.write(data[start : start + step])
                if hub.bytes_per_s:
                    time.sleep(step / hub.bytes_per_s)

        def _missing(self, code: str) -> None:
            self.send_response(404)
            self.send_header("X-Error-Code", code)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_HEAD(self) -> None:  # noqa: N802 - http.server's name
            self._answer(body=False)

        def do_GET(self) -> None:  # noqa: N802
            self._answer(body=True)

    return Handler


@contextmanager
def serving(hub: FakeHub) -> Iterator[FakeHub]:
    """Run `hub` on a free local port (`hub.url`) for the block."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(hub))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    hub.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield hub
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def online_through(hub: FakeHub, cache: Path, monkeypatch) -> Iterator[FakeHub]:  # noqa: ANN001 - pytest's
    """This test process downloads from `hub` (served for the block) into the empty Hub cache `cache`: the variables
    and huggingface_hub's constants (read at its import) point at it, and the offline switch of the test suite is
    off for the block."""
    import huggingface_hub.constants as constants

    with serving(hub):
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        monkeypatch.setenv("HF_HUB_CACHE", str(cache))
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.setattr(constants, "ENDPOINT", hub.url)
        monkeypatch.setattr(
            constants, "HUGGINGFACE_CO_URL_TEMPLATE", hub.url + "/{repo_id}/resolve/{revision}/{filename}"
        )
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        yield hub
