"""`cortexcast up` with sim frames, NI sync (simulated backend) and stimulus ids over UDP.

Real processes: the daq runs the whole NI path (voltages -> edges -> flips -> sync events)
on the simulated backend and receives stimulus identity datagrams the test sends as the
stimulus computer would; the decoder and recorder run as usual.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from cortexcast.app.bench import free_ports
from cortexcast.core.tomlwrite import dumps
from cortexcast.decoder.live.process import BUNDLED_MODEL
from cortexcast.stream.recording import RecordingReader

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not BUNDLED_MODEL.exists(), reason="bundled model not built")]


def test_up_with_ni_sync_and_stimulus_identity(tmp_path: Path, cli_env) -> None:
    import tomllib

    from cortexcast.app.launcher import write_sim_config

    http, daq, dec, udp = free_ports(4)
    sim_cfg = tomllib.loads(write_sim_config(tmp_path / "sim", headless=True, port=http,
                                             daq_port=daq, decoder_port=dec).read_text())
    out = tmp_path / "ni.ccr"
    sim = dict(sim_cfg["daq"]["sim"], duration_s=4.0)
    config = {
        "stack": {"processes": ["record", "decoder", "daq"], "run_dir": str(tmp_path / "run")},
        "daq": {"publish": f"tcp://127.0.0.1:{daq}", "wait_for": ["frames", "sync"],
                "sync": ["ni", "stimulus"], "sim": sim,
                "ni": {"backend": "simulated", "vsync": "ai2", "sim_monitor_delay_s": 0.025},
                "stimulus": {"listen": f"127.0.0.1:{udp}",
                             "clip_library": str(tmp_path / "clips")}},
        "decoder": dict(sim_cfg["decoder"], wait_for=["reconstruction"]),
        "record": {"endpoints": [f"tcp://127.0.0.1:{daq}", f"tcp://127.0.0.1:{dec}"],
                   "topics": ["sync", "stimulus", "reconstruction"], "out": str(out)},
    }
    (tmp_path / "clips").mkdir()
    clip = np.arange(36 * 64 * 3, dtype=np.uint32).reshape(3, 36, 64).astype(np.uint8)
    np.save(tmp_path / "clips" / "clip_a.npy", clip)
    cfg = tmp_path / "rig.toml"
    cfg.write_text(dumps(config))

    stop = threading.Event()

    def stimulus_computer() -> None:  # one id message per 30 Hz flip until the run ends
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
            j = 0
            while not stop.wait(1 / 30):
                msg = {"v": 1, "frame": j, "clip": "clip_a", "clip_frame": j % 3}
                tx.sendto(json.dumps(msg).encode(), ("127.0.0.1", udp))
                j += 1

    sender = threading.Thread(target=stimulus_computer, daemon=True)
    sender.start()
    try:
        res = subprocess.run([sys.executable, "-m", "cortexcast", "up", "--config", str(cfg),
                              "--duration", "90"], capture_output=True, text=True, env=cli_env,
                             timeout=240)
    finally:
        stop.set()
        sender.join(5)
    assert res.returncode == 0, res.stdout + res.stderr
    with RecordingReader(out) as rec:
        syncs = list(rec.messages(["sync"]))
        stims = list(rec.messages(["stimulus"]))
        recon = list(rec.messages(["reconstruction"]))
    stats = json.loads((tmp_path / "run" / "daq.json").read_text())
    n_frames = stats["published"]["frames"]
    assert n_frames >= 100 and len(recon) == n_frames  # every frame decoded
    assert len(syncs) >= n_frames - 10  # ~one NI sync event per frame
    frames = [m.meta["imaging_frame"] for m in syncs]
    assert frames == list(range(frames[0], frames[0] + len(frames)))  # none lost
    assert all(m.arrays and 320 <= m.arrays[0].size <= 345 for m in syncs)  # photodiode
    stim = [m.meta["stim_frame"] for m in syncs if m.meta["stim_frame"] >= 0]
    assert stim == sorted(stim) and stim[-1] > 60
    src = stats["source"]
    assert src["ni_monitor_delay_ms"] == pytest.approx(25.0, abs=0.5)
    assert src["ni_lost_frames"] == 0 and src["ni_overflows"] == 0
    assert len(stims) > 60 and {m.meta["clip"] for m in stims} == {"clip_a"}
    for m in stims[:5]:
        np.testing.assert_array_equal(m.arrays[0], clip[m.meta["clip_frame"]])
    assert src["merge_replaced"] > 0 and src["stimulus_bad"] == 0
