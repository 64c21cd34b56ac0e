"""The ``record`` process: killed with SIGKILL mid-stream, stopped with SIGTERM, timed out."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import msgpack
import numpy as np
import pytest
import zmq

from cortexcast.stream.message import Message, decode, encode
from cortexcast.stream.pubsub import Publisher
from cortexcast.stream.record_cli import RecordSettings, record
from cortexcast.stream.recording import RecordingReader, index_path

ROOT = Path(__file__).resolve().parents[1]
ENTRY = 40  # bytes per sidecar index entry
HEADER = 32  # bytes of sidecar header


def _start_recorder(address: str, out: Path, *extra: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "cortexcast.stream.record_cli", "record", "--from", address,
           "--topics", "frames,sync", "--out", str(out), "--hwm", "100000", *extra]
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def _recorded(out: Path) -> int:
    """Messages the recorder has indexed so far (reads the sidecar's size only)."""
    try:
        return max(0, (os.stat(index_path(out)).st_size - HEADER) // ENTRY)
    except FileNotFoundError:
        return 0


def _wait_recorded(out: Path, n: int, proc: subprocess.Popen, timeout_s: float = 20) -> None:
    """Wait for the recorder's disk writes (a file, not a socket: polled)."""
    deadline = time.monotonic() + timeout_s
    while _recorded(out) < n:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, f"recorder wrote {_recorded(out)} of {n}"
        time.sleep(0.002)


def _subscribed(pub: Publisher, proc: subprocess.Popen) -> None:
    if not pub.wait_for_subscribers({"frames": 1, "sync": 1}, timeout_s=20):
        proc.kill()
        pytest.fail(f"recorder never subscribed: {proc.communicate()}")


def test_killed_recorder_keeps_every_complete_message(tmp_path):
    out = tmp_path / "crash.ccrec"
    kill_after, window = 60, 16
    sent: list[Message] = []
    with Publisher("tcp://127.0.0.1:0", "daq", hwm=100000) as pub:
        proc = _start_recorder(pub.address, out, "--fsync", "0.05")
        try:
            _subscribed(pub, proc)
            i = 0
            while True:
                done = _recorded(out)
                if done >= kill_after and len(sent) - done >= 4:  # busy writing: kill now
                    break
                if len(sent) - done >= window:  # keep the recorder busy, not flooded
                    _wait_recorded(out, len(sent) - window + 2, proc)
                    continue
                pixels = np.random.default_rng(i).integers(0, 65535, (512, 512), np.uint16)
                sent.append(pub.publish("frames", "frame", (pixels,), t_acq=i / 30,
                                        meta={"imaging_frame": i}))
                sent.append(pub.publish("sync", "sync", t_acq=i / 30,
                                        meta={"imaging_frame": i, "stim_frame": i // 2}))
                i += 1
            proc.send_signal(signal.SIGKILL)  # mid-stream: 4 to `window` messages in flight
            recorded_at_kill = done
        finally:
            proc.kill()
            proc.communicate(timeout=10)
    assert proc.returncode == -signal.SIGKILL

    for drop_sidecar in (False, True):
        if drop_sidecar:
            index_path(out).unlink()
        with RecordingReader(out) as r:
            n = len(r)
            assert recorded_at_kill <= n <= len(sent)
            assert r.index_source == ("scan" if drop_sidecar else r.index_source)
            for k in range(n):  # every complete message intact and in order
                assert [bytes(p) for p in r.parts(k)] == [bytes(p) for p in encode(sent[k])]
            assert r.ignored_bytes < 512 * 512 * 2 + 1024  # at most one partial message
            last = r.message(n - 1)
            assert (last.topic, last.seq) == (sent[n - 1].topic, sent[n - 1].seq)


def _raw_xpub() -> tuple[zmq.Socket, str]:
    sock = zmq.Context.instance().socket(zmq.XPUB)
    sock.setsockopt(zmq.LINGER, 0)
    sock.bind("tcp://127.0.0.1:0")
    return sock, sock.getsockopt_string(zmq.LAST_ENDPOINT)


def test_sigterm_closes_cleanly_keeps_raw_bytes_and_reports_drops(tmp_path):
    out = tmp_path / "clean.ccrec"
    stats = tmp_path / "stats.json"
    # A valid message whose header is not what encode() would write (key order, dtype
    # spelling): the recording must hold the bytes as received, not a re-encoding.
    header = msgpack.packb({"src": "raw", "v": 1, "kind": "frame", "seq": 0, "t": 1.5,
                            "stamps": [], "arrays": [{"shape": [2, 3], "dtype": "uint16"}],
                            "meta": {"imaging_frame": 0}})
    raw = [b"frames", header, np.arange(6, dtype=np.uint16).tobytes()]
    assert [bytes(p) for p in encode(decode(raw))] != raw
    raw_sock, raw_address = _raw_xpub()
    with Publisher("tcp://127.0.0.1:0", "daq") as pub:
        proc = _start_recorder(pub.address, out, "--from", raw_address,
                               "--stats-out", str(stats))
        try:
            _subscribed(pub, proc)
            seqs = [0, 1, 2, 5, 6, 7]  # a gap of 2: counted as drops
            for seq in seqs:
                pub.send(Message("frames", "frame", seq, "daq", seq / 30,
                                 (np.full((4, 4), seq, np.uint16),), meta={"imaging_frame": seq}))
            pub.publish("sync", "sync", t_acq=0.0, meta={"imaging_frame": 0, "stim_frame": -1})
            _wait_recorded(out, len(seqs) + 1, proc)
            assert raw_sock.poll(20_000), "recorder never subscribed to the raw socket"
            while raw_sock.recv() != b"\x01frames":  # subscription handshake
                pass
            raw_sock.send_multipart(raw)
            _wait_recorded(out, len(seqs) + 2, proc)
            proc.send_signal(signal.SIGTERM)
            stdout, stderr = proc.communicate(timeout=10)
        finally:
            proc.kill()
            raw_sock.close(0)
    assert proc.returncode == 0, stderr
    assert "recorded 8 messages" in stdout and "frames: 7" in stdout
    summary = json.loads(stats.read_text())
    assert summary["messages"] == {"frames": 7, "sync": 1}
    assert summary["total_dropped"] == 2 and summary["dropped"] == {"daq/frames": 2}
    assert summary["bytes"] == out.stat().st_size
    with RecordingReader(out) as r:
        assert r.index_source == "sidecar" and r.ignored_bytes == 0
        assert [m.seq for m in r.messages(["frames"])] == [*seqs, 0]
        assert [bytes(p) for p in r.parts(len(r) - 1)] == raw


def test_recorder_refuses_an_existing_file(tmp_path):
    out = tmp_path / "exists.ccrec"
    out.write_bytes(b"precious")
    proc = subprocess.run([sys.executable, "-m", "cortexcast.stream.record_cli", "record", "--from",
                           "tcp://127.0.0.1:1", "--out", str(out), "--duration", "0.1"],
                          cwd=ROOT, capture_output=True, text=True, timeout=30, check=False)
    assert proc.returncode == 1 and "exists" in proc.stderr
    assert out.read_bytes() == b"precious"


def test_record_stops_after_its_duration(tmp_path):
    settings = RecordSettings(endpoints=("tcp://127.0.0.1:1",), out=str(tmp_path / "d.ccrec"),
                              duration_s=0.2)
    t0 = time.monotonic()
    summary = record(settings)
    assert 0.2 <= time.monotonic() - t0 < 2
    assert summary["total"] == 0 and summary["bytes"] == 48
    with RecordingReader(settings.out) as r:
        assert len(r) == 0 and r.duration == 0.0
