"""The simulated rig playing a clip set: it is the stimulus computer and the eye tracker too.

Real UDP on free ports: the stimulus identities are received by the daq's own
StimulusIdentitySource, the eye datagrams by a plain socket (the behaviour source is
another module's business).
"""

from __future__ import annotations

import json
import socket
import threading
import time
import tomllib
from pathlib import Path

import numpy as np
import pytest

from cortexcast.core.events import ImagingFrame, StimulusFrame, SyncEvent
from cortexcast.daq.playlist import PlaylistEntry, PlaylistError, write_clip_set
from cortexcast.daq.sim.rig import SimulatedRig
from cortexcast.daq.sim.settings import SimSettings
from cortexcast.daq.stimulus_identity import StimulusIdentitySource, StimulusSettings

SMALL = dict(n_neurons=200, frame_height=64, frame_width=64, paced=False)
FRAMES = {"train_0000": 5, "train_0001": 4, "test_0000": 3}
ORDER = [("train_0000", "train", 0), ("test_0000", "test", 0), ("train_0001", "train", 0),
         ("test_0000", "test", 1)]
TIMEOUT_S = 10.0


def _clips() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    return {name: rng.integers(0, 256, (n, 36, 64), dtype=np.uint8)
            for name, n in FRAMES.items()}


@pytest.fixture
def clip_dir(tmp_path: Path) -> Path:
    entries = [PlaylistEntry(i, clip, tier, rep, FRAMES[clip])
               for i, (clip, tier, rep) in enumerate(ORDER)]
    return write_clip_set(tmp_path / "clips", _clips(), entries,
                          {"seed": 0, "stim_rate_hz": 30.0})


def _expected() -> list[tuple[int, str, int]]:
    flips = [(clip, k) for clip, _, _ in ORDER for k in range(FRAMES[clip])]
    return [(j, clip, k) for j, (clip, k) in enumerate(flips)]


class EyeReceiver:
    """A plain UDP socket on a free port standing in for the behaviour source."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(TIMEOUT_S)
        self.to = "127.0.0.1:%d" % self.sock.getsockname()[1]

    def take(self, n: int) -> list[dict]:
        return [json.loads(self.sock.recv(65536)) for _ in range(n)]

    def close(self) -> None:
        self.sock.close()


class StimulusReceiver:
    """StimulusIdentitySource on a free port, read in a thread (as the daq's merger does)."""

    def __init__(self, library: Path) -> None:
        self.source = StimulusIdentitySource(StimulusSettings(
            listen="127.0.0.1:0", clip_library=str(library), poll_s=0.02)).__enter__()
        self.to = "127.0.0.1:%d" % self.source.address[1]
        self.frames: list[StimulusFrame] = []
        self._thread = threading.Thread(target=lambda: self.frames.extend(self.source.events()),
                                        daemon=True)
        self._thread.start()

    def wait_for(self, n: int) -> list[StimulusFrame]:
        deadline = time.monotonic() + TIMEOUT_S
        while len(self.frames) < n and time.monotonic() < deadline:
            self._thread.join(0.01)  # polling with a timeout, not a fixed sleep
        return list(self.frames)

    def close(self) -> None:
        self.source.close()
        self._thread.join(TIMEOUT_S)


@pytest.fixture
def receivers(clip_dir: Path):
    stim, eye = StimulusReceiver(clip_dir), EyeReceiver()
    yield stim, eye
    stim.close()
    eye.close()


def test_rig_plays_the_playlist_and_announces_every_flip_and_eye_sample(clip_dir, receivers):
    stim, eye = receivers
    settings = SimSettings(**SMALL, clips=str(clip_dir), stimulus_to=stim.to, eye_to=eye.to)
    rig = SimulatedRig(settings)
    events, sent_by_sync = [], []
    with rig:
        for ev in rig.events():
            events.append(ev)
            if isinstance(ev, SyncEvent):  # announced when the frame happens, before its sync
                sent_by_sync.append(rig.status()["sim_eye_sent"])
    assert not [e for e in events if isinstance(e, StimulusFrame)]  # the identities come by UDP
    syncs = [e for e in events if isinstance(e, SyncEvent)]
    frames = [e for e in events if isinstance(e, ImagingFrame)]
    assert syncs and len(syncs) == len(frames)
    assert all(set(e.behavior) == {"running"} for e in syncs)

    expected = _expected()
    got = stim.wait_for(len(expected))
    assert [(f.index, f.clip, f.clip_frame) for f in got] == expected
    clips = _clips()
    for f in got:  # the daq's library gives the pixels the rig showed, at the rig's flip times
        np.testing.assert_array_equal(f.pixels, clips[f.clip][f.clip_frame])
        assert f.t == pytest.approx(settings.monitor_delay_s + f.index / settings.stim_rate_hz)
    assert syncs[-1].stim_frame == len(expected) - 1  # ends after the last entry...
    last_off = settings.monitor_delay_s + len(expected) / settings.stim_rate_hz
    assert syncs[-1].t < last_off <= syncs[-1].t + 2 / settings.imaging_rate_hz  # ...at once

    # The same session with the clips in memory: the rig's own sync carries the behaviour
    # the eye tracker must have reported (pupil, centre), frame by frame.
    reference = SimulatedRig(SimSettings(**SMALL), clips=[clips[c] for c, _, _ in ORDER])
    with reference:
        ref_events = list(reference.events())
    ref_syncs = [e for e in ref_events if isinstance(e, SyncEvent)]
    assert [s.stim_frame for s in ref_syncs] == [s.stim_frame for s in syncs]
    samples = eye.take(len(syncs))
    for sample, sync, ref in zip(samples, syncs, ref_syncs):
        assert sample["v"] == 1 and sample["t"] == pytest.approx(sync.t)
        for key in ("pupil", "pupil_x", "pupil_y"):
            assert sample[key] == pytest.approx(ref.behavior[key])
        assert sync.behavior["running"] == ref.behavior["running"]
    ref_frames = [e for e in ref_events if isinstance(e, ImagingFrame)]
    np.testing.assert_array_equal(frames[-1].pixels, ref_frames[-1].pixels)

    assert sent_by_sync == [s.imaging_frame + 1 for s in syncs]
    status = rig.status()
    assert status["sim_eye_sent"] == len(syncs)
    assert status["sim_stimulus_sent"] == len({s.stim_frame for s in syncs if s.stim_frame >= 0})
    assert status["sim_send_errors"] == 0
    assert rig._announcer is not None and rig._announcer.closed  # sockets closed at the end


@pytest.mark.parametrize("imaging_rate_hz", [15.0, 10.0, 7.5])
def test_every_flip_is_announced_when_imaging_is_slower_than_the_screen(
        clip_dir, receivers, imaging_rate_hz):
    """With several flips per imaging frame the last clip frames can leave the screen before
    the middle of the next imaging frame: those flips happened and must be announced too."""
    stim, eye = receivers
    rig = SimulatedRig(SimSettings(**SMALL, imaging_rate_hz=imaging_rate_hz, clips=str(clip_dir),
                                   stimulus_to=stim.to, eye_to=eye.to))
    with rig:
        for _ in rig.events():
            pass
    expected = _expected()
    assert [(f.index, f.clip, f.clip_frame) for f in stim.wait_for(len(expected))] == expected


def test_close_mid_session_ends_and_closes_the_sockets(clip_dir, receivers):
    stim, _ = receivers
    rig = SimulatedRig(SimSettings(**SMALL, clips=str(clip_dir), stimulus_to=stim.to,
                                   eye_to=""))
    with rig:
        gen = rig.events()
        first = [next(gen) for _ in range(4)]
        assert rig._announcer is not None and not rig._announcer.closed
        rig.close()
        assert rig._announcer.closed
        rest = list(gen)
    assert len([e for e in first + rest if isinstance(e, ImagingFrame)]) <= 2
    assert rig.status()["sim_eye_sent"] == 0  # eye_to = "": no eye tracker
    assert stim.wait_for(1)[0].clip == "train_0000"


def test_a_send_that_fails_is_counted_not_raised(clip_dir):
    # broadcast without SO_BROADCAST is refused by the OS: every send fails
    rig = SimulatedRig(SimSettings(**SMALL, clips=str(clip_dir),
                                   stimulus_to="255.255.255.255:9", eye_to=""))
    with rig:
        n = len([e for e in rig.events() if isinstance(e, ImagingFrame)])
    status = rig.status()
    assert n > 0 and status["sim_stimulus_sent"] == 0
    assert status["sim_send_errors"] >= n - 1


def test_a_playlist_naming_a_missing_clip_is_a_clear_error(clip_dir):
    (clip_dir / "train_0001.npy").unlink()
    with pytest.raises(PlaylistError, match="train_0001") as info:
        SimulatedRig(SimSettings(**SMALL, clips=str(clip_dir)))
    assert "playlist.csv" in str(info.value)
    with pytest.raises(PlaylistError, match="does not exist"):
        SimulatedRig(SimSettings(**SMALL, clips=str(clip_dir / "nowhere")))


def test_clip_set_for_another_stimulus_rate_is_refused(clip_dir):
    with pytest.raises(PlaylistError, match="stim_rate_hz = 30"):
        SimulatedRig(SimSettings(**SMALL, clips=str(clip_dir), stim_rate_hz=60.0))


@pytest.mark.parametrize("bad", [{"stimulus_to": "5557"}, {"stimulus_to": ""},
                                 {"eye_to": "localhost"}, {"eye_to": "h:99999"}])
def test_bad_addresses_are_refused(bad):
    with pytest.raises(ValueError, match="host:port"):
        SimSettings(**SMALL, **bad)


def test_clips_path_is_relative_to_the_config(tmp_path: Path):
    from cortexcast.core.config import load_settings
    from cortexcast.daq.process import DaqSettings

    cfg = tmp_path / "rig.toml"
    cfg.write_text('[daq]\nsync = ["stimulus"]\n[daq.sim]\nclips = "clips"\n')
    settings = load_settings(DaqSettings, cfg, "daq")
    assert Path(settings.sim.clips) == tmp_path / "clips"


def test_demo_config_with_clips(clip_dir: Path, tmp_path: Path):
    from cortexcast.app.launcher import write_sim_config

    rec = tmp_path / "session.ccr"
    config = write_sim_config(tmp_path / "run", headless=True, clips=str(clip_dir),
                              record=str(rec))
    data = tomllib.loads(config.read_text())
    daq = data["daq"]
    assert daq["sync"] == ["stimulus", "behavior"]
    assert daq["sim"]["clips"] == str(clip_dir.resolve())
    assert "duration_s" not in daq["sim"]  # the session ends with the playlist
    stim_port = int(daq["sim"]["stimulus_to"].rpartition(":")[2])
    eye_port = int(daq["sim"]["eye_to"].rpartition(":")[2])
    assert daq["stimulus"] == {"mode": "udp", "listen": f"127.0.0.1:{stim_port}",
                               "clip_library": str(clip_dir.resolve())}
    assert daq["behavior"] == {"mode": "udp", "listen": f"127.0.0.1:{eye_port}"}
    assert stim_port != eye_port
    assert "stimulus" in data["record"]["topics"] and data["record"]["out"] == str(rec.resolve())
    with pytest.raises(PlaylistError, match="does not exist"):
        write_sim_config(tmp_path / "run2", headless=True, clips=str(tmp_path / "nowhere"))
