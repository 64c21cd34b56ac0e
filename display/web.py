"""The operator's page: HTTP routes and WebSocket fan-out (aiohttp).

Knows nothing about ZeroMQ. The display process hands the :class:`Hub` each
new encoded frame and status; the hub keeps, per browser, at most ONE pending
frame and one pending status ("newest only"): a slow browser only ever
misses frames, it never queues them and never slows anything upstream.

Routes: ``/`` the page (script and style inlined), ``/static/*`` the same
files separately (for development), ``/ws`` the
WebSocket (binary frames, see :mod:`cortexcast.display.render`; text JSON status
messages ``{"type": "status", ...}``), ``/api/stats`` the same status as JSON.
Every route sits behind the Host/Origin/token checks of :mod:`cortexcast.display.access`
when the app is given an :class:`~cortexcast.display.access.AccessPolicy`.
"""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any, Callable

from aiohttp import WSCloseCode, WSMsgType, web

from cortexcast.display.access import AccessPolicy, access_middleware

log = logging.getLogger(__name__)

STATIC = Path(__file__).with_name("static")


class Client:
    """One connected browser: a one-slot mailbox for frames and one for status."""

    def __init__(self, ws: web.WebSocketResponse) -> None:
        self.ws = ws
        self._frame: bytes | None = None
        self._status: str | None = None
        self._wake = asyncio.Event()
        self.sent = 0
        self.replaced = 0  # frames overwritten before this browser took them

    def offer_frame(self, data: bytes) -> None:
        if self._frame is not None:
            self.replaced += 1
        self._frame = data
        self._wake.set()

    def offer_status(self, text: str) -> None:
        self._status = text
        self._wake.set()

    async def pump(self) -> None:
        """Send whatever is pending, newest only, until the socket closes."""
        while not self.ws.closed:
            await self._wake.wait()
            self._wake.clear()
            status, self._status = self._status, None
            frame, self._frame = self._frame, None
            try:
                if status is not None:
                    await self.ws.send_str(status)
                if frame is not None:
                    await self.ws.send_bytes(frame)
                    self.sent += 1
            except (ConnectionError, RuntimeError):  # browser went away mid-send
                return


class Hub:
    """The set of connected browsers and the newest frame/status for newcomers."""

    def __init__(self, status: Callable[[], dict[str, Any]] | None = None) -> None:
        self.status = status  # fresh status for a newly connected browser
        self.clients: set[Client] = set()
        self.latest_frame: bytes | None = None
        self.latest_status: str | None = None
        self.connections = 0
        self._gone_sent = 0
        self._gone_replaced = 0

    def publish_frame(self, data: bytes) -> None:
        self.latest_frame = data
        for c in self.clients:
            c.offer_frame(data)

    def publish_status(self, status: dict[str, Any]) -> None:
        self.latest_status = json.dumps({"type": "status", **status}, separators=(",", ":"))
        for c in self.clients:
            c.offer_status(self.latest_status)

    def stats(self) -> dict[str, int]:
        return {
            "clients": len(self.clients),
            "connections": self.connections,
            "frames_sent": self._gone_sent + sum(c.sent for c in self.clients),
            "frames_replaced": self._gone_replaced + sum(c.replaced for c in self.clients),
        }

    async def close_all(self) -> None:
        for c in list(self.clients):
            await c.ws.close(code=WSCloseCode.GOING_AWAY, message=b"display stopping")

    async def handle_ws(self, request: web.Request) -> web.WebSocketResponse:
        # No compression (noisy pixels barely shrink); short close handshake on shutdown.
        ws = web.WebSocketResponse(heartbeat=10.0, timeout=2.0, compress=False)
        await ws.prepare(request)
        client = Client(ws)
        self.clients.add(client)
        self.connections += 1
        if self.status is not None:  # a fresh status now, not at the next 4 Hz tick
            self.publish_status(self.status())
        elif self.latest_status is not None:
            client.offer_status(self.latest_status)
        if self.latest_frame is not None:
            client.offer_frame(self.latest_frame)
        pump = asyncio.create_task(client.pump())
        try:
            async for msg in ws:  # the page sends nothing we need; just notice closing
                if msg.type == WSMsgType.ERROR:
                    break
        finally:
            self.clients.discard(client)
            self._gone_sent += client.sent
            self._gone_replaced += client.replaced
            pump.cancel()
            await asyncio.gather(pump, return_exceptions=True)
        return ws


def page() -> bytes:
    """index.html with its style sheet and script inlined: one self-contained document."""
    html = (STATIC / "index.html").read_text(encoding="utf-8")
    css = (STATIC / "display.css").read_text(encoding="utf-8")
    js = (STATIC / "display.js").read_text(encoding="utf-8")
    html = html.replace('<link rel="stylesheet" href="/static/display.css">',
                        f"<style>\n{css}</style>")
    return html.replace('<script src="/static/display.js"></script>',
                        f"<script>\n{js}</script>").encode()


def make_app(hub: Hub, stats: Callable[[], dict[str, Any]],
             access: AccessPolicy | None = None) -> web.Application:
    """The aiohttp application; ``stats`` returns the JSON for ``/api/stats`` (already
    free of file paths); ``access`` guards every route (None: no checks, for tests)."""
    body = page()

    async def index(_: web.Request) -> web.Response:
        # no-referrer: the URL may carry ?token= (the page fetches nothing, but be sure).
        return web.Response(body=body, content_type="text/html", charset="utf-8",
                            headers={"Cache-Control": "no-store",
                                     "Referrer-Policy": "no-referrer"})

    async def api_stats(_: web.Request) -> web.Response:
        return web.json_response(stats(), dumps=lambda o: json.dumps(o, ensure_ascii=False))

    app = web.Application(middlewares=[] if access is None else [access_middleware(access)])
    app.router.add_get("/", index)
    app.router.add_get("/ws", hub.handle_ws)
    app.router.add_get("/api/stats", api_stats)
    app.router.add_static("/static/", STATIC)
    return app
