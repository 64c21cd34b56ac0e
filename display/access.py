"""Who may see the display, and what it tells them: Host, Origin and token checks; no paths.

A recording of a brain is sensitive, and the page lives in the operator's browser next to
every other site it has open. One aiohttp middleware runs before every route (the page,
``/static/*``, ``/api/*``, ``/ws`` and unknown paths alike):

1. **Host**, always. The ``Host`` header must name this display: the bound ``host``, the
   localhost names when bound to loopback or to every interface (``0.0.0.0``/``::``), the
   machine's name and any IP literal when bound to every interface, and ``allowed_hosts``.
   Otherwise 403: a page at ``evil.example`` whose DNS later points at this machine (DNS
   rebinding) sends ``Host: evil.example``. IP literals cannot be rebound, so they are safe.
2. **Origin**, when a request carries one (browsers do on WebSockets and state-changing
   requests). Its host must be this display's (the request's own ``Host`` or a name above,
   not "any IP") and its port the one the request came to; otherwise 403. Browsers do not
   apply the same-origin policy to WebSockets, so without this any open tab could read
   ``/ws``. A request without ``Origin`` (curl, scripts) goes on to the token rule.
3. **Token**, when required (``require_token``; ``"auto"``: when ``host`` is not loopback).
   Taken from ``Authorization: Bearer``, ``?token=`` or the cookie set by the first
   authorised load of ``/`` (HttpOnly, SameSite=Strict, so the page's own ``/ws`` works and
   no script or other site can read or send it); compared with :func:`hmac.compare_digest`.
   None presented: 401; a wrong one: 403. Refusals are a short plain line, nothing more.

:func:`public_json` reduces file paths in what ``/api/*`` and ``/ws`` serve to bare names.
"""

from __future__ import annotations

import dataclasses
import hmac
import ipaddress
import re
import socket
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

from aiohttp import web
from yarl import URL

from cortexcast.display.settings import DisplaySettings

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
WILDCARD_HOSTS = frozenset({"0.0.0.0", "::", ""})
COOKIE_PREFIX = "cortexcast_display_token"
#: What ``settings.token`` reads as in ``/api/stats`` and ``stats_out``.
HIDDEN = "(hidden)"
#: ``cortexcast up`` puts a token here for the display it starts (when the config sets none):
#: the same one across the display's restarts, and known to up's status line.
TOKEN_ENV = "CORTEXCAST_DISPLAY_TOKEN"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _bare(host: str) -> str:
    """``host`` lower-case, without IPv6 brackets or a trailing dot."""
    host = host.strip().lower()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host.rstrip(".")


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def is_loopback(host: str) -> bool:
    """127.x, ::1 or ``localhost``: reachable from this machine only."""
    h = _bare(host)
    if h == "localhost" or h.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(h).is_loopback
    except ValueError:
        return False


def is_wildcard(host: str) -> bool:
    """Bound to every interface (``0.0.0.0``, ``::``)."""
    return _bare(host) in WILDCARD_HOSTS


def token_required(settings: DisplaySettings) -> bool:
    if settings.require_token == "auto":
        return not is_loopback(settings.host)
    return bool(settings.require_token)


def split_host(value: str) -> tuple[str, int | None] | None:
    """A ``Host`` header as (bare lower-case host, port or None); None if malformed."""
    if not value or any(c in value for c in "/\\@?# \t"):
        return None
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            return None
        host, rest = value[1:end], value[end + 1:]
        if rest and not rest.startswith(":"):
            return None
        port = rest[1:] if rest else None
    elif ":" in value:
        host, _, port = value.rpartition(":")
        if ":" in host:  # an IPv6 literal must be bracketed
            return None
    else:
        host, port = value, None
    if port is not None and not (port.isdigit() and int(port) <= 65535):
        return None
    host = _bare(host)
    return (host, None if port is None else int(port)) if host else None


@dataclass(frozen=True)
class AccessPolicy:
    """What the middleware checks; :meth:`from_settings` builds it (see the module doc)."""

    token: str | None
    """The token every request must present; None: not required."""
    hosts: frozenset[str]
    """Names (bare, lower-case) the ``Host`` and ``Origin`` may carry."""
    any_ip: bool = False
    """Also accept any IP literal as ``Host`` (bound to every interface)."""

    @classmethod
    def from_settings(cls, settings: DisplaySettings, token: str) -> AccessPolicy:
        hosts = {_bare(settings.host)}
        if is_loopback(settings.host) or is_wildcard(settings.host):
            hosts |= LOOPBACK_NAMES
        if is_wildcard(settings.host):
            hosts.add(_bare(socket.gethostname()))
        hosts |= {_bare(h) for h in settings.allowed_hosts}
        hosts.discard("")  # bound to "" (every interface): no request names that
        return cls(token if token_required(settings) else None, frozenset(hosts),
                   is_wildcard(settings.host))

    def host_allowed(self, host: str) -> bool:
        return host in self.hosts or (self.any_ip and _is_ip(host))

    def origin_allowed(self, origin: str, host: str, port: int | None) -> bool:
        """``origin`` is this display, as reached by a request with ``Host: host:port``."""
        try:
            url = URL(origin)
        except ValueError:
            return False
        if url.scheme not in ("http", "https") or not url.host:
            return False  # includes "null" (sandboxed frames, file:// pages)
        o_host = _bare(url.host)
        if o_host != host and o_host not in self.hosts:
            return False
        expected = port if port is not None else (443 if url.scheme == "https" else 80)
        return url.port == expected

    def token_matches(self, value: str) -> bool:
        assert self.token is not None
        return hmac.compare_digest(value.encode(), self.token.encode())


def cookie_name(request: web.Request) -> str:
    """Per listening port: cookies ignore ports, and two displays on one machine must not
    overwrite each other's."""
    sock = request.transport.get_extra_info("sockname") if request.transport else None
    return f"{COOKIE_PREFIX}_{sock[1]}" if isinstance(sock, tuple) and len(sock) > 1 \
        else COOKIE_PREFIX


def presented_tokens(request: web.Request) -> list[tuple[str, str]]:
    """(where, value) of every token the request carries: header, query, cookie."""
    found = []
    auth = request.headers.get("Authorization", "")
    if auth[:7].lower() == "bearer ":
        found.append(("header", auth[7:].strip()))
    found += [("query", v) for v in request.query.getall("token", [])]
    cookie = request.cookies.get(cookie_name(request))
    if cookie is not None:
        found.append(("cookie", cookie))
    return found


def refuse(status: int, text: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, text=text + "\n",
                        headers={"Cache-Control": "no-store", **(headers or {})})


def access_middleware(policy: AccessPolicy) -> Any:
    """The aiohttp middleware applying ``policy`` to every request (see the module doc)."""

    @web.middleware
    async def check_access(request: web.Request, handler: Handler) -> web.StreamResponse:
        host = split_host(request.headers.get("Host", ""))
        if host is None or not policy.host_allowed(host[0]):
            return refuse(403, "forbidden: unknown Host")
        origin = request.headers.get("Origin")
        if origin is not None and not policy.origin_allowed(origin, *host):
            return refuse(403, "forbidden: cross-origin request")
        set_cookie = False
        if policy.token is not None:
            tokens = presented_tokens(request)
            if not tokens:
                return refuse(401, "token required (open the URL the display printed)",
                              {"WWW-Authenticate": 'Bearer realm="cortexcast display"'})
            good = {where for where, value in tokens if policy.token_matches(value)}
            if not good:
                return refuse(403, "forbidden: wrong token")
            set_cookie = "cookie" not in good and request.path == "/"
        response = await handler(request)
        if set_cookie and not response.prepared:
            response.set_cookie(cookie_name(request), policy.token or "", path="/",
                                httponly=True, samesite="Strict")
        return response

    return check_access


# -- no file paths in what is served -------------------------------------------------------
_URL_PATH = re.compile(r"\b(ipc|file)://([^\s'\"]*)")
#: An absolute path at the start of a string or after a space, quote, bracket, = or comma:
#: its folders may hold spaces ("mouse A/", "Program Files (x86)\\"), never a colon, so in
#: "/a/b.npy: cannot read" the path ends at "b.npy"; its last part ends at a space.
_ABS_PATH = re.compile(r"""(?:^|(?<=[\s'"(\[=,]))(?:[A-Za-z]:[\\/]|\\\\|~?/)(?=[^\s\\/'"])"""
                       r"""(?:[^\\/\n'":]*[\\/])*[^\s'"()\[\],;:]*""")


def base_name(path: str) -> str:
    """The last component of a POSIX or Windows path (``/a/b.gif`` -> ``b.gif``)."""
    return re.split(r"[\\/]", path.rstrip("\\/"))[-1]


def strip_paths(text: str) -> str:
    """``text`` with every absolute path (and ``ipc://``/``file://`` path) in it reduced to
    its last component, e.g. in an error message."""
    text = _URL_PATH.sub(lambda m: f"{m.group(1)}://{base_name(m.group(2))}", text)
    return _ABS_PATH.sub(lambda m: base_name(m.group(0)), text)


def public_json(obj: Any) -> Any:
    """A copy of a JSON-ready ``obj`` with :func:`strip_paths` applied to every key and
    string: whatever a field turns out to hold, no directory reaches a browser."""
    if isinstance(obj, dict):
        return {strip_paths(k) if isinstance(k, str) else k: public_json(v)
                for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [public_json(v) for v in obj]
    if isinstance(obj, str):
        return strip_paths(obj)
    return obj


def settings_json(settings: DisplaySettings, *, public: bool) -> dict[str, Any]:
    """The settings as JSON: the token hidden always, path fields (even relative ones)
    reduced to file names when ``public``."""
    out = dataclasses.asdict(settings)
    out["token"] = HIDDEN if settings.token else ""
    if public:
        for f in dataclasses.fields(settings):
            if f.metadata.get("path") and isinstance(out[f.name], str):
                out[f.name] = base_name(out[f.name])
    return out
