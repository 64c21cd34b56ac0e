"""Who may read the display: token, Host and Origin checks, and no file paths in /api/*.

The display runs for real (its own event loop in a thread, an aiohttp server on a free
port, test publishers feeding it); every check is made with real HTTP/WebSocket requests.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import re
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import aiohttp
import numpy as np
import pytest

from cortexcast.core.config import ConfigError, load_settings
from cortexcast.display.access import public_json, strip_paths
from cortexcast.display.server import Display
from cortexcast.display.settings import DisplaySettings
from cortexcast.stream.pubsub import Publisher

H, W = 36, 64
EVIL = "http://evil.example"


class Running:
    """A :class:`Display` serving in a background thread until :meth:`stop`."""

    def __init__(self, tmp_path: Path, daq_endpoint: str = "tcp://127.0.0.1:0",
                 **settings: Any) -> None:
        self.daq = Publisher(daq_endpoint, "daq", hwm=1000)
        self.decoder = Publisher("tcp://127.0.0.1:0", "decoder", hwm=1000)
        self.settings = DisplaySettings(stimulus_from=self.daq.address,
                                        reconstruction_from=self.decoder.address,
                                        port=0, **settings)
        self.out = io.StringIO()
        self.display = Display(self.settings, out=self.out)
        self.loop = asyncio.new_event_loop()
        self.code: int | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 20
        while "display: open " not in self.out.getvalue():
            assert self.thread.is_alive() and time.monotonic() < deadline, self.out.getvalue()
            time.sleep(0.02)
        line = next(x for x in self.out.getvalue().splitlines() if x.startswith("display: open "))
        self.open_url = line.split()[-1]
        self.url = self.display.url
        assert self.url is not None

    def _run(self) -> None:
        self.code = self.loop.run_until_complete(self.display._main())

    def send(self, n: int) -> None:
        assert self.daq.wait_for_subscribers({"stimulus": 1}, 20)
        assert self.decoder.wait_for_subscribers({"reconstruction": 1}, 20)
        yy, xx = np.mgrid[0:H, 0:W]
        for i in range(n):
            stim = ((xx + yy + i) % 256).astype(np.uint8)
            self.daq.publish("stimulus", "stimulus", [stim], t_acq=i / 30,
                             meta={"stim_frame": i, "clip": 0, "clip_frame": i})
            self.decoder.publish("reconstruction", "reconstruction",
                                 [stim.astype(np.float32)], t_acq=i / 30,
                                 meta={"imaging_frame": i, "stim_frame": i, "lag": 0})

    def stop(self) -> int | None:
        if self.thread.is_alive() and self.display._stop is not None:
            self.loop.call_soon_threadsafe(self.display._stop.set)
        self.thread.join(30)
        if not self.thread.is_alive() and not self.loop.is_closed():
            self.loop.close()
        self.daq.close()
        self.decoder.close()
        return self.code


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Any]:
    started: list[Running] = []

    def start(**settings: Any) -> Running:
        started.append(Running(tmp_path, **settings))
        return started[-1]

    yield start
    for r in started:
        r.stop()


async def _get(s: aiohttp.ClientSession, url: str,
               headers: dict[str, str] | None = None) -> tuple[int, str, Any]:
    async with s.get(url, headers=headers or {}) as r:
        return r.status, await r.text(), r.headers


async def _ws(s: aiohttp.ClientSession, url: str, origin: str | None = None,
              headers: dict[str, str] | None = None) -> int | dict:
    try:
        async with s.ws_connect(url, origin=origin, headers=headers or {}) as ws:
            while True:
                msg = await ws.receive(timeout=10)
                if msg.type == aiohttp.WSMsgType.TEXT:
                    return json.loads(msg.data)
                assert msg.type == aiohttp.WSMsgType.BINARY, msg
    except aiohttp.WSServerHandshakeError as exc:
        return exc.status


def fetch(url: str, *, headers: dict[str, str] | None = None) -> tuple[int, str, Any]:
    """GET ``url`` in a fresh session: (status, body, response headers)."""
    async def go() -> tuple[int, str, Any]:
        async with aiohttp.ClientSession() as s:
            return await _get(s, url, headers)
    return asyncio.run(go())


def ws_status(url: str, *, origin: str | None = None,
              headers: dict[str, str] | None = None) -> int | dict:
    """Open ``/ws`` in a fresh session: its first status message, or the refusing status."""
    async def go() -> int | dict:
        async with aiohttp.ClientSession() as s:
            return await _ws(s, url, origin, headers)
    return asyncio.run(go())


def test_loopback_default_serves_without_token(serve) -> None:
    r = serve()
    assert r.open_url == r.url and "token" not in r.open_url  # nothing to add on loopback
    assert fetch(r.url)[0] == 200
    status, body, _ = fetch(r.url + "api/stats")
    assert status == 200 and json.loads(body)["process"] == "display"
    assert isinstance(ws_status(r.url + "ws"), dict)
    # The page's own origin is fine, with or without the default port spelled out.
    assert isinstance(ws_status(r.url + "ws", origin=r.url.rstrip("/")), dict)


@pytest.mark.parametrize("path", ["", "api/stats", "static/display.js", "no/such/route"])
def test_required_token_refuses_every_route_without_it(serve, path: str) -> None:
    r = serve(require_token=True)
    assert r.display.token in r.open_url
    status, body, headers = fetch(r.url + path)
    assert status == 401 and headers["WWW-Authenticate"].startswith("Bearer")
    assert len(body) < 80 and "{" not in body and "received" not in body
    status, body, _ = fetch(r.url + path + "?token=wrong-token-of-some-length")
    assert status == 403 and len(body) < 80
    status, _, _ = fetch(r.url + path, headers={"Authorization": "Bearer nope"})
    assert status == 403


def test_required_token_refuses_websocket_without_it(serve) -> None:
    r = serve(require_token=True)
    assert ws_status(r.url + "ws") == 401
    assert ws_status(r.url + "ws?token=" + "x" * 32) == 403
    assert r.display.hub.connections == 0


def test_token_by_query_header_or_the_cookie_the_page_sets(serve) -> None:
    r = serve(require_token=True)
    r.send(5)
    token = r.display.token
    assert r.open_url == f"{r.url}?token={token}"
    # The URL the display printed: the page, and an HttpOnly SameSite=Strict cookie; the
    # page's own calls then carry only the cookie.
    async def browser() -> tuple[tuple[int, str, Any], tuple[int, str, Any], Any]:
        jar = aiohttp.CookieJar(unsafe=True)  # unsafe: keep cookies of an IP-address host
        async with aiohttp.ClientSession(cookie_jar=jar) as s:
            page = await _get(s, r.open_url)
            return page, await _get(s, r.url + "api/stats"), \
                await _ws(s, r.url + "ws", origin=r.url.rstrip("/"))
    page, api, ws = asyncio.run(browser())
    assert page[0] == 200 and "<canvas" in page[1]
    cookie = page[2]["Set-Cookie"]
    assert token in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert api[0] == 200 and json.loads(api[1])["process"] == "display"
    assert ws["type"] == "status"
    # Scripts: a bearer header or the query parameter.
    bearer = {"Authorization": f"Bearer {token}"}
    assert fetch(r.url + "api/stats", headers=bearer)[0] == 200
    assert fetch(r.url + f"api/stats?token={token}")[0] == 200
    assert ws_status(r.url + "ws", headers=bearer)["type"] == "status"
    assert ws_status(r.url + f"ws?token={token}")["type"] == "status"
    # The token is never part of what is served or written.
    stats = fetch(r.url + "api/stats", headers=bearer)[1]
    assert token not in stats
    assert r.stop() == 0
    assert token not in r.out.getvalue().split("display: open ", 1)[1].split("\n", 1)[1]


def test_configured_token_is_used(serve) -> None:
    token = "a-fixed-token-0123456789"
    r = serve(require_token=True, token=token)
    assert r.open_url.endswith(f"?token={token}")
    assert fetch(r.url + "api/stats", headers={"Authorization": f"Bearer {token}"})[0] == 200
    assert fetch(r.url + "api/stats")[0] == 401


@pytest.mark.parametrize("require", [True, "auto"])
def test_evil_origin_on_websocket_refused_even_with_token(serve, require: Any) -> None:
    r = serve(require_token=require)
    port = r.url.rsplit(":", 1)[1].strip("/")
    url = r.url + f"ws?token={r.display.token}"
    for origin in (EVIL, f"http://evil.example:{port}", "http://127.0.0.1:1", "null",
                   f"file://127.0.0.1:{port}"):
        assert ws_status(url, origin=origin) == 403, origin
    assert r.display.hub.connections == 0
    assert isinstance(ws_status(url, origin=f"http://localhost:{port}"), dict)


def test_cross_origin_state_changing_request_refused(serve) -> None:
    r = serve()

    async def post(origin: str | None) -> int:
        async with aiohttp.ClientSession() as s:
            headers = {} if origin is None else {"Origin": origin}
            async with s.post(r.url + "api/stats", headers=headers) as resp:
                return resp.status
    assert asyncio.run(post(EVIL)) == 403
    assert asyncio.run(post(None)) == 405  # reaches the router: there is no POST route


@pytest.mark.parametrize("require", [True, "auto"])
def test_unknown_host_header_refused(serve, require: Any) -> None:
    r = serve(require_token=require, allowed_hosts=("rig-3.lab",))
    port = r.url.rsplit(":", 1)[1].strip("/")
    bearer = {"Authorization": f"Bearer {r.display.token}"}
    for host in ("evil.example", f"evil.example:{port}", f"127.0.0.1.evil.example:{port}",
                 "user@127.0.0.1", ""):
        status, body, _ = fetch(r.url + "api/stats", headers={**bearer, "Host": host})
        assert status == 403 and "Host" in body, host
    assert ws_status(r.url + "ws", headers={**bearer, "Host": f"evil.example:{port}"}) == 403
    for host in (f"localhost:{port}", f"RIG-3.lab:{port}", f"[::1]:{port}"):
        assert fetch(r.url + "api/stats", headers={**bearer, "Host": host})[0] == 200, host


def test_every_interface_bind_requires_token_by_default(serve) -> None:
    try:
        r = serve(host="0.0.0.0")
    except AssertionError as exc:  # pragma: no cover - a machine that cannot bind 0.0.0.0
        pytest.skip(f"cannot serve on 0.0.0.0: {exc}")
    port = r.url.rsplit(":", 1)[1].strip("/")
    local = f"http://127.0.0.1:{port}/"
    assert r.open_url.startswith(r.url + "?token=")
    assert fetch(local)[0] == 401
    assert fetch(local + "api/stats")[0] == 401
    assert ws_status(local + "ws") == 401
    assert fetch(local + f"?token={r.display.token}")[0] == 200
    assert fetch(local + "api/stats", headers={"Host": f"evil.example:{port}"})[0] == 403


PATHLIKE = re.compile(r"^(/|[A-Za-z]:[\\/]|\\\\|~/)")


def path_strings(obj: Any, where: str = "") -> list[str]:
    """Every key or string in ``obj`` that looks like an absolute path, with where it is."""
    found = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            if PATHLIKE.match(str(k)):
                found.append(f"{where}/{k} (key)")
            found += path_strings(v, f"{where}/{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            found += path_strings(v, f"{where}[{i}]")
    elif isinstance(obj, str) and (PATHLIKE.match(obj) or "ipc:///" in obj):
        found.append(f"{where} = {obj!r}")
    return found


def test_no_file_paths_in_any_api_json(serve, tmp_path: Path) -> None:
    mask = tmp_path / "masks" / "eval_mask.npy"
    mask.parent.mkdir()
    np.save(mask, np.ones((H, W), bool))
    r = serve(daq_endpoint=f"ipc://{tmp_path}/daq.sock", save=str(tmp_path / "out.gif"),
              stats_out=str(tmp_path / "stats.json"), eval_mask=str(mask),
              require_token=True, token="a-fixed-token-0123456789")
    r.send(20)
    bearer = {"Authorization": "Bearer a-fixed-token-0123456789"}
    assert r.display.app is not None
    routes = sorted({res.canonical for res in r.display.app.router.resources()
                     if res.canonical.startswith("/api/")})
    assert "/api/stats" in routes
    served: dict[str, Any] = {}
    deadline = time.monotonic() + 15
    for route in routes:
        while True:
            status, body, headers = fetch(r.url + route.lstrip("/"), headers=bearer)
            assert status == 200 and "json" in headers["Content-Type"], (route, status)
            served[route] = json.loads(body)
            if route != "/api/stats" or served[route]["saved"]["frames"] > 0 \
                    or time.monotonic() > deadline:
                break
            time.sleep(0.05)
    served["/ws status"] = ws_status(r.url + "ws", headers=bearer)
    stats = served["/api/stats"]
    # The paths are there, as bare names: nothing lost but the directories.
    assert stats["saved"]["path"] == "out.gif" and stats["saved"]["frames"] > 0
    assert stats["settings"]["eval_mask"] == "eval_mask.npy"
    assert stats["settings"]["stats_out"] == "stats.json"
    assert stats["settings"]["stimulus_from"] == "ipc://daq.sock"
    assert stats["settings"]["token"] == "(hidden)"
    for name, doc in served.items():
        assert not path_strings(doc), (name, path_strings(doc))
        assert str(tmp_path) not in json.dumps(doc, ensure_ascii=False), name
        assert "a-fixed-token-0123456789" not in json.dumps(doc), name
    assert r.stop() == 0
    written = (tmp_path / "stats.json").read_text()  # the operator's own file keeps paths
    assert str(mask) in written and "a-fixed-token-0123456789" not in written


def test_public_json_reduces_paths_anywhere() -> None:
    doc = {"/abs/key": ["C:\\data\\mouse A\\run.ccr", "~/rec/s.ccr", "relative/ok"],
           "error": "ValueError: /home/op/masks/m.npy: cannot read mask (ipc:///tmp/x.sock)",
           "url": "http://127.0.0.1:8030/", "stage": "daq.acq\u2192daq.pub",
           "stream": "daq/stimulus", "n": 3}
    out = public_json(doc)
    assert out == {"key": ["run.ccr", "s.ccr", "relative/ok"],
                   "error": "ValueError: m.npy: cannot read mask (ipc://x.sock)",
                   "url": "http://127.0.0.1:8030/", "stage": "daq.acq\u2192daq.pub",
                   "stream": "daq/stimulus", "n": 3}
    assert not path_strings(out)
    assert strip_paths("/a/b/c.gif") == "c.gif" and strip_paths("D:/x/y.npy") == "y.npy"
    assert strip_paths("r over 300 / 10 s") == "r over 300 / 10 s"
    assert strip_paths("'\\\\server\\share\\x.ccr'") == "'x.ccr'"


def test_settings_validation_and_toml(tmp_path: Path) -> None:
    cfg = tmp_path / "rig.toml"
    cfg.write_text('[display]\nhost = "0.0.0.0"\nrequire_token = true\n'
                   'allowed_hosts = ["rig-3.lab", "10.0.0.7", "[::1]"]\n'
                   'token = "abcdefghijklmnopqrstuvwxyz"\n')
    s = load_settings(DisplaySettings, cfg, "display")
    assert s.require_token is True and s.allowed_hosts == ("rig-3.lab", "10.0.0.7", "[::1]")
    assert "abcdefghijklmnop" not in repr(s)
    assert DisplaySettings().require_token == "auto" and DisplaySettings().token == ""
    for bad, words in [({"token": "short"}, "at least 16"),
                       ({"token": "has spaces in this token"}, "token"),
                       ({"require_token": "sometimes"}, "require_token"),
                       ({"allowed_hosts": ("rig-3.lab:8030",)}, "allowed_hosts"),
                       ({"allowed_hosts": ("http://rig",)}, "allowed_hosts")]:
        with pytest.raises(ValueError, match=words):
            DisplaySettings(**bad)
    cfg.write_text('[display]\nallowed_hosts = ["rig/x"]\n')
    with pytest.raises(ConfigError, match="allowed_hosts"):
        load_settings(DisplaySettings, cfg, "display")


def test_up_hands_its_display_a_token_the_status_line_can_use(tmp_path: Path,
                                                              monkeypatch) -> None:
    """``up`` makes the token (same across display restarts) and its status line reads
    /api/stats with it; a board without it reads nothing."""
    from cortexcast.app.launcher import display_token
    from cortexcast.app.status import StatusBoard
    from cortexcast.display.access import TOKEN_ENV

    monkeypatch.delenv(TOKEN_ENV, raising=False)
    settings = {"display": DisplaySettings(require_token=True)}
    token = display_token(settings)
    assert token and display_token(settings) == token  # stable while up runs
    assert display_token({"display": DisplaySettings()}) is None  # loopback: none needed
    run = Running(tmp_path, require_token=True)
    try:
        assert run.display.token == token
        port = int(run.url.rstrip("/").rsplit(":", 1)[1])
        served = {"display": dataclasses.replace(run.settings, port=port)}
        with_token = StatusBoard(served, quiet=True, display_token=token)
        without = StatusBoard(served, quiet=True)
        stats = with_token._display_stats()
        assert stats and "settings" in stats, stats
        assert without._display_stats() == {}
        with_token.close()
        without.close()
    finally:
        run.stop()
