"""A flipped byte in the middle of a recording loses only the record it hit.

Replay (in process and via the CLI) and the daq's replay source skip a damaged record and
go on; ``--strict`` / ``strict`` fails instead. Without the index, the scan resynchronises on
the next valid record and reports the damaged span.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cortexcast.daq.replay_source import ReplaySource
from cortexcast.daq.source import AcquisitionError
from cortexcast.stream.message import Message
from cortexcast.stream.pubsub import Subscriber
from cortexcast.stream.recording import RecordingError, RecordingReader, RecordingWriter, index_path
from cortexcast.stream.record_cli import main as cli_main
from cortexcast.stream.replay import Replayer, ReplaySettings
from cortexcast.core.events import ImagingFrame

ROOT = Path(__file__).resolve().parents[1]
T0_NS = 9_000_000_000
N = 600
BAD = 300  # the record whose byte is flipped


def _messages(n: int = N) -> list[Message]:
    out = []
    for k in range(n):
        if k % 2 == 0:
            out.append(Message("frames", "frame", k // 2, "daq", k / 60,
                               (np.full((4, 6), k, np.uint16),), (("daq.pub", 10_000 + k),),
                               {"imaging_frame": k // 2}))
        else:
            out.append(Message("sync", "sync", k // 2, "daq", k / 60, (),
                               (("daq.pub", 10_000 + k),),
                               {"imaging_frame": k // 2, "stim_frame": k}))
    return out


def _damaged(tmp_path: Path, with_index: bool, where: str = "middle") -> tuple[Path, list, tuple]:
    """A recording of N messages with one byte of record BAD flipped; (path, msgs, (off, len))."""
    path = tmp_path / "d.ccrec"
    msgs = _messages()
    with RecordingWriter(path) as w:
        for k, msg in enumerate(msgs):
            w.write(msg, t_recv_ns=T0_NS + k * 1_000_000)
    with RecordingReader(path) as r:
        off, length = int(r.index["offset"][BAD]), int(r.index["length"][BAD])
    data = bytearray(path.read_bytes())
    pos = {"middle": off + length // 2, "magic": off, "length": off + 16}[where]
    data[pos] ^= 0xFF
    path.write_bytes(bytes(data))
    if not with_index:
        os.remove(index_path(path))
    return path, msgs, (off, length)


def _intact(msgs: list[Message]) -> list[tuple[str, int]]:
    return [(m.topic, m.seq) for k, m in enumerate(msgs) if k != BAD]


@pytest.mark.parametrize("where", ["middle", "magic", "length"])
def test_scan_without_index_resynchronises_after_the_damage(tmp_path, where):
    path, msgs, (off, length) = _damaged(tmp_path, with_index=False, where=where)
    with RecordingReader(path) as r:
        assert r.index_source == "scan"
        assert len(r) == N - 1
        assert [(m.topic, m.seq) for m in r] == _intact(msgs)
        assert r.damaged_spans == [(off, length)]
        assert r.ignored_bytes == length


def test_scan_still_ignores_a_truncated_tail(tmp_path):
    path, msgs, (off, length) = _damaged(tmp_path, with_index=False)
    data = path.read_bytes()
    path.write_bytes(data[:-7])  # the last record is cut
    with RecordingReader(path) as r:
        assert len(r) == N - 2
        assert r.damaged_spans == [(off, length)]
        end = int(r.index["offset"][-1]) + int(r.index["length"][-1])
        assert r.ignored_bytes == length + (len(data) - 7 - end)


@pytest.mark.parametrize("with_index", [True, False])
def test_replayer_skips_the_damaged_record(tmp_path, with_index):
    path, msgs, _ = _damaged(tmp_path, with_index)
    sent: list[Message] = []
    with RecordingReader(path) as r:
        stats = Replayer(ReplaySettings(fast=True), sent.append).run(r)
    assert [(m.topic, m.seq) for m in sent] == _intact(msgs)
    assert stats.damaged == 1 and stats.as_dict()["damaged"] == 1
    with RecordingReader(path) as r, pytest.raises(RecordingError):
        Replayer(ReplaySettings(fast=True, strict=True), sent.append).run(r)


def _cli_replay(tmp_path: Path, path: Path, *extra: str) -> tuple[int, list[Message], dict]:
    endpoint = f"ipc://{tmp_path}/dmg.sock"
    stats = tmp_path / "stats.json"
    with Subscriber(endpoint, ["frames", "sync"], hwm=10_000) as sub:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cortexcast.stream.record_cli", "replay", str(path),
             "--to", endpoint, "--fast", "--wait-subscribers", "1", "--wait-timeout", "20",
             "--linger", "0.5", "--hwm", "10000", "--stats-out", str(stats), *extra],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        got: list[Message] = []
        try:
            while (msg := sub.recv(timeout_s=3)) is not None:
                got.append(msg)
            proc.communicate(timeout=30)
        finally:
            proc.kill()
    return proc.returncode, got, json.loads(stats.read_text()) if stats.exists() else {}


@pytest.mark.parametrize("with_index", [True, False])
def test_replay_cli_delivers_every_intact_record_and_is_strict_on_demand(tmp_path, with_index):
    path, msgs, _ = _damaged(tmp_path, with_index)
    rc, got, stats = _cli_replay(tmp_path, path)
    assert rc == 0
    assert [(m.topic, m.seq) for m in got] == _intact(msgs)
    assert stats["damaged"] == 1 and stats["total"] == N - 1
    rc, _, _ = _cli_replay(tmp_path, path, "--strict")
    assert rc != 0


@pytest.mark.parametrize("with_index", [True, False])
def test_replay_source_yields_every_intact_frame(tmp_path, with_index):
    path, msgs, _ = _damaged(tmp_path, with_index)
    src = ReplaySource(path, paced=False)
    with src:
        frames = [e.index for e in src.events() if isinstance(e, ImagingFrame)]
    want = [m.seq for k, m in enumerate(msgs) if k != BAD and m.topic == "frames"]
    assert frames == want and src.damaged == 1
    strict = ReplaySource.from_settings(ReplaySettings(recording=str(path), fast=True,
                                                       strict=True))
    with pytest.raises(AcquisitionError), strict:
        list(strict.events())


def test_record_check_reports_health(tmp_path, capsys):
    path, _, (off, length) = _damaged(tmp_path, with_index=True)
    assert cli_main(["record", "--check", str(path)]) == 1
    out = capsys.readouterr().out
    assert "damaged" in out and str(off) in out
    clean = tmp_path / "c.ccrec"
    with RecordingWriter(clean) as w:
        for msg in _messages(10):
            w.write(msg)
    assert cli_main(["record", "--check", str(clean)]) == 0
    assert "frames" in capsys.readouterr().out
