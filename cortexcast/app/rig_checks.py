"""The rig checks of `cortexcast doctor`: NI devices, serial ports, frames (ScanImage).

Each check returns :class:`Check` s (OK / WARN / FAIL, what is wrong, how to
fix it) and never raises for missing hardware or drivers. Vendor packages
(nidaqmx, pyserial) and the ScanImage parsers (cortexcast.daq.scanimage) are imported
lazily, so these checks run on a machine with none of them.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal

Status = Literal["OK", "WARN", "FAIL"]
NI_INSTALL = ("install NI-DAQmx from ni.com/downloads (Windows/Linux; or `python -m nidaqmx "
              "installdriver`), reboot, then see the device in NI MAX")
PIP_HW = "pip install 'cortexcast[hw]' (nidaqmx, pyserial, tifffile, h5py)"


@dataclass(frozen=True)
class Check:
    name: str
    status: Status
    detail: str
    fix: str = ""


@dataclass
class RigFacts:
    """What the checks learn from the config and pass on to each other."""

    raw: dict[str, Any]
    settings: dict[str, Any]
    frame_shape: tuple[int, int] | None = None
    frame_source: str = ""
    n_rois: int | None = None
    rois: Any = None
    """The ROISet the [decoder] ROI file loads to (for the model's ROI fingerprint check)."""


def _daq_table(raw: dict[str, Any]) -> dict[str, Any]:
    t = raw.get("daq", {})
    return t if isinstance(t, dict) else {}


def _sync_sources(raw: dict[str, Any]) -> set[str]:
    daq = _daq_table(raw)
    sync = daq.get("sync", ())
    return set(sync) if isinstance(sync, (list, tuple)) else set()


# -- NI-DAQmx -----------------------------------------------------------------------------

def wanted_ni(facts: RigFacts) -> dict[str, str]:
    """Device name -> what in the config uses it."""
    out: dict[str, str] = {}
    if "ni" in _sync_sources(facts.raw):
        ni = _daq_table(facts.raw).get("ni", {})
        dev = ni.get("device", "Dev1") if isinstance(ni, dict) else "Dev1"
        out[str(dev)] = f"[daq.ni] device {dev}"
    loop = facts.settings.get("loop")
    for o in getattr(loop, "outputs", ()):
        if o.kind == "ni-ttl":
            out.setdefault(o.ni.device, f"loop output '{o.name}' ({o.ni.line})")
    return out


def check_ni(facts: RigFacts, system_factory: Callable[[], Any] | None = None) -> list[Check]:
    wanted = wanted_ni(facts)
    bad: Status = "FAIL" if wanted else "WARN"
    needed = (f"needed by {', '.join(wanted.values())}" if wanted
              else "nothing configured uses NI")
    try:
        import nidaqmx.errors
        import nidaqmx.system
    except ImportError:
        return [Check("NI-DAQmx", bad, f"the nidaqmx package is not installed ({needed})",
                      PIP_HW)]
    factory = system_factory or nidaqmx.system.System.local
    try:
        devices = [(d.name, _product(d), d) for d in factory().devices]
    except nidaqmx.errors.DaqNotFoundError:
        return [Check("NI-DAQmx", bad, f"no NI-DAQmx driver on this machine ({needed})",
                      NI_INSTALL)]
    except nidaqmx.errors.Error as exc:
        return [Check("NI-DAQmx", bad, f"cannot list NI devices: {_first_line(exc)}",
                      NI_INSTALL)]
    checks = [Check("NI devices", "OK" if devices else bad,
                    ", ".join(f"{n} ({p})" for n, p, _ in devices) if devices
                    else f"the driver sees no NI device ({needed})",
                    "" if devices else "connect/power the DAQ; check it in NI MAX")]
    by_name = {n: d for n, _, d in devices}
    for dev, what in wanted.items():
        if dev not in by_name:
            checks.append(Check("NI devices", "FAIL", f"{dev} ({what}) not found; this "
                                f"machine has {', '.join(by_name) or 'none'}",
                                "use the device name NI MAX shows, e.g. ni.line = "
                                f"'{next(iter(by_name), 'Dev1')}/port0/line0'"))
    loop = facts.settings.get("loop")
    for o in getattr(loop, "outputs", ()):
        if o.kind == "ni-ttl" and o.ni.device in by_name:
            lines = _do_lines(by_name[o.ni.device])
            if lines is not None and o.ni.line not in lines:
                checks.append(Check("NI devices", "FAIL", f"loop output '{o.name}': "
                                    f"{o.ni.line} is not a digital output line of "
                                    f"{o.ni.device}", f"use one of {', '.join(lines[:8])}"))
            else:
                checks.append(Check("NI devices", "OK",
                                    f"loop output '{o.name}': {o.ni.line} present"))
    return checks


def _product(device: Any) -> str:
    try:
        return str(device.product_type)
    except Exception:  # a vendor property error must not end the doctor
        return "?"


def _do_lines(device: Any) -> list[str] | None:
    try:
        return [str(n) for n in device.do_lines.channel_names]
    except Exception:
        return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# -- serial ports ---------------------------------------------------------------------------

def wanted_serial(facts: RigFacts) -> dict[str, str]:
    out: dict[str, str] = {}
    if "serial" in _sync_sources(facts.raw):
        ser = _daq_table(facts.raw).get("serial", {})
        if isinstance(ser, dict):
            for key in ("port", "encoder_port"):
                if ser.get(key):
                    out[str(ser[key])] = f"[daq.serial] {key}"
    loop = facts.settings.get("loop")
    for o in getattr(loop, "outputs", ()):
        if o.kind == "serial" and o.serial is not None:
            out.setdefault(o.serial.port, f"loop output '{o.name}'")
    return out


def check_serial(facts: RigFacts) -> list[Check]:
    wanted = wanted_serial(facts)
    try:
        from serial.tools import list_ports
    except ImportError:
        return [Check("serial", "FAIL" if wanted else "WARN",
                      "the pyserial package is not installed", PIP_HW)]
    ports = sorted(list_ports.comports(), key=lambda p: p.device)
    listed = {p.device for p in ports}
    checks = [Check("serial ports", "OK" if ports else "WARN",
                    "; ".join(f"{p.device} ({p.description})" for p in ports) if ports
                    else "no serial ports on this machine",
                    "" if ports else "plug in the sync box / microcontroller (USB)")]
    for port, what in wanted.items():
        if port not in listed and not os.path.exists(port):
            checks.append(Check("serial ports", "FAIL", f"{port} ({what}) not found",
                                f"plug the device in; it may have another name (listed above; "
                                "on Linux see /dev/serial/by-id/ for a stable one)"))
        elif os.path.exists(port) and not os.access(port, os.R_OK | os.W_OK):
            checks.append(Check("serial ports", "FAIL", f"{port} ({what}): permission denied",
                                "on Linux: sudo usermod -aG dialout $USER, then log in again"))
        else:
            checks.append(Check("serial ports", "OK", f"{port} ({what}) present"))
    return checks


# -- frames ---------------------------------------------------------------------------------

def check_frames(facts: RigFacts, timeout_s: float) -> list[Check]:
    daq = facts.settings.get("daq")
    if daq is None:
        return []
    source = daq.source
    facts.frame_source = source
    if source == "sim":
        facts.frame_shape = (daq.sim.frame_height, daq.sim.frame_width)
        return [Check("frames", "OK", f"simulated rig: {daq.sim.frame_height}x"
                      f"{daq.sim.frame_width} frames")]
    if source == "replay":
        ok = bool(daq.recording) and Path(daq.recording).exists()
        return [Check("frames", "OK" if ok else "FAIL", f"replay of {daq.recording}"
                      + ("" if ok else ": file not found"),
                      "" if ok else "record one with `cortexcast record` or fix the path")]
    if source == "tiff":
        folder = Path(daq.tiff.folder)
        if not folder.is_dir():
            return [Check("frames", "FAIL", f"ScanImage TIFF folder {folder} does not exist",
                          "set [daq.tiff] folder to ScanImage's logging folder")]
        n = len(list(folder.glob("*.tif")))
        return [Check("frames", "OK" if n else "WARN", f"TIFF folder {folder}: {n} .tif file(s)",
                      "" if n else "start a ScanImage acquisition with logging on")]
    if source in ("scanimage", "scanimage-bridge"):
        table = daq.scanimage if source == "scanimage" else daq.bridge
        return check_scanimage(facts, table.endpoint, source, getattr(table, "channel", 1),
                               timeout_s)
    return [Check("frames", "WARN", f"frame source {source!r}: the doctor cannot check it yet")]


def _parser(source: str) -> Callable[[memoryview], Any] | None:
    try:
        from cortexcast.daq.scanimage import messages
    except ImportError:
        return None
    if source == "scanimage":
        return getattr(messages, "parse_scanimage_message", None)
    return getattr(messages, "parse_bridge_message", None)


def check_scanimage(facts: RigFacts, endpoint: str, source: str, channel: int,
                    timeout_s: float) -> list[Check]:
    """Subscribe to ScanImage's publisher for up to ``timeout_s``; report what arrives."""
    import zmq

    ctx = zmq.Context()
    sock = ctx.socket(zmq.SUB)
    sock.setsockopt(zmq.LINGER, 0)
    sizes: list[int] = []
    parsed: list[Any] = []
    errors: list[str] = []
    parse = _parser(source)
    try:
        sock.connect(endpoint)
        sock.setsockopt(zmq.SUBSCRIBE, b"")
        deadline = time.monotonic() + timeout_s
        while len(sizes) < 30 and (left := deadline - time.monotonic()) > 0:
            if not sock.poll(left * 1000):
                break
            data = b"".join(sock.recv_multipart())
            sizes.append(len(data))
            if parse is not None:
                try:
                    parsed.append(parse(memoryview(data)) if source != "scanimage"
                                  else parse(memoryview(data), channel))
                except ValueError as exc:  # FrameFormatError is a ValueError
                    errors.append(str(exc))
    except zmq.ZMQError as exc:
        return [Check("ScanImage", "FAIL", f"cannot connect to {endpoint}: {exc}",
                      "endpoint must look like tcp://<ScanImage PC>:<port>")]
    finally:
        sock.close(0)
        ctx.term()
    what = "ScanImage stream" if source == "scanimage" else "ScanImage bridge"
    if not sizes:
        fix = ("on the ScanImage PC: start an acquisition (Focus/Grab/Loop) with the ZeroMQ "
               "stream enabled; check host, port and firewall" if source == "scanimage" else
               "on the ScanImage PC: add daq/matlab/cortexcast_frameAcquired.m as a user "
               "function on frameAcquired (docs), start an acquisition; check host/port/firewall")
        return [Check("ScanImage", "FAIL", f"no frames from the {what} at {endpoint} in "
                      f"{timeout_s:g} s", fix)]
    detail = (f"{len(sizes)} message(s) from the {what} at {endpoint} in <= {timeout_s:g} s, "
              f"{min(sizes)}..{max(sizes)} bytes")
    if parse is None:
        return [Check("ScanImage", "WARN", detail + "; cannot parse them (cortexcast.daq.scanimage not "
                      "installed)", "update cortexcast")]
    if not parsed:
        return [Check("ScanImage", "FAIL", detail + f"; none parsed: {errors[0]}",
                      "check the source kind (scanimage vs scanimage-bridge), the ScanImage "
                      "version and the channel")]
    shape = tuple(parsed[-1].pixels.shape)
    facts.frame_shape = (int(shape[0]), int(shape[1]))
    numbers = [p.number for p in parsed]
    status: Status = "WARN" if errors else "OK"
    detail += (f"; frames {shape[0]}x{shape[1]}, numbers {numbers[0]}..{numbers[-1]}"
               + (f"; {len(errors)} bad: {errors[0]}" if errors else ""))
    return [Check("ScanImage", status, detail)]


# -- ports this machine binds ---------------------------------------------------------------

def bound_endpoints(facts: RigFacts) -> dict[str, str]:
    """ZeroMQ/HTTP addresses the config's processes bind -> which process."""
    out: dict[str, str] = {}
    for name in ("daq", "decoder", "loop"):
        s = facts.settings.get(name)
        endpoint = getattr(s, "publish", "") if s is not None else ""
        if isinstance(endpoint, str) and endpoint.startswith("tcp://"):
            out[endpoint] = f"[{name}] publish"
    disp = facts.settings.get("display")
    if disp is not None and not disp.headless and disp.port:
        out[f"tcp://{disp.host}:{disp.port}"] = "[display] port"
    return out


def check_ports(facts: RigFacts) -> list[Check]:
    """WARN for an address already taken (a stack still running, or another program)."""
    import socket

    checks = []
    for endpoint, what in bound_endpoints(facts).items():
        host, _, port = endpoint[len("tcp://"):].rpartition(":")
        host = "0.0.0.0" if host in ("*", "") else host.strip("[]")
        if not port.isdigit() or port == "0":
            continue
        try:
            with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
                s.bind((host, int(port)))
        except OSError as exc:
            checks.append(Check("ports", "WARN", f"{endpoint} ({what}) cannot be bound now: "
                                f"{exc.strerror or exc}", "stop what holds it (a stack already "
                                "running?) or choose another port"))
    if bound_endpoints(facts) and not checks:
        checks.append(Check("ports", "OK", "free: " + ", ".join(bound_endpoints(facts))))
    return checks
