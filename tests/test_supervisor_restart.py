"""The supervisor restarts a consumer that dies or hangs, and keeps the daq and recorder going.

Real processes on the simulated rig (`up` as `demo --record --headless` runs it); every
wait polls with a timeout (tests/polling.py).
"""

from __future__ import annotations

import os
import signal
import threading
import tomllib
from pathlib import Path
from typing import Any, Callable

import pytest

from cortexcast.app.bench import free_ports
from cortexcast.app.launcher import StackSettings, run_stack, write_sim_config
from cortexcast.app.supervisor import RestartPolicy, Supervisor
from cortexcast.core.config import ConfigError, load_settings
from cortexcast.core.tomlwrite import dumps
from cortexcast.decoder.live.process import BUNDLED_MODEL

from polling import wait_for

needs_model = pytest.mark.skipif(not BUNDLED_MODEL.exists(), reason="bundled model not built")
HEARTBEATERS = ("daq", "decoder", "record")


# -- settings -----------------------------------------------------------------

def test_defaults_restart_consumers_and_end_on_daq_or_recorder() -> None:
    policy = RestartPolicy()
    assert [policy.action(n) for n in ("decoder", "display", "loop", "lsl")] == ["restart"] * 4
    assert policy.action("daq") == policy.action("record") == "end_session"
    assert RestartPolicy(on_exit={"daq": "ignore"}).action("daq") == "ignore"


@pytest.mark.parametrize("table, message", [
    ({"on_exit": {"display": "restrat"}}, "on_exit.display = 'restrat': must be one of"),
    ({"on_exit": {"dispaly": "restart"}}, "on_exit names unknown process 'dispaly'"),
    ({"restart_limit": -1}, "restart_limit must be >= 0"),
    ({"restart_window_s": 0}, "restart_window_s must be > 0"),
    ({"restart_backoff_s": -0.1}, "restart_backoff_s must be >= 0"),
    ({"hang_after_s": 0.3}, "hang_after_s must be 0 (off) or at least 1 s"),
    ({"on_exit": "restart"}, "expected a table"),
])
def test_bad_restart_settings_fail_with_the_key_named(tmp_path: Path, table: dict[str, Any],
                                                      message: str) -> None:
    cfg = tmp_path / "rig.toml"
    cfg.write_text(dumps({"stack": {"processes": ["daq"], **table}}))
    with pytest.raises(ConfigError, match="stack") as err:
        load_settings(StackSettings, cfg, "stack")
    assert message in str(err.value)


def test_restart_settings_load_from_toml(tmp_path: Path) -> None:
    cfg = tmp_path / "rig.toml"
    cfg.write_text("[stack]\nprocesses = ['daq', 'record']\nrestart_limit = 2\n"
                   "hang_after_s = 0\n[stack.on_exit]\nrecord = 'ignore'\ndaq = 'restart'\n")
    s = load_settings(StackSettings, cfg, "stack")
    assert s.on_exit == {"record": "ignore", "daq": "restart"}
    assert (s.restart_limit, s.hang_after_s) == (2, 0.0)


# -- real stacks --------------------------------------------------------------

def _sim_stack(tmp_path: Path, **stack: Any) -> tuple[Path, Path]:
    http, daq, dec = free_ports(3)
    rec = tmp_path / "session.ccr"
    cfg = write_sim_config(tmp_path / "run", headless=True, port=http, daq_port=daq,
                           decoder_port=dec, record=str(rec))
    data = tomllib.loads(cfg.read_text())
    data["stack"].update(stack)
    cfg.write_text(dumps(data))
    return cfg, rec


def _run_with(cfg: Path, act: Callable[[Supervisor], None]) -> tuple[int, dict[str, Any]]:
    """run_stack with ``act(sup)`` in a thread once started; it stops the session after."""
    errors: list[BaseException] = []

    def body(sup: Supervisor) -> None:
        try:
            wait_for(lambda: all(sup.children[n].last_beat for n in HEARTBEATERS), 30,
                     "every process's first heartbeat")
            act(sup)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test's thread
            errors.append(exc)
        finally:
            sup.request_stop()

    threads: list[threading.Thread] = []

    def start(sup: Supervisor) -> None:
        threads.append(threading.Thread(target=body, args=(sup,), daemon=True))
        threads[0].start()

    code, summary = run_stack(cfg, 90, quiet=True, on_start=start)
    threads[0].join(10)
    if errors:
        raise errors[0]
    return code, summary


@pytest.mark.slow
@needs_model
def test_killed_display_is_restarted_while_daq_and_recording_go_on(tmp_path: Path) -> None:
    from cortexcast.stream.recording import RecordingReader

    cfg, rec = _sim_stack(tmp_path)
    seen: dict[str, Any] = {}

    def act(sup: Supervisor) -> None:
        display, daq = sup.children["display"], sup.children["daq"]
        daq_pid = daq.popen.pid
        os.kill(display.popen.pid, signal.SIGKILL)
        wait_for(lambda: display.incarnation == 1 and display.popen.poll() is None, 10,
                 "the display restarted")
        size = rec.stat().st_size
        wait_for(lambda: rec.stat().st_size > size + 100_000, 10, "the recording to grow")
        seen["daq"] = (daq.popen.pid == daq_pid, daq.popen.poll(), daq.incarnation)

    code, summary = _run_with(cfg, act)
    assert seen["daq"] == (True, None, 0)  # the same daq, still running
    assert code == 0 and summary["failed"] == [], summary["reason"]
    r = summary["restarts"]["display"]
    assert r["restarts"] == 1 and r["events"][0]["cause"] == "killed by SIGKILL"
    assert r["events"][0]["action"] == "restart" and r["down_s"] < 5
    assert set(summary["restarts"]) == {"display"}
    assert (tmp_path / "run" / "display.1.json").exists()  # its own stats file
    log = (tmp_path / "run" / "display.log").read_text()
    assert "restart 1 of display" in log
    with RecordingReader(rec) as reader:
        assert reader.counts()["frames"] == summary["frames_acquired"]  # nothing lost


@pytest.mark.slow
@needs_model
@pytest.mark.skipif(os.name == "nt", reason="SIGSTOP is POSIX-only")
def test_stopped_decoder_is_reported_as_hung_and_restarted(tmp_path: Path) -> None:
    cfg, _ = _sim_stack(tmp_path, hang_after_s=1.0)

    def act(sup: Supervisor) -> None:
        dec = sup.children["decoder"]
        os.kill(dec.popen.pid, signal.SIGSTOP)  # not dead, just silent
        wait_for(lambda: dec.incarnation == 1 and dec.last_beat is not None, 15,
                 "the hung decoder replaced and beating")

    code, summary = _run_with(cfg, act)
    assert code == 0, summary["reason"]
    event = summary["restarts"]["decoder"]["events"][0]
    assert event["cause"].startswith("hung (no heartbeat for "), event
    assert event["up_by"] == "heartbeat" and 0 < event["down_s"] < 5
    assert "daq" not in summary["restarts"] and "record" not in summary["restarts"]


@pytest.mark.slow
def test_restart_limit_ends_the_session_with_the_reason(tmp_path: Path) -> None:
    """A decoder that dies at every start (a damaged model) is restarted `restart_limit`
    times, then the session ends saying so."""
    from cortexcast.core.rois import save_rois
    from cortexcast.daq.sim.rig import SimulatedRig
    from cortexcast.daq.sim.settings import SimSettings
    from cortexcast.decoder.training.synthetic import write_linear_model

    rois = tmp_path / "rois.npz"
    save_rois(rois, SimulatedRig(SimSettings(n_neurons=200, frame_height=64,
                                             frame_width=64)).rois())
    model = write_linear_model(tmp_path / "broken.onnx", neurons=200, window=2, lag=1)
    model.write_bytes(b"not an onnx model")
    daq, dec = free_ports(2)
    cfg = tmp_path / "rig.toml"
    cfg.write_text(
        f"[stack]\nprocesses = ['decoder', 'daq']\nrun_dir = '{tmp_path / 'run'}'\n"
        "restart_limit = 2\nrestart_backoff_s = 0.05\n"
        f"[daq]\npublish = 'tcp://127.0.0.1:{daq}'\n"
        "[daq.sim]\nn_neurons = 200\nframe_height = 64\nframe_width = 64\n"
        f"[decoder]\nframes_from = 'tcp://127.0.0.1:{daq}'\npublish = 'tcp://127.0.0.1:{dec}'\n"
        f"rois = '{rois}'\nmodel = '{model}'\n")
    code, summary = run_stack(cfg, 60, quiet=True)
    assert code == 1 and summary["failed"] == ["decoder"]
    assert summary["reason"].startswith("restart limit reached: decoder died 3 times in 60 s")
    events = summary["restarts"]["decoder"]["events"]
    assert [e["action"] for e in events] == ["restart", "restart", "gave up"]
    assert summary["restarts"]["decoder"]["restarts"] == 2
    assert (tmp_path / "run" / "decoder.log").read_text().count("restart ") >= 2


@pytest.mark.slow
@needs_model
def test_restarted_recorder_writes_a_new_file_and_keeps_the_first(tmp_path: Path) -> None:
    from cortexcast.stream.recording import RecordingReader

    cfg, rec = _sim_stack(tmp_path, on_exit={"record": "restart"})
    second = rec.with_name("session.1.ccr")

    def act(sup: Supervisor) -> None:
        wait_for(lambda: rec.exists() and rec.stat().st_size > 500_000, 15, "data recorded")
        os.kill(sup.children["record"].popen.pid, signal.SIGKILL)
        wait_for(lambda: second.exists() and second.stat().st_size > 500_000, 15,
                 "the restarted recorder writing its own file")

    code, summary = _run_with(cfg, act)
    assert code == 0, summary["reason"]
    assert summary["restarts"]["record"]["restarts"] == 1
    with RecordingReader(rec) as first, RecordingReader(second) as after:
        assert first.counts()["frames"] > 0 and after.counts()["frames"] > 0
