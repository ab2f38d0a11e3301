"""`vtdemo.ui.priority`: a model call raises the nice of every thread but the event loop's and the main thread's.

Run in a subprocess so that the test session's own threads keep their priority. The layout mimics the app: an event
loop (anyio) in a thread of its own, a handler in one of its worker threads, and a thread pool of the kind PyTorch
and OpenVINO start (a thread that exists before the call)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice values are Linux's")

SCRIPT = r"""
import json, os, sys, threading
import anyio, anyio.to_thread
from vtdemo.ui import priority

priority.configure(int(sys.argv[1]))
nice = lambda tid: os.getpriority(os.PRIO_PROCESS, tid)
pool_ready, stop = threading.Event(), threading.Event()
ids = {"main": threading.get_native_id()}

def pool():  # a compute thread that exists before the model call
    ids["pool"] = threading.get_native_id(); pool_ready.set(); stop.wait()

def handler():
    ids["worker"] = threading.get_native_id()
    return priority.yield_to_event_loop()

async def serve():
    ids["loop"] = threading.get_native_id()
    ids["changed"] = await anyio.to_thread.run_sync(handler)
    ids["after"] = {k: nice(v) for k, v in ids.items() if k != "changed"}  # every thread still alive

threading.Thread(target=pool, daemon=True).start(); pool_ready.wait()
direct = priority.yield_to_event_loop()  # not from a worker of an event loop: nothing to spare, nothing changed
server = threading.Thread(target=anyio.run, args=(serve,)); server.start(); server.join()
base = os.getpriority(os.PRIO_PROCESS, 0)
print(json.dumps({"nice": ids["after"], "changed": ids["changed"], "direct": direct, "base": base}))
stop.set()
"""


def run(nice: int) -> dict:
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(nice)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_model_threads_yield_to_the_event_loop():
    got = run(10)
    base = got["base"]
    assert base < 10  # the test needs a process not already at nice 10
    assert got["direct"] == 0
    assert got["nice"]["loop"] == base and got["nice"]["main"] == base  # spared
    assert got["nice"]["worker"] == 10 and got["nice"]["pool"] == 10  # the model call's thread and the pool
    assert got["changed"] >= 2


def test_zero_turns_it_off():
    got = run(0)
    assert got["changed"] == 0 and set(got["nice"].values()) == {got["base"]}


BACKGROUND = r"""
import json, os, sys, threading
from vtdemo.ui import priority

priority.configure(int(sys.argv[1]))
nice = lambda tid: os.getpriority(os.PRIO_PROCESS, tid)
got = {}

def background():  # the warm-up's thread, and a pool thread it starts (as OpenVINO's would be)
    got["changed"] = priority.lower_this_thread()
    got["self"] = nice(threading.get_native_id())
    child = threading.Thread(target=lambda: got.update(child=nice(threading.get_native_id())))
    child.start(); child.join()

worker = threading.Thread(target=background); worker.start(); worker.join()
got["main"] = nice(threading.get_native_id())
print(json.dumps(got))
"""


@pytest.mark.parametrize("configured", [10, 0])
def test_a_background_thread_lowers_itself_and_what_it_starts(configured):
    args = [sys.executable, "-c", BACKGROUND, str(configured)]
    done = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout.strip().splitlines()[-1])
    base = got["main"]
    assert base < 10  # the main thread is left as it is
    if configured:
        assert got["changed"] and got["self"] == 10 and got["child"] == 10
    else:
        assert not got["changed"] and got["self"] == base and got["child"] == base


def test_on_by_default_on_a_space_only(monkeypatch):
    from vtdemo.ui.config import AppConfig, from_args, model_nice_default

    monkeypatch.delenv("VTDEMO_MODEL_NICE", raising=False)
    monkeypatch.delenv("SPACE_ID", raising=False)
    assert model_nice_default() == 0 and AppConfig().model_nice is None
    monkeypatch.setenv("SPACE_ID", "someone/vtdemo")
    assert model_nice_default() == 10
    monkeypatch.setenv("VTDEMO_MODEL_NICE", "0")
    assert from_args([]).model_nice == 0  # an operator's value wins
    with pytest.raises(SystemExit, match="at most 19"):
        from_args(["--model-nice", "25"])


def test_the_warm_up_is_on_by_default_on_a_space_only(monkeypatch):
    from vtdemo.ui.config import AppConfig, from_args, warm_up_default

    monkeypatch.delenv("VTDEMO_WARM_UP", raising=False)
    monkeypatch.delenv("SPACE_ID", raising=False)
    assert not warm_up_default() and not AppConfig().warms_up
    assert from_args(["--warm-up"]).warms_up  # asked for on a desktop
    monkeypatch.setenv("SPACE_ID", "someone/vtdemo")
    assert warm_up_default() and AppConfig().warms_up and from_args([]).warms_up
    monkeypatch.setenv("VTDEMO_WARM_UP", "0")
    assert not from_args([]).warms_up  # an operator's value wins


def test_visitor_calls_are_quiet_only_when_none_runs_and_none_ended_lately():
    from vtdemo.ui.common import VisitorCalls

    calls = VisitorCalls()
    assert calls.quiet_for(2.0)  # none yet
    with calls.call():
        assert not calls.quiet_for(0.0)
        with calls.call():
            assert calls.running == 2
    assert calls.running == 0 and not calls.quiet_for(60.0) and calls.quiet_for(0.0)
