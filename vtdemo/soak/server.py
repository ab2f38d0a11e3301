"""The server's process seen from outside (Linux /proc, same user): its RSS, open file descriptors and threads, and
the bytes in Gradio's temporary folder.

`find_pid(port)` finds the process listening on a local TCP port (/proc/net/tcp{,6} -> the socket's inode -> the
process holding it); `temp_dir_of(pid)` reads GRADIO_TEMP_DIR from that process's environment (Gradio's default is
`<tempdir>/gradio`); `Sampler` is a thread that takes a `Sample` every few seconds until stopped.
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from .report import Sample

LISTEN = "0A"  # TCP state LISTEN in /proc/net/tcp


def listening_inodes(port: int, proc: Path = Path("/proc")) -> set[str]:
    """The socket inodes listening on `port` (IPv4 and IPv6)."""
    out = set()
    for name in ("tcp", "tcp6"):
        try:
            lines = (proc / "net" / name).read_text(encoding="ascii").splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            if len(parts) > 9 and parts[3] == LISTEN and int(parts[1].rsplit(":", 1)[1], 16) == port:
                out.add(parts[9])
    return out


def find_pid(port: int, proc: Path = Path("/proc")) -> int | None:
    """The process listening on a local TCP port, or None (not found, or another user's process)."""
    inodes = {f"socket:[{i}]" for i in listening_inodes(port, proc)}
    if not inodes:
        return None
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            for fd in (entry / "fd").iterdir():
                if os.readlink(fd) in inodes:
                    return int(entry.name)
        except OSError:  # gone, or not ours
            continue
    return None


def temp_dir_of(pid: int | None) -> Path:
    """Gradio's temporary folder as the server sees it: its GRADIO_TEMP_DIR, else `<tempdir>/gradio` (the server's
    TMPDIR if it has one)."""
    env: dict[str, str] = {}
    if pid is not None:
        try:
            raw = Path(f"/proc/{pid}/environ").read_bytes()
            env = dict(kv.split("=", 1) for kv in raw.decode("utf-8", "replace").split("\0") if "=" in kv)
        except OSError:
            pass
    if env.get("GRADIO_TEMP_DIR"):
        return Path(env["GRADIO_TEMP_DIR"])
    return Path(env.get("TMPDIR") or tempfile.gettempdir()) / "gradio"


def status_fields(pid: int) -> dict[str, str]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text(encoding="ascii", errors="replace").splitlines():
        name, _, value = line.partition(":")
        out[name] = value.strip()
    return out


def folder_size(folder: Path) -> tuple[int, int]:
    """(files, bytes) under a folder, recursively; files deleted while walking are skipped."""
    files = size = 0
    stack = [folder]
    while stack:
        try:
            entries = list(os.scandir(stack.pop()))
        except OSError:
            continue
        for e in entries:
            try:
                if e.is_dir(follow_symlinks=False):
                    stack.append(Path(e.path))
                elif e.is_file(follow_symlinks=False):
                    files += 1
                    size += e.stat(follow_symlinks=False).st_size
            except OSError:
                continue
    return files, size


def sample(pid: int, temp_dir: Path, t_s: float) -> Sample:
    """One reading of the server (raises OSError if the process is gone)."""
    st = status_fields(pid)
    rss_kib = int(st.get("VmRSS", "0 kB").split()[0])
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    files, size = folder_size(temp_dir)
    return Sample(
        t_s=t_s,
        rss_mib=rss_kib / 1024,
        open_files=fds,
        threads=int(st.get("Threads", "0")),
        temp_files=files,
        temp_mib=size / 2**20,
    )


class Sampler(threading.Thread):
    """Samples the server every `every_s` seconds (and once more when stopped) into `samples`; `clock()` gives the
    soak's time. A process that is gone ends the sampling and is noted in `error`."""

    def __init__(self, pid: int, temp_dir: Path, every_s: float, clock: Callable[[], float]) -> None:
        super().__init__(name="soak-sampler", daemon=True)
        self.pid, self.temp_dir, self.every_s, self.clock = pid, temp_dir, every_s, clock
        self.samples: list[Sample] = []
        self.error = ""
        self._stop_event = threading.Event()

    def take(self) -> bool:
        try:
            self.samples.append(sample(self.pid, self.temp_dir, self.clock()))
            return True
        except OSError as exc:
            self.error = f"the server's process {self.pid} cannot be read any more: {exc}"
            return False

    def run(self) -> None:
        while not self._stop_event.is_set():
            started = time.monotonic()
            if not self.take():
                return
            self._stop_event.wait(max(0.0, self.every_s - (time.monotonic() - started)))

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=30)
        if not self.error:
            self.take()
