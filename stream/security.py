"""ZeroMQ CURVE on the streams that leave this host: keys, the bind rule, the authenticator.

Recordings of a brain are sensitive. With a config's ``[security]`` table naming key files
(``cortexcast keys`` makes them), every tcp socket is encrypted and authenticated:

* a :class:`~cortexcast.stream.pubsub.Publisher` is a CURVE *server* (its secret key), and a
  ZAP authenticator on its context admits only the client public keys in ``allowed_clients``;
* a :class:`~cortexcast.stream.pubsub.Subscriber` is a CURVE *client*: it knows the server's
  public key and proves its own identity with its secret key. A client whose key is not
  allowed gets nothing (the handshake is refused).

``ipc://`` and ``inproc://`` never leave the host and never use keys. Without keys, a publisher
refuses a tcp endpoint that is not loopback (``tcp://0.0.0.0:5555``, ``tcp://*:5555``, a LAN
address) unless ``insecure = true``, which logs a loud warning instead.

ZeroMQ allows one ZAP handler per context, and processes (and tests) may hold several
publishers on one context or several contexts: authenticators are kept per context and
reference-counted by the CURVE sockets that use them, and stopped when the last one closes.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from cortexcast.core.config import ConfigError, load_settings, path_field
from cortexcast.stream.endpoints import StreamError

log = logging.getLogger(__name__)

SECTION = "security"
FIX = ("make keys with `cortexcast keys --out DIR` and paste the [security] table it prints "
       "into the config, bind tcp://127.0.0.1 (or ipc://) instead, or, on a network you trust, "
       "set insecure = true in [security]")


@dataclass(frozen=True)
class SecuritySettings:
    """The ``[security]`` table, shared by every process of a config file.

    A host that publishes needs ``server_secret_key`` and ``allowed_clients``; a host that
    subscribes needs ``server_public_key`` and ``client_secret_key``; a host that does both
    (a stack on one machine, the decoder box) needs all four.
    """

    server_secret_key: str = path_field("")
    """The server's secret key file (``server.key_secret``): publishers serve with it."""
    server_public_key: str = path_field("")
    """The server's public key file (``server.key``): subscribers check the server with it."""
    client_secret_key: str = path_field("")
    """This host's client secret key file: the identity its subscribers connect with."""
    allowed_clients: str = path_field("")
    """Folder of the client public keys (``NAME.key``) publishers admit; no others get data."""
    insecure: bool = False
    """Without keys, allow binding a non-loopback tcp endpoint anyway (loud warning)."""

    def __post_init__(self) -> None:
        pairs = (("server_secret_key", "allowed_clients"),
                 ("client_secret_key", "server_public_key"))
        for a, b in pairs:
            if bool(getattr(self, a)) != bool(getattr(self, b)):
                have, need = (a, b) if getattr(self, a) else (b, a)
                raise ConfigError(f"{have} is set but {need} is not: both are needed "
                                  f"({'publishers' if a.startswith('server') else 'subscribers'}"
                                  " use them together)")
        if self.server_secret_key:
            _load_key(self.server_secret_key, "server_secret_key", secret=True)
        if self.server_public_key:
            _load_key(self.server_public_key, "server_public_key", secret=False)
        if self.client_secret_key:
            _load_key(self.client_secret_key, "client_secret_key", secret=True)
        if self.allowed_clients:
            folder = Path(self.allowed_clients)
            if not folder.is_dir():
                raise ConfigError(f"allowed_clients = {self.allowed_clients!r}: no such folder")
            try:
                keys = zmq.auth.load_certificates(folder)
            except (OSError, ValueError) as exc:
                raise ConfigError(f"allowed_clients = {self.allowed_clients!r}: {exc}") from exc
            if not keys:
                raise ConfigError(f"allowed_clients = {self.allowed_clients!r} holds no client "
                                  "public keys (NAME.key): no client could connect")
        if (self.server_secret_key or self.client_secret_key) and not zmq.has("curve"):
            raise ConfigError("[security] names keys but this libzmq has no CURVE support")

    @property
    def serves(self) -> bool:
        """Publishers use CURVE (server keys and allowed clients are set)."""
        return bool(self.server_secret_key)

    @property
    def connects(self) -> bool:
        """Subscribers use CURVE (client keys and the server's public key are set)."""
        return bool(self.client_secret_key)

    @property
    def curve(self) -> bool:
        return self.serves or self.connects

    def server_keys(self) -> tuple[bytes, bytes]:
        """(public, secret) of the server."""
        return _load_key(self.server_secret_key, "server_secret_key", secret=True)

    def client_keys(self) -> tuple[bytes, bytes]:
        """(public, secret) of this host's client identity."""
        return _load_key(self.client_secret_key, "client_secret_key", secret=True)

    def server_public(self) -> bytes:
        return _load_key(self.server_public_key, "server_public_key", secret=False)[0]


def _load_key(path: str, key: str, *, secret: bool) -> tuple[bytes, bytes]:
    """``zmq.auth.load_certificate`` with ConfigError naming the key (secret may be b"")."""
    if not Path(path).is_file():
        raise ConfigError(f"{key} = {path!r}: no such file (make keys with `cortexcast keys`)")
    try:
        public, sec = zmq.auth.load_certificate(path)
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{key} = {path!r}: not a ZeroMQ key file: {exc}") from exc
    if secret and not sec:
        raise ConfigError(f"{key} = {path!r} holds only a public key; give the .key_secret file")
    return public, sec or b""


def load_security(config: str | Path | None) -> SecuritySettings:
    """The ``[security]`` table of ``config`` (defaults: no keys, not insecure)."""
    return load_settings(SecuritySettings, config, SECTION)


def _host(endpoint: str) -> str | None:
    """The host of a tcp endpoint (brackets stripped), None for ipc/inproc."""
    if not endpoint.startswith("tcp://"):
        return None
    host = endpoint[len("tcp://"):].rpartition(":")[0]
    return host[1:-1] if host.startswith("[") and host.endswith("]") else host


def is_loopback(endpoint: str) -> bool:
    """True when ``endpoint`` cannot be reached from another host (ipc, inproc, 127.x, ::1)."""
    host = _host(endpoint)
    if host is None:
        return True
    if host.lower() in ("localhost", "lo"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # *, a host or interface name
        return False


def check_publish_endpoint(endpoint: str, security: SecuritySettings | None,
                           what: str | None = None) -> None:
    """StreamError when a publisher on ``endpoint`` would send unencrypted off this host.

    With ``insecure = true`` it is allowed, with a loud warning.
    """
    if is_loopback(endpoint) or (security is not None and security.serves):
        return
    named = f" ({what})" if what else ""
    if security is not None and security.insecure:
        log.warning("INSECURE: publishing on %s%s without CURVE ([security] insecure = true): "
                    "anyone who reaches this port can read every frame and reconstruction",
                    endpoint, named)
        return
    raise StreamError(f"refusing to publish on {endpoint!r}{named} without encryption: it is "
                      f"reachable from other hosts, and recordings of a brain are sensitive. "
                      f"To fix: {FIX}")


def publish_endpoints(settings: dict[str, Any]) -> list[tuple[str, str]]:
    """``(what, endpoint)`` of every ZeroMQ endpoint the loaded process settings publish on."""
    out = []
    for name, s in settings.items():
        for field in ("publish", "to"):  # replay's is `to`
            value = getattr(s, field, None)
            if isinstance(value, str) and value:
                out.append((f"[{name}] {field}", value))
    return out


def check_stack_security(config: str | Path, settings: dict[str, Any]) -> SecuritySettings:
    """Load ``[security]`` and apply the bind rule to every publisher of a stack.

    For ``up``'s validation, so a stack that would expose raw frames fails before anything
    starts (ConfigError naming the table and endpoint).
    """
    security = load_security(config)
    for what, endpoint in publish_endpoints(settings):
        try:
            check_publish_endpoint(endpoint, security, what)
        except StreamError as exc:
            raise ConfigError(f"{config}: {exc}") from exc
    return security


# -- sockets ---------------------------------------------------------------------------------

class _CurveServerSocket(zmq.Socket):
    """A socket that gives its context's authenticator back when it is closed."""

    _cc_release: Callable[[], None] | None = None

    def close(self, linger: int | None = None) -> None:
        try:
            super().close(linger)
        finally:
            release, self._cc_release = self._cc_release, None
            if release is not None:
                release()


@dataclass
class _Auth:
    context: zmq.Context
    authenticator: ThreadAuthenticator
    location: str
    users: int = 0


_AUTHS: dict[int, _Auth] = {}
_AUTHS_LOCK = threading.Lock()


def _acquire_authenticator(ctx: zmq.Context, location: str) -> Callable[[], None]:
    """Start (or share) ``ctx``'s ZAP authenticator; return the function that releases it."""
    key = id(ctx)
    with _AUTHS_LOCK:
        entry = _AUTHS.get(key)
        if entry is None:
            auth = ThreadAuthenticator(ctx, log=logging.getLogger(f"{__name__}.zap"))
            auth.start()
            auth.configure_curve(domain="*", location=location)
            entry = _AUTHS[key] = _Auth(ctx, auth, location)
        elif entry.location != location:
            raise StreamError(f"one ZeroMQ context cannot admit two sets of clients "
                              f"({entry.location} and {location}): give each its own context")
        entry.users += 1

    def release() -> None:
        with _AUTHS_LOCK:
            entry.users -= 1
            if entry.users > 0 or _AUTHS.get(key) is not entry:
                return
            del _AUTHS[key]
        entry.authenticator.stop()

    return release


def authenticators() -> int:
    """How many ZAP authenticators run now (tests check they stop)."""
    with _AUTHS_LOCK:
        return len(_AUTHS)


def publisher_socket(ctx: zmq.Context, endpoint: str,
                     security: SecuritySettings | None) -> zmq.Socket:
    """An XPUB socket for ``endpoint``: a CURVE server when ``security`` serves and it is tcp."""
    if security is None or not security.serves or not endpoint.startswith("tcp://"):
        return ctx.socket(zmq.XPUB)
    public, secret = security.server_keys()
    release = _acquire_authenticator(ctx, str(Path(security.allowed_clients).resolve()))
    try:
        sock = ctx.socket(zmq.XPUB, socket_class=_CurveServerSocket)
    except zmq.ZMQError:
        release()
        raise
    sock._cc_release = release
    sock.curve_server = True
    sock.curve_secretkey = secret
    sock.curve_publickey = public
    return sock


def client_curve(sock: zmq.Socket, endpoint: str, security: SecuritySettings | None,
                 name: str = "subscriber") -> bool:
    """Make ``sock`` a CURVE client before it connects to tcp ``endpoint``; True if it did.

    ZeroMQ copies options at connect time, so ipc/inproc endpoints connected first stay plain.
    """
    if security is None or not endpoint.startswith("tcp://"):
        return False
    if not security.connects:
        if security.serves:
            log.warning("%s: [security] has server keys but no client_secret_key/"
                        "server_public_key: this subscriber connects to %s without CURVE and "
                        "a CURVE publisher will refuse it", name, endpoint)
        return False
    public, secret = security.client_keys()
    sock.curve_serverkey = security.server_public()
    sock.curve_publickey = public
    sock.curve_secretkey = secret
    return True
