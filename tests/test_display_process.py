"""The display as a real process: fed by test publishers, read over HTTP and WebSocket."""

from __future__ import annotations

import asyncio
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Iterator

import aiohttp
import numpy as np
import pytest
from PIL import Image

from cortexcast.display.render import decode_frame
from cortexcast.stream.pubsub import Publisher

REPO = Path(__file__).resolve().parents[1]
H, W = 36, 64


def stim_pixels(i: int) -> np.ndarray:
    yy, xx = np.mgrid[0:H, 0:W]
    return ((xx * 3 + yy * 5 + i * 7) % 256).astype(np.uint8)


def recon_pixels(i: int) -> np.ndarray:
    return (255.0 - stim_pixels(i)).astype(np.float32)  # integer-valued: survives uint8 exactly


class Rig:
    """A daq and a decoder publisher on random loopback ports."""

    def __init__(self) -> None:
        self.daq = Publisher("tcp://127.0.0.1:0", "daq", hwm=10_000)
        self.decoder = Publisher("tcp://127.0.0.1:0", "decoder", hwm=10_000)

    def wait_for_display(self, timeout_s: float = 20.0) -> None:
        assert self.daq.wait_for_subscribers({"stimulus": 1}, timeout_s), "display never subscribed"
        assert self.decoder.wait_for_subscribers({"reconstruction": 1}, timeout_s)

    def send(self, i: int) -> None:
        self.daq.publish("stimulus", "stimulus", [stim_pixels(i)], t_acq=i / 30,
                         meta={"stim_frame": i, "clip": 0, "clip_frame": i})
        t = time.monotonic_ns()
        self.decoder.publish("reconstruction", "reconstruction", [recon_pixels(i)], t_acq=i / 30,
                             stamps=[("daq.acq", t - 2_000_000), ("daq.pub", t - 1_000_000)],
                             meta={"imaging_frame": i + 2, "stim_frame": i, "lag": 2,
                                   "model": "test"})

    def close(self) -> None:
        self.daq.close()
        self.decoder.close()


@pytest.fixture
def rig() -> Iterator[Rig]:
    r = Rig()
    yield r
    r.close()


class DisplayProc:
    """``python -m display`` as a subprocess, its stdout read line by line in a thread."""

    def __init__(self, rig: Rig, *args: str) -> None:
        env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "display", "--stimulus-from", rig.daq.address,
             "--reconstruction-from", rig.decoder.address, *args],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=REPO)
        self.lines: queue.Queue[str] = queue.Queue()
        self.output: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.output.append(line)
            self.lines.put(line)

    def wait_for_line(self, prefix: str, timeout_s: float = 20.0) -> str:
        deadline = time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                break
            if line.startswith(prefix):
                return line.strip()
        raise AssertionError(f"no line {prefix!r}; output so far:\n{''.join(self.output)}")

    def stop(self, sig: int = signal.SIGINT, timeout_s: float = 15.0) -> int:
        self.proc.send_signal(sig)
        return self.wait(timeout_s)

    def wait(self, timeout_s: float = 15.0) -> int:
        code = self.proc.wait(timeout_s)
        self._reader.join(timeout_s)  # all of stdout read
        return code

    def kill(self) -> None:
        """Always called last: kill if still running, release the pipe."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._reader.join(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


async def _poll_stats(session: aiohttp.ClientSession, url: str, n: int,
                      timeout_s: float = 15.0) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        async with session.get(url + "api/stats") as r:
            assert r.status == 200
            stats = await r.json()
        if stats["received"] == {"stimulus": n, "reconstruction": n} or \
                time.monotonic() > deadline:
            return stats
        await asyncio.sleep(0.05)


async def _browse(url: str, n: int) -> tuple[dict, str, dict, np.ndarray, np.ndarray, dict]:
    async with aiohttp.ClientSession() as session:
        # A browser that connects and never reads must not hold anything up.
        stalled = await session.ws_connect(url + "ws")
        stats = await _poll_stats(session, url, n)
        async with session.get(url) as r:
            assert r.status == 200 and r.content_type == "text/html"
            page = await r.text()
        async with session.get(url + "static/display.js") as r:
            assert r.status == 200
        async with session.ws_connect(url + "ws") as ws:
            status, frame = None, None
            while status is None or frame is None:
                msg = await ws.receive(timeout=10)
                if msg.type == aiohttp.WSMsgType.TEXT:
                    status = json.loads(msg.data)
                elif msg.type == aiohttp.WSMsgType.BINARY:
                    header, stim, recon = decode_frame(msg.data)
                    if header["recon_stim_frame"] == n - 1:
                        frame = header
                else:
                    raise AssertionError(f"unexpected WebSocket message {msg}")
        await stalled.close()
        return stats, page, frame, stim, recon, status


def test_display_serves_page_stats_and_frames_then_stops_on_sigint(rig, tmp_path) -> None:
    stats_out = tmp_path / "stats.json"
    disp = DisplayProc(rig, "--port", "0", "--stats-out", str(stats_out))
    try:
        url = disp.wait_for_line("display: open ").split()[-1]
        rig.wait_for_display()
        n = 300
        for i in range(n):
            rig.send(i)
        stats, page, header, stim, recon, status = asyncio.run(_browse(url, n))
        assert stats["received"] == {"stimulus": n, "reconstruction": n}, stats
        assert stats["dropped"] == 0 and stats["paired"] == n and not stats["bad"]
        assert stats["latency_ms"]["end_to_end"]["n"] == n
        assert "daq.acq\u2192daq.pub" in stats["latency_ms"]
        # One self-contained document: script and style inline, nothing fetched from anywhere.
        assert "<canvas" in page and "new WebSocket(" in page and "<style>" in page
        assert not re.search(r"\b(src|href)\s*=", page) and "/static/" not in page
        assert header["paired"] and header["stim_frame"] == n - 1
        assert header["imaging_frame"] == n + 1
        np.testing.assert_array_equal(stim, stim_pixels(n - 1))
        np.testing.assert_array_equal(recon, recon_pixels(n - 1).astype(np.uint8))
        assert status["type"] == "status" and status["received"]["reconstruction"] == n
        assert disp.stop(signal.SIGINT) == 0
    finally:
        disp.kill()
    final = json.loads(stats_out.read_text())
    assert final["received"] == {"stimulus": n, "reconstruction": n}
    assert final["shown"] >= 1 and final["web"]["connections"] == 2
    assert final["correlation_frames"] == 300 and final["correlation"] is not None
    assert "received 300 stimulus / 300 reconstruction" in disp.output[-1]


def test_headless_save_gif_until_duration(rig, tmp_path) -> None:
    gif, stats_out = tmp_path / "out.gif", tmp_path / "stats.json"
    disp = DisplayProc(rig, "--headless", "--save", str(gif), "--duration", "1.5",
                       "--stats-out", str(stats_out))
    try:
        disp.wait_for_line("display: headless")
        rig.wait_for_display()
        t0, i = time.monotonic(), 0
        while disp.proc.poll() is None and time.monotonic() - t0 < 15:  # feed at 30 Hz to the end
            rig.send(i)
            i += 1
            time.sleep(max(0.0, t0 + i / 30 - time.monotonic()))
        assert disp.wait(15) == 0
    finally:
        disp.kill()
    stats = json.loads(stats_out.read_text())
    assert stats["saved"]["frames"] >= 5 and stats["shown"] == stats["saved"]["frames"]
    with Image.open(gif) as im:
        scale = 8
        assert im.size == ((2 * W + 1) * scale, H * scale)
        assert im.n_frames == stats["saved"]["frames"]
        im.seek(im.n_frames - 1)
        last = np.asarray(im.convert("L"))
    left, right = last[::scale, : W * scale : scale], last[::scale, (W + 1) * scale :: scale]
    shown = [k for k in range(i) if np.array_equal(left, stim_pixels(k))]
    assert shown, "the saved stimulus is none of the frames sent"
    # Paired, or (if the last tick fell between the two sockets' arrivals) the next one's
    # reconstruction shown next to the live stimulus.
    assert any(np.array_equal(right, recon_pixels(k).astype(np.uint8))
               for k in (shown[0], shown[0] + 1))
