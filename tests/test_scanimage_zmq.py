"""The ZeroMQ ScanImage sources against real publisher processes.

A sender process publishes exactly the bytes ScanImage (or the MATLAB bridge)
would, good and bad messages mixed; the stand-in processes play a small
recording. The sources must yield every good frame once, with ScanImage's
numbering and timestamps, and count the bad ones.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from cortexcast.core.config import ConfigError, load_settings
from cortexcast.daq.process import DaqSettings, make_source
from cortexcast.daq.scanimage.messages import pack_bridge_message, pack_scanimage_message
from cortexcast.daq.scanimage.zmq_source import (BridgeSettings, ScanImageStreamSettings, bridge_source,
                                      scanimage_stream_source)
from cortexcast.core.events import ImagingFrame
from cortexcast.daq.source import AcquisitionError
from cortexcast.stream.message import Message
from cortexcast.stream.recording import RecordingWriter

# Publishes the length-prefixed messages of a file once one subscriber is connected.
SENDER = """
import struct, sys
from cortexcast.daq.standins.zmq_publisher import StandinPublisher
pub = StandinPublisher(sys.argv[1])
assert pub.wait_for_subscribers(1, 30), "no subscriber"
data = open(sys.argv[2], "rb").read()
i = 0
while i < len(data):
    (n,) = struct.unpack_from("<I", data, i)
    pub.send(data[i + 4:i + 4 + n])
    i += 4 + n
pub.close(linger_ms=5000)
"""


def _send(tmp_path: Path, endpoint: str, messages: list[bytes], cli_env) -> subprocess.Popen:
    f = tmp_path / "messages.bin"
    f.write_bytes(b"".join(len(m).to_bytes(4, "little") + m for m in messages))
    return subprocess.Popen([sys.executable, "-c", SENDER, endpoint, str(f)], env=cli_env)


def _frames(n: int, h: int = 6, w: int = 7) -> list[np.ndarray]:
    rng = np.random.default_rng(1)
    return [rng.integers(-5, 32000, (2, h, w)).astype(np.int16) for _ in range(n)]


def _collect(source) -> list[ImagingFrame]:
    with source:
        return list(source.events())


def test_stream_source_takes_good_frames_and_counts_bad_ones(tmp_path, cli_env) -> None:
    ep = f"ipc://{tmp_path}/si.sock"
    planes = _frames(6)
    good = [pack_scanimage_message(k + 1, k / 30, p) for k, p in enumerate(planes)]
    msgs = [good[0], good[1][:-3], good[1], b"\x00" * 12, good[2] + b"\0\0", good[2], good[2],
            good[5], good[3]]  # truncated, short, extra bytes, repeated 3, gap 4-5, 4 late
    proc = _send(tmp_path, ep, msgs, cli_env)
    src = scanimage_stream_source(ScanImageStreamSettings(endpoint=ep, channel=2,
                                                          end_after_idle_s=1.0, timeout_s=30))
    got = _collect(src)
    assert proc.wait(30) == 0
    assert [f.index for f in got] == [0, 1, 2, 5]
    assert [f.t for f in got] == [0.0, 1 / 30, 2 / 30, 5 / 30]
    for f in got:
        assert f.pixels.dtype == np.uint16 and f.meta["scanimage_frame"] == f.index + 1
        np.testing.assert_array_equal(f.pixels, np.clip(planes[f.index][1], 0, None))
    assert dict(src.bad) == {"truncated": 1, "short": 1, "extra": 1}
    assert src.numbers.counts == {"gaps": 1, "missing": 2, "duplicates": 2, "restarts": 0}
    assert src.status() == {"si_messages": 9, "si_bad_messages": 3, "si_frame_gaps": 1,
                            "si_frames_missing": 2, "si_frames_repeated": 2, "si_restarts": 0}


def test_bridge_source_checks_channel_and_layout(tmp_path, cli_env) -> None:
    ep = f"ipc://{tmp_path}/bridge.sock"
    planes = _frames(3)
    msgs = [pack_bridge_message(k + 1, k / 30, p[0], channel=1) for k, p in enumerate(planes)]
    other = pack_bridge_message(2, 0.1, planes[1][1], channel=2)
    proc = _send(tmp_path, ep, [msgs[0], other, b"junk" * 20, msgs[1], msgs[2]], cli_env)
    src = bridge_source(BridgeSettings(endpoint=ep, channel=1, end_after_idle_s=1.0))
    got = _collect(src)
    assert proc.wait(30) == 0
    assert [f.index for f in got] == [0, 1, 2]
    for f in got:
        np.testing.assert_array_equal(f.pixels, np.clip(planes[f.index][0], 0, None))
    assert dict(src.bad) == {"channel": 1, "magic": 1}


def test_only_unusable_messages_is_a_clear_error(tmp_path, cli_env) -> None:
    ep = f"ipc://{tmp_path}/wrongchannel.sock"
    msgs = [pack_scanimage_message(k + 1, 0.0, p[:1]) for k, p in enumerate(_frames(40))]
    proc = _send(tmp_path, ep, msgs, cli_env)
    src = scanimage_stream_source(ScanImageStreamSettings(endpoint=ep, channel=2, timeout_s=1.5))
    with pytest.raises(AcquisitionError, match=r"40 message\(s\) arrived but none was usable, "
                       r"e.g. channel 2 requested but the message has 1"):
        _collect(src)
    assert proc.wait(30) == 0


def test_a_silent_endpoint_is_a_clear_error(tmp_path) -> None:
    src = scanimage_stream_source(ScanImageStreamSettings(endpoint=f"ipc://{tmp_path}/none",
                                                          timeout_s=0.3))
    with pytest.raises(AcquisitionError, match=r"ScanImage stream at ipc://.*no frame for"):
        _collect(src)


def _recording(path: Path, n: int = 12) -> list[np.ndarray]:
    rng = np.random.default_rng(2)
    frames = [rng.integers(0, 32768, (8, 9)).astype(np.uint16) for _ in range(n)]
    with RecordingWriter(path) as w:
        for i, px in enumerate(frames):
            w.write(Message("frames", "frame", i, "daq", i / 30, (px,),
                            meta={"imaging_frame": i}), t_recv_ns=10**9 + i * 10**6)
    return frames


@pytest.mark.parametrize("standin, source, extra", [
    ("scanimage_zmq", "scanimage", ["--channels", "2"]),
    ("scanimage_bridge", "scanimage-bridge", ["--channels", "2", "--channel", "1"]),
])
def test_standins_play_a_recording_into_the_daq_source(tmp_path, cli_env, standin, source,
                                                       extra) -> None:
    frames = _recording(tmp_path / "rec.ccrec")
    ep = f"ipc://{tmp_path}/standin.sock"
    proc = subprocess.Popen([sys.executable, "-m", f"cortexcast.daq.standins.{standin}", "--endpoint", ep,
                             "--recording", str(tmp_path / "rec.ccrec"), "--wait-subscribers",
                             "1", *extra], env=cli_env)
    table = "scanimage" if source == "scanimage" else "bridge"
    cfg = tmp_path / "rig.toml"
    cfg.write_text(f"[daq]\nsource = '{source}'\n[daq.{table}]\nendpoint = '{ep}'\n"
                   "end_after_idle_s = 1.0\ntimeout_s = 30.0\n")
    got = _collect(make_source(load_settings(DaqSettings, cfg, "daq")))
    assert proc.wait(30) == 0
    assert [f.index for f in got] == list(range(len(frames)))
    for f in got:
        assert f.t == pytest.approx(f.index / 30)
        np.testing.assert_array_equal(f.pixels, frames[f.index])


def test_config_names_bad_scanimage_settings(tmp_path) -> None:
    cfg = tmp_path / "rig.toml"
    cfg.write_text("[daq]\nsource = 'scanimage'\n[daq.scanimage]\nendpoint = 'localhost:1'\n")
    with pytest.raises(ConfigError, match=r"\[daq\].*scanimage.*must start with tcp://"):
        load_settings(DaqSettings, cfg, "daq")
    cfg.write_text("[daq]\nsource = 'scanimage-bridge'\n[daq.bridge]\nchanel = 1\n")
    with pytest.raises(ConfigError, match="unknown key 'chanel'"):
        load_settings(DaqSettings, cfg, "daq")
    cfg.write_text("[daq]\nsource = 'tiff'\n")
    with pytest.raises(ConfigError, match=r"needs \[daq.tiff\] folder"):
        load_settings(DaqSettings, cfg, "daq")


def test_stop_from_another_thread_ends_a_silent_source(tmp_path) -> None:
    src = scanimage_stream_source(ScanImageStreamSettings(endpoint=f"ipc://{tmp_path}/quiet"))
    got: list = []
    with src:
        th = threading.Thread(target=lambda: got.extend(src.events()))
        th.start()
        src.stop()  # the consumer thread still owns the socket; stop touches no socket
        th.join(timeout=5.0)
        assert not th.is_alive() and got == []
