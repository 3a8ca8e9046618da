"""The endpoint's state store (server/endpoint/store.py) on real SQLite files: changes come back
after a restart, in order, with who made them; rollback's target; and a change that was
acknowledged survives kill -9 of the process that made it."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap

from hearth.server.endpoint.store import DB_NAME, EndpointStore

STATE = {"deployments": {"blue": {}, "green": {}}, "traffic": {"blue": 100, "green": 0}, "mirror_traffic": {}}


def _state(blue: int, green: int) -> dict:
    return {**STATE, "traffic": {"blue": blue, "green": green}}


def test_changes_survive_a_restart_in_order(tmp_path):
    store = EndpointStore(tmp_path / "state")
    assert store.latest() is None
    store.record("init", {"file": "endpoint.yaml"}, _state(100, 0))
    store.record("traffic", {"traffic": {"blue": 90, "green": 10}}, _state(90, 10), key_id="ab12cd34")
    store.record("mirror", {"mirror_traffic": {"green": 0}}, _state(90, 10), key_id="ab12cd34")
    store.close()

    again = EndpointStore(tmp_path / "state")
    assert (tmp_path / "state" / DB_NAME).exists()
    latest = again.latest()
    assert latest.kind == "mirror" and latest.state["traffic"] == {"blue": 90, "green": 10}
    assert [c.kind for c in again.history()] == ["init", "traffic", "mirror"]
    assert [c.key_id for c in again.history()] == [None, "ab12cd34", "ab12cd34"]
    assert [c.kind for c in again.history(limit=2)] == ["traffic", "mirror"]
    assert again.history(since=latest.at + 1) == []
    assert all(a.id < b.id and a.at <= b.at for a, b in zip(again.history(), again.history()[1:]))


def test_rollback_returns_to_the_traffic_before_the_last_traffic_change(tmp_path):
    store = EndpointStore(tmp_path)
    store.record("init", {}, _state(100, 0))
    assert store.traffic_before_last_change() is None  # nothing to roll back to
    store.record("traffic", {}, _state(90, 10))
    store.record("mirror", {}, _state(90, 10))  # not a traffic change: rollback looks past it
    assert store.traffic_before_last_change() == {"blue": 100, "green": 0}
    store.record("traffic", {}, _state(50, 50))
    assert store.traffic_before_last_change() == {"blue": 90, "green": 10}
    store.record("rollback", {"to": {"blue": 90, "green": 10}}, _state(90, 10))
    assert store.traffic_before_last_change() == {"blue": 50, "green": 50}  # a second rollback undoes the first


def test_an_acknowledged_change_survives_kill_9(tmp_path):
    script = textwrap.dedent(f"""
        import os, sys, time
        from hearth.server.endpoint.store import EndpointStore
        store = EndpointStore({str(tmp_path)!r})
        for i in range(100_000):
            store.record("traffic", {{"i": i}}, {{"traffic": {{"blue": i % 101, "green": 100 - i % 101}}}})
            print(i, flush=True)  # acknowledged: the commit returned
        time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    acked = -1
    for line in proc.stdout:
        acked = int(line)
        if acked == 30:
            break
    proc.send_signal(signal.SIGKILL)  # mid-stream: it is writing the next changes right now
    proc.wait(10)
    store = EndpointStore(tmp_path)
    done = [c.detail["i"] for c in store.history(limit=1_000_000)]
    assert done == list(range(len(done))) and len(done) > acked, (acked, done[-3:])  # every acked one, in order
