"""Bounded caches: each visitor's cached runs are released when the session ends, and all of them together stay
within the memory budget (`--cache-mb`), least recently used released first.

The app runs in this process on the tiny checkpoints (127.0.0.1 only). A session is one `gradio_client.Client` (one
browser tab in real life); it ends when its heartbeat stops (`client.close()`; the heartbeat interval is shortened
to 0.5 s here, Gradio's default is 15 s), and then `demo.unload` releases its runs. Every wait is bounded.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("timm")
pytest.importorskip("transformers")
pytest.importorskip("gradio_client")

from gradio_client import Client, handle_file  # noqa: E402

from tests.support.apps import launched_app, wait_until  # noqa: E402
from vtdemo.ui import config as ui_config  # noqa: E402
from vtdemo.ui.common import RELEASED  # noqa: E402
from vtdemo.ui.sessions import RunIndex, footprint  # noqa: E402

pytestmark = pytest.mark.slow  # sessions that end by heartbeat: waits of seconds

ROOT = Path(__file__).resolve().parents[2]
CAT = str(ROOT / "assets" / "examples" / "chelsea.png")
ASTRONAUT = str(ROOT / "assets" / "examples" / "astronaut.png")
VIEW = ("mean", "last", "where it looks", 0.55)
END_S = 10.0  # a closed client's session is noticed and released within this long


@pytest.fixture(scope="module")
def app(tiny_hub):
    with launched_app(tiny_hub, env={"GRADIO_HEARTBEAT_INTERVAL": "0.5"}) as running:
        yield running


@contextlib.contextmanager
def event_listener():
    """Call handlers directly as the server does: inside an event listener, where `gr.Component(...)` is an update."""
    from gradio.context import LocalContext

    token = LocalContext.in_event_listener.set(True)
    try:
        yield
    finally:
        LocalContext.in_event_listener.reset(token)


@pytest.fixture
def in_event():
    with event_listener():
        yield


def _client(url: str) -> Client:
    return Client(url, verbose=False, download_files=False)


def _detect(client: Client, image: str = ASTRONAUT):
    return client.predict(handle_file(image), "", 0.3, [], 100, False, 0.5, *VIEW, api_name="/detect")


def known_to_gradio(demo, folder) -> bool:
    """Are the files in `folder` among those Gradio's `delete_cache` schedule removes when they are an hour old?"""
    tracked = {str(Path(f).resolve()) for files in demo.temp_file_sets for f in files}
    return any(str(p.resolve()) in tracked for p in folder.iterdir())


def _wait(condition, seconds: float = END_S) -> bool:
    return wait_until(condition, seconds)


def test_runs_are_released_when_the_session_ends(app):
    vt, url = app
    demo, runs = vt.demo, vt.services.runs
    a, b = _client(url), _client(url)
    try:
        _detect(a)
        a.predict(handle_file(CAT), "", "rollout", 0.5, api_name="/classify_vit")
        _detect(b, CAT)
        held = runs.runs_of(a.session_hash)
        assert set(held) == {"detect", "vit"} and set(runs.runs_of(b.session_hash)) == {"detect"}
        detect_state = held["detect"]
        folder = detect_state.canvas.folder
        assert folder.is_dir() and footprint(detect_state) > 0
        assert footprint(detect_state) >= sum(
            t.numel() * t.element_size() for t in detect_state.run.output.encoder_attn
        )
        rows = a.predict(0.5, [], 100, False, 0.5, api_name="/rerender")[2]["data"]  # the cache works
        assert rows

        a.close()  # the tab is closed: its heartbeat stops
        assert _wait(lambda: a.session_hash not in runs.sessions()), "the closed session still holds its runs"
        assert all(s.released and s.run is None for s in held.values())
        # the box view's files stay until Gradio's cache expiry (a client may still be downloading them), and
        # Gradio knows them, so its `delete_cache` schedule removes them
        assert folder.exists() and known_to_gradio(demo, folder)
        assert footprint(detect_state) == 0
        del held, detect_state

        # the other visitor is untouched
        assert set(runs.runs_of(b.session_hash)) == {"detect"}
        rows = b.predict(0.0, [], 100, False, 0.5, api_name="/rerender")[2]["data"]  # its cache still works
        assert rows and not runs.runs_of(b.session_hash)["detect"].released

        # a new photo replaces the old run (one per panel); the old one's files stay downloadable until expiry
        old_folder = runs.runs_of(b.session_hash)["detect"].canvas.folder
        _detect(b, ASTRONAUT)
        gc.collect()
        assert old_folder.exists() and runs.runs_of(b.session_hash)["detect"].canvas.folder.is_dir()
    finally:
        a.close()
        b.close()
    assert _wait(lambda: b.session_hash not in runs.sessions())


def test_gradio_deleting_a_state_releases_its_run(app):
    """When Gradio drops a state (its time to live ran out), `delete_callback` releases the run at once."""
    vt, url = app
    demo, runs = vt.demo, vt.services.runs
    c = _client(url)
    try:
        _detect(c, CAT)
        state = runs.runs_of(c.session_hash)["detect"]
        demo.state_holder.delete_state(c.session_hash)  # what Gradio does when the time to live has passed
        assert state.released and c.session_hash not in runs.sessions()
    finally:
        c.close()


def test_a_released_run_asks_for_the_photo_again(app, in_event):
    vt, _ = app
    h, runs = vt.detect, vt.services.runs
    state = h.detect(CAT, "", 0.3, [], 100, False, 0.5, *VIEW, request=SimpleNamespace(session_hash="visitor-x"))[
        h.state
    ]
    assert runs.runs_of("visitor-x") == {"detect": state}
    assert runs.end("visitor-x") == 1 and state.released
    with pytest.warns(UserWarning, match="released"):  # outside a real event, gr.Warning becomes a warning
        assert h.rerender(state, 0.5, [], 100, False, 0.5) == (h.rerender(None, 0.5, [], 100, False, 0.5))
    assert "run it again" in RELEASED


def test_the_budget_releases_the_least_recently_used_runs(tiny_hub, tmp_path, monkeypatch):
    """`--cache-mb 0`: only the newest run is kept; with room for two, the one used last survives."""
    import gradio as gr

    from vtdemo.ui.common import Services
    from vtdemo.ui.config import AppConfig
    from vtdemo.ui.detect.tab import DetectTab

    cache, repos = tiny_hub
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    services = Services(
        AppConfig(vit_model=repos["vit"], swin_model=repos["swin"], detr_model=repos["detr"], device="cpu", cache_mb=0)
    )
    with gr.Blocks():  # built as the app is, outside an event
        h = DetectTab(services, [], {})
    runs = services.runs
    with event_listener():  # the handlers run as inside an event

        def detect(photo, session):
            return h.detect(photo, "", 0.3, [], 100, False, 0.5, *VIEW, request=SimpleNamespace(session_hash=session))[
                h.state
            ]

        first, second = detect(CAT, "one"), detect(ASTRONAUT, "two")
        assert first.released and not second.released and runs.sessions() == {"two"}

        size = footprint(second)
        runs.budget_bytes = 2 * size + size // 2  # room for two DETR runs
        third = detect(CAT, "three")
        h.attention.attention_view(second, *VIEW)  # "two" is used again: now "three" is the least recently used
        fourth = detect(ASTRONAUT, "four")
        assert third.released and not second.released and not fourth.released
        assert runs.sessions() == {"two", "four"}  # (the index holds weak references: Gradio's State keeps runs alive)


@dataclasses.dataclass
class FakeRun:
    data: np.ndarray
    released: bool = False
    superseded: bool = False

    def release(self) -> None:
        self.data, self.released = None, True


def test_run_index_holds_weakly_and_replaces_per_slot():
    index = RunIndex(budget_bytes=1000)
    one, two = FakeRun(np.zeros(100, np.uint8)), FakeRun(np.zeros(100, np.uint8))
    index.hold("s", "detect", one)
    index.hold("s", "detect", two)  # a new photo in the same panel replaces the old run
    assert index.runs_of("s") == {"detect": two} and not one.released and index.nbytes() == 100
    del two
    gc.collect()
    assert index.sessions() == set() and index.nbytes() == 0  # the index never keeps a run alive
    three = FakeRun(np.zeros(600, np.uint8))
    four = FakeRun(np.zeros(600, np.uint8))
    index.hold("a", "vit", three)
    index.hold("b", "vit", four)  # 1200 > 1000: the older goes
    assert three.released and not four.released and index.released == 1
    index.forget(four)
    assert four.released and index.sessions() == set()


def test_limits_have_defaults_and_can_be_changed(monkeypatch, app):
    for name in ("VTDEMO_CACHE_MB", "VTDEMO_MAX_SESSIONS"):
        monkeypatch.delenv(name, raising=False)
    cfg = ui_config.from_args([])
    assert (cfg.cache_mb, cfg.max_sessions) == (2048, 1000)
    monkeypatch.setenv("VTDEMO_CACHE_MB", "512")
    monkeypatch.setenv("VTDEMO_MAX_SESSIONS", "50")
    assert (ui_config.from_args([]).cache_mb, ui_config.from_args([]).max_sessions) == (512, 50)
    assert ui_config.from_args(["--cache-mb", "64", "--max-sessions", "7"]).cache_mb == 64
    with pytest.raises(SystemExit):
        ui_config.from_args(["--max-sessions", "0"])
    vt, _ = app
    assert vt.demo.state_session_capacity == 1000 and vt.demo.state_holder.capacity == 1000
    assert vt.services.runs.budget_bytes == 2048 * 2**20


def test_a_view_of_a_replaced_run_writes_nothing(app, in_event):
    """The visitor moved a slider, then ran another photo before that re-render ended (Gradio runs view and model
    events of one session concurrently): the late view of the old run must not land over the new one (it once put
    the old photo's legend back, CI run of stop 16). Every output of such a handler is `gr.skip()`."""
    vt, _ = app
    h, runs = vt.detect, vt.services.runs
    visitor = SimpleNamespace(session_hash="visitor-late")
    old = h.detect(CAT, "", 0.3, [], 100, False, 0.5, *VIEW, request=visitor)[h.state]
    new = h.detect(ASTRONAUT, "", 0.3, [], 100, False, 0.5, *VIEW, request=visitor)[h.state]
    assert old.superseded and not new.superseded and runs.runs_of("visitor-late") == {"detect": new}
    skip = {"__type__": "update"}
    for late in (h.rerender(old, 0.5, [], 100, False, 0.5), h.masks.render(old, 0.5)):
        assert late and all(v == skip for v in late.values()), late
    current = h.rerender(new, 0.5, [], 100, False, 0.5)
    assert current[h.state] is new and current[h.count] != skip
    assert h.masks.render(new, 0.5)[h.masks.legend] != skip  # "Masks need a panoptic model"
    runs.end("visitor-late")


def test_fresh_drops_outputs_when_the_run_is_replaced_during_the_work():
    from vtdemo.ui.common import fresh

    index = RunIndex(budget_bytes=10**6)
    old, new = FakeRun(np.zeros(1, np.uint8)), FakeRun(np.zeros(1, np.uint8))
    index.hold("s", "vit", old)

    @fresh
    def view(state):  # a newer photo arrives while this view renders
        index.hold("s", "vit", new)
        return {"legend": "old photo's legend", "state": state}

    assert view(old) == {"legend": {"__type__": "update"}, "state": {"__type__": "update"}}

    @fresh
    def steps(state):
        yield {"text": "first"}
        index.hold("s", "vit", FakeRun(np.zeros(1, np.uint8)))
        yield {"text": "second"}
        yield {"text": "never"}

    assert list(steps(new)) == [{"text": "first"}, {"text": {"__type__": "update"}}]
    # a run derived from a replaced one (the same photo at another size) is not held over the newer run
    assert not index.hold("s", "vit", FakeRun(np.zeros(1, np.uint8)), replacing=old)
    assert index.hold("s", "vit", FakeRun(np.zeros(1, np.uint8)), replacing=None)


@dataclasses.dataclass
class FakeState:
    run: object
    released: bool = False
    superseded: bool = False

    def release(self) -> None:
        self.released = True


def test_an_evicted_model_releases_only_its_own_runs():
    """The fast model and its exact twin (loaded for a gradient method) share an id, not their memory: evicting the
    twin leaves the runs of the fast one (the first-visit tier lost the shown top 5 when it did not)."""
    fast, twin, other = (SimpleNamespace(id="org/vit") for _ in range(3))
    index = RunIndex(budget_bytes=10**6)
    shown, derived = FakeState(SimpleNamespace(loaded=fast)), FakeState(SimpleNamespace(loaded=other))
    resized = FakeState(SimpleNamespace(loaded=SimpleNamespace(id="org/vit"), model_as_loaded=fast))
    index.hold("s", "vit", shown, nbytes=1)
    index.hold("s", "swin", resized, nbytes=1)
    index.hold("t", "vit", derived, nbytes=1)
    assert index.release_model(twin) == 0 and not (shown.released or resized.released or derived.released)
    assert index.release_model(fast) == 2 and shown.released and resized.released and not derived.released
