"""Stimulus identity from UDP messages and from a followed log file."""

from __future__ import annotations

import json
import queue
import socket
import threading
from pathlib import Path

import numpy as np
import pytest

from cortexcast.core.events import StimulusFrame

from cortexcast.daq.source import AcquisitionError
from cortexcast.daq.stimulus_identity import (MessageError, StimulusIdentitySource, StimulusSettings,
                                   parse_message)


def _library(tmp_path: Path) -> tuple[Path, np.ndarray]:
    lib = tmp_path / "clips"
    lib.mkdir()
    movie = np.random.default_rng(0).integers(0, 256, (5, 36, 64), dtype=np.uint8)
    np.save(lib / "clip_a.npy", movie)
    np.save(lib / "wrong_shape.npy", np.zeros((2, 10, 10), np.uint8))
    return lib, movie


class Taker:
    def __init__(self, src: StimulusIdentitySource) -> None:
        self.q: queue.Queue = queue.Queue()
        threading.Thread(target=lambda: [self.q.put(e) for e in src.events()],
                         daemon=True).start()

    def take(self, n: int, timeout: float = 10.0) -> list[StimulusFrame]:
        return [self.q.get(timeout=timeout) for _ in range(n)]


def test_schema() -> None:
    assert parse_message({"frame": 3, "clip": "c", "clip_frame": 1}) == [(3, "c", 1, None)]
    assert parse_message([{"v": 1, "frame": 3, "clip": "c", "clip_frame": 1, "t": 2}]) == \
        [(3, "c", 1, 2.0)]
    for bad, why in (({"frame": 3, "clip": "c"}, "clip_frame"), ({"v": 2}, "version"),
                     ({"frame": -1, "clip": "c", "clip_frame": 0}, ">= 0"), (7, "object")):
        with pytest.raises(MessageError, match=why):
            parse_message(bad)


def test_udp_messages_to_stimulus_frames(tmp_path: Path) -> None:
    lib, movie = _library(tmp_path)
    s = StimulusSettings(listen="127.0.0.1:0", clip_library=str(lib), poll_s=0.02)
    with StimulusIdentitySource(s) as src:
        got = Taker(src)
        tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            for msg in (b'{"frame": 10, "clip": "clip_a", "clip_frame": 2, "t": 1.5}',
                        b"not json", b'{"frame": 11}',
                        json.dumps([{"frame": 11, "clip": "clip_a", "clip_frame": 3},
                                    {"frame": 12, "clip": "unknown", "clip_frame": 0}]).encode(),
                        b'{"frame": 13, "clip": "wrong_shape", "clip_frame": 0}',
                        b'{"frame": 14, "clip": "clip_a", "clip_frame": 99}'):
                tx.sendto(msg, src.address)
            evs = got.take(5)
        finally:
            tx.close()
    assert [(e.index, e.clip, e.clip_frame) for e in evs] == [
        (10, "clip_a", 2), (11, "clip_a", 3), (12, "unknown", 0), (13, "wrong_shape", 0),
        (14, "clip_a", 99)]
    assert evs[0].t == 1.5
    np.testing.assert_array_equal(evs[0].pixels, movie[2])
    np.testing.assert_array_equal(evs[1].pixels, movie[3])
    for e in evs[2:]:  # unknown clip, wrong shape, frame out of range: placeholder + ids
        assert e.pixels.shape == (36, 64) and e.pixels.dtype == np.uint8 and (e.pixels == 128).all()
    assert src.status() == {"stimulus_ids": 5, "stimulus_bad": 2, "stimulus_placeholders": 3,
                            "stimulus_refused": 0}


def test_follows_a_log_file_with_partial_lines_and_rotation(tmp_path: Path) -> None:
    log_file = tmp_path / "stim.log"
    log_file.write_text('old {"frame": 0, "clip": "x", "clip_frame": 0}\n')  # before we start
    s = StimulusSettings(mode="log", log_file=str(log_file), poll_s=0.01)
    with StimulusIdentitySource(s) as src:
        got = Taker(src)
        assert src.following.wait(10)  # positioned at the end of what was there
        with log_file.open("a") as fh:
            fh.write('10:00:01 INFO flip {"frame": 1, "clip": "x", "clip_frame": 1}\n')
            fh.write("10:00:01 INFO an unrelated log line\n")
            fh.write('10:00:02 INFO flip {"frame": 2, "clip": "x", ')
            fh.flush()
            fh.write('"clip_frame": 2}\n')
        assert [e.index for e in got.take(2)] == [1, 2]
        rotated = tmp_path / "stim.log.1"
        log_file.rename(rotated)
        log_file.write_text('{"frame": 3, "clip": "x", "clip_frame": 3}\n')
        assert [e.index for e in got.take(1)] == [3]


def test_bad_settings_are_clear(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="log_file"):
        StimulusSettings(mode="log")
    with pytest.raises(ValueError, match="host:port"):
        StimulusSettings(listen="5557")
    with pytest.raises(AcquisitionError, match="not a folder"):
        StimulusIdentitySource(StimulusSettings(clip_library=str(tmp_path / "nope")))
    with pytest.raises(AcquisitionError, match="does not exist"):
        StimulusIdentitySource(StimulusSettings(mode="log",
                                                log_file=str(tmp_path / "a" / "b.log"))).__enter__()
