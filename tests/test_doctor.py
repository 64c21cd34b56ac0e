"""`cortexcast doctor`: a good sim config passes, a broken one fails with fixes, hardware
that is absent is reported (not raised), NI through create_autospec fakes, ScanImage
through a process that publishes ScanImage's bytes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
from nidaqmx.system import System
from nidaqmx.system.device import Device

from cortexcast.app.bench import free_ports
from cortexcast.app.doctor import check_scanimage, RigFacts, format_report, run_checks
from cortexcast.decoder.live.process import BUNDLED_MODEL
from test_triggers import FakeDevice

needs_model = pytest.mark.skipif(not BUNDLED_MODEL.exists(), reason="bundled model not built")


def _doctor(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cortexcast", "doctor", *args], env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def sim_config(tmp_path_factory) -> Path:
    from cortexcast.app.launcher import write_sim_config

    run = tmp_path_factory.mktemp("sim")
    daq, dec = free_ports(2)
    return write_sim_config(run, headless=True, daq_port=daq, decoder_port=dec)


def by_name(checks, name):
    return [c for c in checks if c.name == name]


@needs_model
def test_sim_config_passes(sim_config: Path, cli_env) -> None:
    loop = sim_config.parent / "with_loop.toml"
    np.save(sim_config.parent / "target.npy", np.random.default_rng(0).random((36, 64)))
    loop.write_text(sim_config.read_text() + """
[loop]
outputs = [{ name = "sim", kind = "log" }]
rules = [{ name = "r", kind = "correlation", target = "target.npy", threshold = 0.5, output = "sim" }]
""")
    res = _doctor([str(loop), "--json", str(sim_config.parent / "doctor.json")], cli_env)
    assert res.returncode == 0, res.stdout + res.stderr
    out = res.stdout
    assert "FAIL" not in out.replace("0 FAIL", "") and "Traceback" not in res.stderr
    assert "OK    config" in out and "[loop]" in out
    assert "7800 ROIs" in out and "512x512 frames = the frame size" in out
    assert "cortexcast_sim.onnx" in out and "p50" in out
    assert "rule 'r' (correlation" in out
    assert "NI" in out  # the NI line is there, whatever this machine has
    import json
    report = json.loads((sim_config.parent / "doctor.json").read_text())
    assert {c["status"] for c in report["checks"]} <= {"OK", "WARN"}


@needs_model
def test_broken_config_fails_with_fixes(sim_config: Path, tmp_path: Path, cli_env) -> None:
    text = sim_config.read_text().replace("frame_height = 512", "frame_height = 256")
    bad = tmp_path / "broken.toml"
    bad.write_text(text + f"""
[loop]

[[loop.outputs]]
name = "ttl"
kind = "ni-ttl"
ni = {{ line = "Dev3/port0/line1" }}

[[loop.outputs]]
name = "arduino"
kind = "serial"
serial = {{ port = "{tmp_path / 'ttyACM9'}", command = "GO" }}

[[loop.rules]]
name = "a"
kind = "brightness"
rect = [0, 4, 0, 4]
threshold = 9.0
output = "ttl"

[[loop.rules]]
name = "b"
kind = "correlation"
target = "missing.png"
threshold = 0.2
output = "arduino"
""")
    res = _doctor([str(bad)], cli_env)
    assert res.returncode == 1, res.stdout + res.stderr
    out = res.stdout
    assert "Traceback" not in res.stderr
    assert "drawn on 512x512 frames, but the frames are 256x512" in out
    assert f"{tmp_path / 'ttyACM9'} (loop output 'arduino') not found" in out
    assert "missing.png does not exist" in out
    assert out.count("fix:") >= 3
    # NI: either no driver (FAIL: this config needs Dev3) or no Dev3 on this machine
    assert "Dev3" in out and "FAIL  NI" in out


def test_bad_key_and_missing_file_fail_without_traceback(tmp_path: Path, cli_env) -> None:
    cfg = tmp_path / "rig.toml"
    cfg.write_text("[daq]\nsource = 'sim'\npublsh = 'tcp://127.0.0.1:5555'\n")
    res = _doctor([str(cfg)], cli_env)
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert "unknown key 'publsh'" in res.stdout
    res = _doctor([str(tmp_path / "nope.toml")], cli_env)
    assert res.returncode == 1 and "config file not found" in res.stdout


def _ni_system(*devices: tuple[str, str, list[str]]) -> mock.NonCallableMagicMock:
    """A strict fake of nidaqmx.system.System listing fake Devices."""
    system = mock.create_autospec(System, instance=True)
    fakes = []
    for name, product, lines in devices:
        dev = mock.create_autospec(Device, instance=True)
        dev.name = name
        dev.product_type = product
        dev.do_lines.channel_names = lines
        fakes.append(dev)
    system.devices = fakes
    return system


def _loop_config(tmp_path: Path, outputs: str) -> Path:
    cfg = tmp_path / "loop.toml"
    cfg.write_text(f"""
[loop]
outputs = [{outputs}]
rules = [{{ name = "r", kind = "brightness", rect = [0, 36, 0, 64], threshold = 1.0, output = "o" }}]
""")
    return cfg


def test_ni_devices_listed_and_configured_line_checked(tmp_path: Path) -> None:
    system = _ni_system(("Dev1", "PCIe-6363", ["Dev1/port0/line0", "Dev1/port0/line1"]),
                        ("Dev2", "USB-6001", []))
    ok = _loop_config(tmp_path, '{ name = "o", kind = "ni-ttl", ni = { line = "Dev1/port0/line1" } }')
    checks = by_name(run_checks(ok, ni_system=lambda: system), "NI devices")
    assert [c.status for c in checks] == ["OK", "OK"], checks
    assert "Dev1 (PCIe-6363), Dev2 (USB-6001)" in checks[0].detail
    missing = _loop_config(tmp_path, '{ name = "o", kind = "ni-ttl", ni = { line = "Dev4/port0/line0" } }')
    checks = by_name(run_checks(missing, ni_system=lambda: system), "NI devices")
    assert checks[-1].status == "FAIL" and "Dev4" in checks[-1].detail
    assert "Dev1/port0/line0" in checks[-1].fix
    no_line = _loop_config(tmp_path, '{ name = "o", kind = "ni-ttl", ni = { line = "Dev1/port0/line7" } }')
    checks = by_name(run_checks(no_line, ni_system=lambda: system), "NI devices")
    assert checks[-1].status == "FAIL" and "not a digital output line" in checks[-1].detail


def test_no_ni_driver_is_calm(tmp_path: Path) -> None:
    import nidaqmx.errors

    def no_driver():
        raise nidaqmx.errors.DaqNotFoundError("Could not find an installation of NI-DAQmx.")

    checks = run_checks(None, ni_system=no_driver)
    ni = by_name(checks, "NI-DAQmx")[0]
    assert ni.status == "WARN" and "no NI-DAQmx driver" in ni.detail and "ni.com" in ni.fix
    cfg = _loop_config(tmp_path, '{ name = "o", kind = "ni-ttl" }')
    ni = by_name(run_checks(cfg, ni_system=no_driver), "NI-DAQmx")[0]
    assert ni.status == "FAIL" and "needed by loop output 'o' (Dev1/port0/line0)" in ni.detail


def test_configured_serial_port_present(tmp_path: Path) -> None:
    device = FakeDevice(tmp_path / "ttyACM0")
    try:
        cfg = _loop_config(tmp_path, f'{{ name = "o", kind = "serial", serial = {{ port = '
                                     f'"{device.link}", command = "GO" }} }}')
        checks = by_name(run_checks(cfg), "serial ports")
        assert checks[-1].status == "OK" and "present" in checks[-1].detail
    finally:
        device.close()


SCANIMAGE_STANDIN = """
import sys, time
import numpy as np, zmq
from cortexcast.daq.scanimage.messages import pack_scanimage_message
sock = zmq.Context().socket(zmq.PUB)
sock.bind(sys.argv[1])
print("bound", flush=True)
frame = np.arange(2 * 48 * 80, dtype=np.int16).reshape(2, 48, 80)  # 2 channels, 48 x 80
n = 1
while True:  # ScanImage streams at the frame rate
    sock.send(pack_scanimage_message(n, n / 30.0, frame))
    n += 1
    time.sleep(1 / 30)
"""


@needs_model
def test_scanimage_endpoint_reports_frames_seen(sim_config: Path, tmp_path: Path,
                                                cli_env) -> None:
    pytest.importorskip("cortexcast.daq.scanimage.messages")
    port = free_ports(1)[0]
    endpoint = f"tcp://127.0.0.1:{port}"
    cfg = tmp_path / "rig.toml"
    cfg.write_text(f"""
[daq]
source = "scanimage"
[daq.scanimage]
endpoint = "{endpoint}"
channel = 2
[decoder]
rois = "{sim_config.parent / 'rois.npz'}"
""")
    proc = subprocess.Popen([sys.executable, "-c", SCANIMAGE_STANDIN, endpoint], env=cli_env,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "bound"
        facts = RigFacts({}, {})
        checks = check_scanimage(facts, endpoint, "scanimage", 2, timeout_s=10)
        whole = run_checks(cfg, timeout_s=10)
    finally:
        proc.kill()
        proc.communicate()  # reaps it and closes the pipe
    assert checks[0].status == "OK", checks
    assert "frames 48x80" in checks[0].detail
    assert f"{40 + 2 * 2 * 48 * 80}..{40 + 2 * 2 * 48 * 80} bytes" in checks[0].detail
    assert facts.frame_shape == (48, 80)
    assert by_name(whole, "ScanImage")[0].status == "OK"
    rois = by_name(whole, "ROIs")[0]  # the sim's ROIs do not fit these frames
    assert rois.status == "FAIL" and "drawn on 512x512 frames, but the frames are 48x80" \
        in rois.detail


def test_scanimage_silent_endpoint_fails_with_fix() -> None:
    port = free_ports(1)[0]
    checks = check_scanimage(RigFacts({}, {}), f"tcp://127.0.0.1:{port}", "scanimage", 1,
                             timeout_s=0.3)
    assert checks[0].status == "FAIL" and "no frames from the ScanImage stream" in checks[0].detail
    assert "start an acquisition" in checks[0].fix
    assert "FAIL" in format_report(checks, None)


def test_a_port_already_taken_is_a_warning(tmp_path: Path) -> None:
    import socket

    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        cfg = _loop_config(tmp_path, '{ name = "o", kind = "log" }')
        cfg.write_text(cfg.read_text().replace(
            "[loop]\n", f"[loop]\npublish = 'tcp://127.0.0.1:{port}'\n"))
        ports = by_name(run_checks(cfg), "ports")
    assert len(ports) == 1 and ports[0].status == "WARN"
    assert f"tcp://127.0.0.1:{port} ([loop] publish)" in ports[0].detail


@needs_model
def test_one_bad_table_leaves_the_others_checked(sim_config: Path, tmp_path: Path) -> None:
    cfg = tmp_path / "rig.toml"
    text = sim_config.read_text().replace("headless = true", "headless = true\nfsp = 30")
    text = text.replace('processes = ["display", "decoder", "daq"]',
                        'processes = ["display", "decoder", "daq", "loop"]')
    cfg.write_text(text + """
[loop]
outputs = [{ name = "o", kind = "log" }]
rules = [{ name = "r", kind = "correlation", target = "gone.npy", threshold = 0.5, output = "o" }]
""")
    checks = run_checks(cfg)
    config = by_name(checks, "config")
    assert [c.status for c in config] == ["FAIL"] and "unknown key 'fsp'" in config[0].detail
    assert by_name(checks, "ROIs")[0].status == "OK"  # [daq] and [decoder] still checked
    assert by_name(checks, "model")[0].status == "OK"
    loop = by_name(checks, "loop")
    assert loop[0].status == "FAIL" and "gone.npy does not exist" in loop[0].detail
