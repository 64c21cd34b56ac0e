"""`cortexcast doctor` checks the eye tracker of [daq.behavior] with the daq's own behaviour
source: readings over UDP or LSL (OK), none (WARN), malformed ones (FAIL)."""

from __future__ import annotations

import json
import socket
import threading
from pathlib import Path

import pytest

from cortexcast.app.doctor import run_checks


def _config(tmp_path: Path, behavior: str) -> Path:
    cfg = tmp_path / "rig.toml"
    cfg.write_text('[daq]\nsync = ["behavior"]\n[daq.behavior]\n' + behavior)
    return cfg


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Sender:
    """Sends one datagram every 20 ms to a port until stopped (an eye tracker)."""

    def __init__(self, port: int, payload: bytes) -> None:
        self.stop = threading.Event()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.thread = threading.Thread(target=self._run, args=(port, payload), daemon=True)
        self.thread.start()

    def _run(self, port: int, payload: bytes) -> None:
        while not self.stop.wait(0.02):
            self.sock.sendto(payload, ("127.0.0.1", port))

    def close(self) -> None:
        self.stop.set()
        self.thread.join(2.0)
        self.sock.close()


def _eye(checks) -> list:
    return [c for c in checks if c.name == "eye tracker"]


def test_udp_readings_are_ok(tmp_path: Path) -> None:
    port = _free_udp_port()
    sender = Sender(port, json.dumps({"v": 1, "pupil": 40.0, "pupil_x": 1.0,
                                      "pupil_y": 2.0}).encode())
    try:
        checks = _eye(run_checks(_config(tmp_path, f'listen = "127.0.0.1:{port}"\n'), 3.0))
    finally:
        sender.close()
    assert [c.status for c in checks] == ["OK"], checks
    assert f"127.0.0.1:{port}" in checks[0].detail


def test_no_eye_tracker_is_a_warning_naming_the_address(tmp_path: Path) -> None:
    port = _free_udp_port()
    checks = _eye(run_checks(_config(tmp_path, f'listen = "127.0.0.1:{port}"\n'), 0.3))
    assert [c.status for c in checks] == ["WARN"], checks
    assert f"127.0.0.1:{port}" in checks[0].fix


def test_malformed_datagrams_fail(tmp_path: Path) -> None:
    port = _free_udp_port()
    sender = Sender(port, b"\xff not json")
    try:
        checks = _eye(run_checks(_config(tmp_path, f'listen = "127.0.0.1:{port}"\n'), 0.5))
    finally:
        sender.close()
    assert [c.status for c in checks] == ["FAIL"], checks


def test_a_port_in_use_fails_with_the_fix(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as holder:
        holder.bind(("127.0.0.1", 0))
        port = holder.getsockname()[1]
        checks = _eye(run_checks(_config(tmp_path, f'listen = "127.0.0.1:{port}"\n'), 0.3))
    assert [c.status for c in checks] == ["FAIL"], checks
    assert "port" in checks[0].fix


def test_an_lsl_stream_is_found_and_read(tmp_path: Path) -> None:
    pylsl = pytest.importorskip("pylsl")
    name = f"doctor-eye-{tmp_path.name}"
    outlet = pylsl.StreamOutlet(pylsl.StreamInfo(name, "Gaze", 3, 50, "float32", name))
    stop = threading.Event()

    def push() -> None:
        while not stop.wait(0.02):
            outlet.push_sample([40.0, 1.0, 2.0])

    pusher = threading.Thread(target=push, daemon=True)
    pusher.start()
    try:
        checks = _eye(run_checks(_config(tmp_path, f'mode = "lsl"\nlsl_name = "{name}"\n'),
                                 5.0))
    finally:
        stop.set()
        pusher.join(2.0)
    assert [c.status for c in checks] == ["OK"], checks
    assert name in checks[0].detail
