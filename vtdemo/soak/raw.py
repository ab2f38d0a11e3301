"""Gradio's plain HTTP API, for what `gradio_client` cannot do: the webcam's `/webcam` is a streaming event
(`gradio_client` 2.7 raises `KeyError: 'process_streaming'` on its first message).

`Stream` does what the browser does while recording: the first frame starts the event
(`POST /gradio_api/call/webcam`, then its event stream), each later frame is posted to the running event
(`POST /gradio_api/stream/<event_id>`), and Stop closes it (`POST /gradio_api/stream/<event_id>/close`). An event
that is never closed holds one of the app's webcam slots (`VTDEMO_WEBCAM_SESSIONS`, 2) until its time limit
(`VTDEMO_WEBCAM_LIMIT`, 300 s). The event joins the visitor's session (its session hash), as the browser's would.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

CLOSE_WAIT_S = 10.0  # how long a closed stream may take to say it is complete


class AppError(ValueError):
    """The app answered with an error event (a `gr.Error`): `message` is its line (same name and attribute as
    `gradio_client.exceptions.AppError`, so that `outcome.judge_error` reads both alike)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def upload(url: str, path: Path, timeout_s: float) -> dict[str, Any]:
    """Upload a file through Gradio's own route; returns the FileData payload a browser sends."""
    import httpx

    with open(path, "rb") as f:
        r = httpx.post(f"{url}gradio_api/upload", files={"files": (path.name, f)}, timeout=timeout_s)
    r.raise_for_status()
    return {"path": r.json()[0], "orig_name": path.name, "meta": {"_type": "gradio.FileData"}}


class Stream:
    """One streaming event: `send(data)` -> that frame's outputs, `close()` ends the event. Raises AppError (the app's
    error line), TimeoutError, or httpx's errors; after an error the event is closed."""

    def __init__(self, url: str, api_name: str, session_hash: str | None, timeout_s: float) -> None:
        import httpx

        self.url, self.api_name, self.session_hash, self.timeout_s = url, api_name, session_hash, timeout_s
        self.http = httpx.Client(timeout=timeout_s)
        self.event_id: str | None = None
        self.lines: Any = None
        self.response: Any = None

    def send(self, data: list[Any]) -> Any:
        if self.event_id is None:
            body: dict[str, Any] = {"data": data}
            if self.session_hash:
                body["session_hash"] = self.session_hash
            r = self.http.post(f"{self.url}gradio_api/call/{self.api_name}", json=body)
            if r.status_code != 200:
                raise AppError(f"HTTP {r.status_code}: {r.text[:200]}")
            self.event_id = r.json()["event_id"]
            request = self.http.build_request("GET", f"{self.url}gradio_api/call/{self.api_name}/{self.event_id}")
            self.response = self.http.send(request, stream=True)
            self.lines = self.response.iter_lines()
        else:  # the browser's next frame: the event's inputs, the session state last (kept on the server)
            body = {"data": [*data, None], "session_hash": self.session_hash, "event_id": self.event_id}
            r = self.http.post(f"{self.url}gradio_api/stream/{self.event_id}", json=body)
            if r.status_code != 200:
                raise AppError(f"HTTP {r.status_code} from the running stream: {r.text[:200]}")
        return self._next(("generating", "complete", "error"))

    def _next(self, events: tuple[str, ...]) -> Any:
        deadline = time.monotonic() + self.timeout_s
        event = None
        for line in self.lines:
            if time.monotonic() > deadline:
                raise TimeoutError(f"no answer in {self.timeout_s:g} s")
            if line.startswith("event:"):
                event = line.split(":", 1)[1].strip()
            elif line.startswith("data:") and event in events:
                payload = json.loads(line[5:].strip() or "null")
                if event == "error":
                    text = payload.get("error") if isinstance(payload, dict) else payload
                    raise AppError(str(text) if text else "Error")
                return payload
        raise AppError(f"the event stream ended without an answer (last event: {event})")

    def close(self) -> None:
        """Stop recording: close the event on the server, then the connection."""
        try:
            if self.event_id is not None:
                self.http.post(f"{self.url}gradio_api/stream/{self.event_id}/close")
                self.timeout_s = min(self.timeout_s, CLOSE_WAIT_S)
                self._next(("complete",))  # the event has ended on the server before the connection goes
        except Exception:  # noqa: BLE001 - best effort: the app's time limit ends the event anyway
            pass
        finally:
            if self.response is not None:
                self.response.close()
            self.http.close()


def call(url: str, api_name: str, data: list[Any], session_hash: str | None, timeout_s: float) -> Any:
    """The endpoint's outputs; raises AppError (the app's error line), TimeoutError, or httpx's errors."""
    import httpx

    deadline = time.monotonic() + timeout_s
    body: dict[str, Any] = {"data": data}
    if session_hash:
        body["session_hash"] = session_hash
    r = httpx.post(f"{url}gradio_api/call/{api_name}", json=body, timeout=timeout_s)
    if r.status_code != 200:
        raise AppError(f"HTTP {r.status_code}: {r.text[:200]}")
    event_id = r.json()["event_id"]
    event = None
    with httpx.stream("GET", f"{url}gradio_api/call/{api_name}/{event_id}", timeout=timeout_s) as stream:
        for line in stream.iter_lines():
            if time.monotonic() > deadline:
                raise TimeoutError(f"no answer in {timeout_s:g} s")
            if line.startswith("event:"):
                event = line.split(":", 1)[1].strip()
            elif line.startswith("data:") and event in ("complete", "error"):
                payload = json.loads(line[5:].strip() or "null")
                if event == "error":
                    text = payload.get("error") if isinstance(payload, dict) else payload
                    raise AppError(str(text) if text else "Error")
                return payload
    raise AppError(f"the event stream ended without an answer (last event: {event})")
