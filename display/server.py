"""The display process: receive every message, show the newest pair, keep statistics.

Four parts, none of which can slow the receiver:

* a receiver thread owns the ZeroMQ SUB socket, takes EVERY message (so the
  latency statistics see all of them), stamps ``display.recv`` on arrival and
  feeds the :class:`~cortexcast.display.state.DisplayState` (under a lock held for
  microseconds);
* an asyncio loop ticks at ``fps``: it takes the newest view (older ones count
  as skipped), encodes it once and offers it to every browser (newest only,
  see :mod:`cortexcast.display.web`) and to the saver; it refreshes the status at 4 Hz;
* once a second a task has the running correlation recomputed in a worker
  process (see :mod:`cortexcast.display.correlation` for why not in this one);
* the aiohttp server (unless ``headless``), behind the Host/Origin/token checks of
  :mod:`cortexcast.display.access`; what it serves carries no file paths.

Stops on SIGINT/SIGTERM or after ``duration_s``; then writes ``stats_out``.
"""

from __future__ import annotations

from cortexcast.core.errors import CortexcastError
import asyncio
import json
import logging
import os
import secrets
import sys
import threading
import time
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any, TextIO

import numpy as np
from aiohttp import web

from cortexcast.core.platform import add_async_stop_handlers
from cortexcast.core.runtime import supervisor_heartbeat
from cortexcast.decoder.live.mask_file import read_mask
from cortexcast.display.access import (TOKEN_ENV, AccessPolicy, base_name, is_loopback,
                                       public_json, settings_json)
from cortexcast.display.correlation import CorrelationWorker
from cortexcast.display.latency import END_TO_END_KEY
from cortexcast.display.render import FrameSaver, compose, encode_frame
from cortexcast.display.settings import DisplaySettings
from cortexcast.display.state import RECONSTRUCTION, STIMULUS, DisplayState
from cortexcast.display.web import Hub, make_app
from cortexcast.stream.pubsub import Subscriber
from cortexcast.stream.security import SecuritySettings

log = logging.getLogger(__name__)

RECV_STAGE = "display.recv"
STATUS_PERIOD_S = 0.25
CORRELATION_PERIOD_S = 1.0
RX_SWITCH_INTERVAL_S = 0.0005
_RX_POLL_S = 0.05
_RX_STATS_PERIOD_S = 0.1


class DisplayError(CortexcastError, RuntimeError):
    """The display could not start (bad mask file, port in use, ...)."""


def load_mask(path: str | None) -> np.ndarray | None:
    if path is None:
        return None
    return read_mask(path, None, DisplayError)


class Display:
    """One display process. ``run()`` blocks until stopped and returns an exit code."""

    def __init__(self, settings: DisplaySettings, *, out: TextIO | None = None,
                 security: SecuritySettings | None = None) -> None:
        self.settings = settings
        self.security = security
        """The config's [security]: the subscriber is a CURVE client with its keys."""
        self.out = out or sys.stdout
        self.state = DisplayState(settings.correlation_window, mask=load_mask(settings.eval_mask))
        self.lock = threading.Lock()
        self.hub = Hub(self.public_stats)
        # Made here, not in the (frozen) settings: a fresh one per start unless configured.
        self.token = settings.token or os.environ.get(TOKEN_ENV) or secrets.token_urlsafe(24)
        self.access = AccessPolicy.from_settings(settings, self.token)
        self.worker = CorrelationWorker()
        self.url: str | None = None
        self.app: web.Application | None = None  # once serving (tests list its routes)
        self.saver: FrameSaver | None = None
        self._t0 = time.monotonic()
        self._rx_stop = threading.Event()
        self._rx_error: BaseException | None = None
        self._stop: asyncio.Event | None = None
        self._failed = False

    # -- receiving (own thread) ---------------------------------------------
    def _receive(self, sub: Subscriber, loop: asyncio.AbstractEventLoop) -> None:
        last_stats = 0.0
        try:
            while not self._rx_stop.is_set():
                msg = sub.recv(timeout_s=_RX_POLL_S)
                if msg is not None:
                    msg = msg.stamped(RECV_STAGE)
                    with self.lock:
                        self.state.ingest(msg)
                now = time.monotonic()
                if now - last_stats >= _RX_STATS_PERIOD_S or self._rx_stop.is_set():
                    last_stats = now
                    self._push_stream_stats(sub, now)
            self._push_stream_stats(sub, time.monotonic())
        except Exception as exc:  # never die silently: stop the process with an error
            log.exception("display: receiver failed")
            self._rx_error = exc
            if self._stop is not None:
                loop.call_soon_threadsafe(self._stop.set)
        finally:
            sub.close()

    def _push_stream_stats(self, sub: Subscriber, now: float) -> None:
        stats = sub.stats.as_dict()
        producers = {src: now - t for src, t in sub.last_heartbeat.items()}
        with self.lock:
            self.state.set_stream_stats(stats, producers)

    # -- the asyncio side ---------------------------------------------------
    def stats(self, cdf: bool = True) -> dict[str, Any]:
        """Everything ``stats_out`` and the summary report (the token hidden); ``cdf``: with
        each latency span's distribution (``latency_cdf_ms``, for bench's picture)."""
        with self.lock:
            summary = self.state.summary()
            if cdf:
                summary["latency_cdf_ms"] = self.state.latency.cdf()
        s = self.settings
        return {
            "process": "display",
            "url": self.url,
            "uptime_s": round(time.monotonic() - self._t0, 3),
            **summary,
            "web": self.hub.stats(),
            "saved": None if self.saver is None else {
                "path": str(self.saver.target), "frames": self.saver.frames},
            "settings": settings_json(s, public=False),
        }

    def public_stats(self) -> dict[str, Any]:
        """:meth:`stats` for ``/api/stats`` and the page: file paths reduced to file names."""
        stats = self.stats(cdf=False)  # 4 times a second to the page: kept small
        if stats["saved"] is not None:
            stats["saved"]["path"] = base_name(stats["saved"]["path"])
        stats["settings"] = settings_json(self.settings, public=True)
        return public_json(stats)

    async def _tick(self) -> None:
        period = 1.0 / self.settings.fps
        loop = asyncio.get_running_loop()
        next_t = loop.time()
        while True:
            supervisor_heartbeat("display")  # this loop turning = the display is alive
            with self.lock:
                view = self.state.take_view()
            if view is not None:
                if self.hub.clients or not self.settings.headless:
                    self.hub.publish_frame(encode_frame(view))
                if self.saver is not None:
                    self.saver.add(compose(view, self.settings.scale))
            next_t += period
            delay = next_t - loop.time()
            if delay < 0:  # fell behind (e.g. a slow disk): do not try to catch up
                next_t, delay = loop.time(), 0.0
            await asyncio.sleep(delay)

    async def _status(self) -> None:
        while True:
            if self.hub.clients:
                self.hub.publish_status(self.public_stats())
            await asyncio.sleep(STATUS_PERIOD_S)

    async def _correlation(self) -> None:
        """Refresh the running correlation once a second, in the worker process."""
        last_paired = -1
        while True:
            await asyncio.sleep(CORRELATION_PERIOD_S)
            with self.lock:
                if self.state.paired == last_paired:
                    continue
                last_paired = self.state.paired
                recons, targets = self.state.paired_window()
                mask = self.state.correlation_mask(recons.shape[1:])
            if len(recons) < 2:
                continue
            try:
                r = await asyncio.wrap_future(self.worker.submit(recons, targets, mask))
            except (ImportError, ValueError, OSError, BrokenProcessPool) as exc:
                error = f"{type(exc).__name__}: {exc}"
                log.warning("display: running correlation unavailable: %s", error)
                with self.lock:
                    self.state.set_correlation(None, len(recons), error)
                return
            with self.lock:
                self.state.set_correlation(r, len(recons))

    async def _start_web(self) -> web.AppRunner:
        s = self.settings
        runner = web.AppRunner(make_app(self.hub, self.public_stats, self.access),
                               access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, s.host, s.port, shutdown_timeout=2.0)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise DisplayError(f"cannot serve on {s.host}:{s.port}: {exc}") from exc
        self.app = runner.app
        port = runner.addresses[0][1]
        host = f"[{s.host}]" if ":" in s.host else s.host
        self.url = f"http://{host}:{port}/"
        return runner

    def open_url(self) -> str | None:
        """The URL the operator opens: :attr:`url`, with ``?token=`` when one is required
        (not in :attr:`url` itself, which ``/api/stats`` and ``stats_out`` show)."""
        if self.url is None or self.access.token is None:
            return self.url
        return f"{self.url}?token={self.token}"

    def _print(self, text: str) -> None:
        print(f"display: {text}", file=self.out, flush=True)

    async def _main(self) -> int:
        s = self.settings
        loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        if not s.headless and s.require_token is False and not is_loopback(s.host):
            log.warning("display: serving on %s without a token (require_token = false)",
                        s.host)
        # SIGINT, SIGTERM (and Windows' SIGBREAK, the supervisor's CTRL_BREAK): a clean stop.
        add_async_stop_handlers(loop, self._stop.set)
        endpoints = list(dict.fromkeys([s.stimulus_from, s.reconstruction_from]))
        sub = Subscriber(endpoints, [STIMULUS, RECONSTRUCTION], hwm=s.hwm, name="display",
                         security=self.security)
        rx = threading.Thread(target=self._receive, args=(sub, loop), name="display-rx",
                              daemon=True)
        runner = None
        tasks: list[asyncio.Task] = []
        try:
            if s.save is not None:
                self.saver = FrameSaver(s.save, s.fps)
            if not s.headless:
                runner = await self._start_web()
            self.worker.start()
            rx.start()
            self._print(f"stimulus from {s.stimulus_from}, reconstruction from "
                        f"{s.reconstruction_from}")
            if self.url:
                self._print(f"open {self.open_url()}")
            else:
                self._print("headless" + (f", saving to {s.save}" if s.save else ""))
            tasks = [asyncio.create_task(c)
                     for c in (self._tick(), self._status(), self._correlation())]
            for t in tasks:
                t.add_done_callback(self._task_done)
            try:
                await asyncio.wait_for(self._stop.wait(), s.duration_s)
            except asyncio.TimeoutError:
                pass
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if runner is not None:
                await self.hub.close_all()
                await runner.cleanup()
            self._rx_stop.set()
            if rx.is_alive():
                await loop.run_in_executor(None, rx.join)
            else:
                sub.close()
            await loop.run_in_executor(None, self.worker.close)
            if self.saver is not None:
                self.saver.close()
        await self._finish()
        return 1 if self._rx_error is not None or self._failed else 0

    def _task_done(self, task: asyncio.Task) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("display: %s failed", task.get_coro().__qualname__,
                      exc_info=task.exception())
            self._failed = True
            if self._stop is not None:
                self._stop.set()

    async def _finish(self) -> None:
        # One last correlation over what arrived, so the summary has one (here, in this
        # process: nothing is being received any more).
        with self.lock:
            recons, targets = self.state.paired_window()
        try:
            r = await asyncio.get_running_loop().run_in_executor(
                None, self.state.compute_correlation, recons, targets)
            error = None
        except (ImportError, ValueError) as exc:
            r, error = None, f"{type(exc).__name__}: {exc}"
        with self.lock:
            self.state.set_correlation(r, len(recons), error)
        stats = self.stats()
        if self.settings.stats_out:
            path = Path(self.settings.stats_out)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text(json.dumps(stats, indent=2, ensure_ascii=False) + "\n")
            tmp.replace(path)
        self._print(summary_line(stats))

    def run(self) -> int:
        # A thread that wakes up for a message waits for the GIL until whoever holds it
        # reaches the switch interval (5 ms by default): keep that short for the receiver.
        sys.setswitchinterval(RX_SWITCH_INTERVAL_S)
        return asyncio.run(self._main())


def summary_line(stats: dict[str, Any]) -> str:
    rx = stats["received"]
    e2e = stats["latency_ms"].get(END_TO_END_KEY)
    lat = (f"e2e p50 {e2e['p50']:.2f} / p99 {e2e['p99']:.2f} / max {e2e['max']:.2f} ms"
           if e2e else "e2e latency n/a")
    r = stats["correlation"]
    corr = f"r {r:.3f} over {stats['correlation_frames']} frames" if r is not None else "r n/a"
    return (f"received {rx[STIMULUS]} stimulus / {rx[RECONSTRUCTION]} reconstruction, "
            f"shown {stats['shown']}, skipped {stats['skipped']}, dropped {stats['dropped']}, "
            f"{lat}, {corr}")
