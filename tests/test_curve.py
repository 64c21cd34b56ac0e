"""CURVE on the streams: keys, who gets frames, the bind rule, the [security] table.

Real sockets on tcp://127.0.0.1 (random ports); every wait polls with a timeout.
"""

from __future__ import annotations

import logging
import stat
import os
from pathlib import Path

import numpy as np
import pytest
import zmq

from cortexcast.app.keys_command import KeysError, make_keys
from cortexcast.core.config import ConfigError, load_settings
from cortexcast.stream.endpoints import StreamError
from cortexcast.stream.pubsub import Publisher, Sockets, Subscriber, sockets_for
from cortexcast.stream.security import (
    SecuritySettings, authenticators, check_stack_security, is_loopback, load_security,
)
from polling import wait_for

pytestmark = pytest.mark.skipif(not zmq.has("curve"), reason="libzmq without CURVE")


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, Path]:
    return make_keys(tmp_path / "keys", ["intruder"]) | {"dir": tmp_path / "keys"}


def _security(keys: dict[str, Path], client: str = "client") -> SecuritySettings:
    return SecuritySettings(server_secret_key=str(keys["server_secret_key"]),
                            server_public_key=str(keys["server_public_key"]),
                            client_secret_key=str(keys["dir"] / "clients" / f"{client}.key_secret"),
                            allowed_clients=str(keys["allowed_clients"]))


@pytest.fixture
def ctx():
    context = zmq.Context()
    yield context
    context.destroy(linger=0)  # closes what a failed test left open (term alone would hang)


def _publish_until(pub: Publisher, got: list, n: int, sub: Subscriber) -> None:
    """Publish frames until ``sub`` has ``n`` of them (poll; no fixed sleeps)."""
    frame = np.arange(64 * 64, dtype=np.uint16).reshape(64, 64)

    def step() -> bool:
        pub.publish("frames", "frame", [frame], t_acq=0.0)
        if (msg := sub.recv(0.01)) is not None:
            got.append(msg)
        return len(got) >= n

    wait_for(step, what=f"{n} frames")


def test_allowed_client_gets_every_frame(keys, ctx) -> None:
    sec = _security(keys)
    with Publisher("tcp://127.0.0.1:0", "daq", context=ctx, security=sec) as pub, \
            Subscriber(pub.address, ["frames"], context=ctx, security=sec) as sub:
        assert pub.wait_for_subscribers({"frames": 1}, timeout_s=10)
        frame = np.arange(512 * 512, dtype=np.uint16).reshape(512, 512)
        n = 50
        for _ in range(n):
            pub.publish("frames", "frame", [frame], t_acq=1.0)
        got = [sub.recv(5.0) for _ in range(n)]
        assert all(m is not None for m in got)
        assert [m.seq for m in got] == list(range(n))
        assert np.array_equal(got[-1].arrays[0], frame)
        assert sub.stats.as_dict()["total_dropped"] == 0
    assert authenticators() == 0  # stopped on close


def test_unkeyed_and_wrong_key_clients_get_nothing(keys, ctx, tmp_path: Path) -> None:
    sec = _security(keys)
    # a key pair made elsewhere: a valid CURVE client, but its key is not in allowed_clients
    stranger = make_keys(tmp_path / "other")
    wrong = SecuritySettings(server_public_key=str(keys["server_public_key"]),
                             client_secret_key=str(stranger["client_secret_key"]))
    with Publisher("tcp://127.0.0.1:0", "daq", context=ctx, security=sec) as pub, \
            Subscriber(pub.address, ["frames"], context=ctx, security=sec) as good, \
            Subscriber(pub.address, ["frames"], context=ctx, name="nokey") as nokey, \
            Subscriber(pub.address, ["frames"], context=ctx, security=wrong) as bad:
        got: list = []
        _publish_until(pub, got, 20, good)  # the allowed one is served meanwhile
        assert pub.subscribers("frames") == 1
        assert nokey.recv(0.2) is None and bad.recv(0.2) is None
        assert not nokey.last_heartbeat and not bad.last_heartbeat  # not even heartbeats


def test_second_allowed_client_pair_connects(keys, ctx) -> None:
    """`keys --client NAME` adds a pair the publisher admits (and the default one still works)."""
    with Publisher("tcp://127.0.0.1:0", "daq", context=ctx, security=_security(keys)) as pub, \
            Subscriber(pub.address, ["frames"], context=ctx,
                       security=_security(keys, "intruder")) as sub:
        _publish_until(pub, [], 3, sub)


def test_sockets_carry_security_and_inproc_needs_no_keys(keys, ctx) -> None:
    sockets = Sockets(ctx, _security(keys))
    with sockets.publisher("tcp://127.0.0.1:0", "daq") as pub, \
            sockets.subscriber(pub.address, ["frames"]) as sub:
        _publish_until(pub, [], 3, sub)
    with sockets.publisher("inproc://plain", "daq") as pub, \
            Subscriber("inproc://plain", ["frames"], context=ctx) as sub:  # no keys at all
        _publish_until(pub, [], 3, sub)


@pytest.mark.parametrize("endpoint", ["tcp://0.0.0.0:0", "tcp://*:0", "tcp://192.168.1.7:5555"])
def test_non_loopback_bind_without_keys_is_refused(endpoint: str, ctx) -> None:
    with pytest.raises(StreamError, match=r"cortexcast keys.*insecure = true") as err:
        Publisher(endpoint, "daq", context=ctx, what="[daq] publish")
    assert endpoint in str(err.value) and "[daq] publish" in str(err.value)
    with pytest.raises(StreamError):  # an empty [security] table changes nothing
        Publisher(endpoint, "daq", context=ctx, security=SecuritySettings(insecure=False))


def test_loopback_and_local_transports_need_no_keys(ctx, tmp_path: Path) -> None:
    for ep in ("tcp://127.0.0.1:0", "tcp://localhost:0", f"ipc://{tmp_path}/s", "inproc://x"):
        Publisher(ep, "daq", context=ctx).close()
    assert is_loopback("tcp://[::1]:5555") and is_loopback("tcp://127.3.2.1:1")
    assert not is_loopback("tcp://[::]:5555") and not is_loopback("tcp://daq-pc:5555")


def test_insecure_allows_with_a_loud_warning(ctx, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="cortexcast.stream.security"):
        pub = Publisher("tcp://0.0.0.0:0", "daq", context=ctx,
                        security=SecuritySettings(insecure=True))
    try:
        assert any("INSECURE" in r.message and "0.0.0.0" in r.message for r in caplog.records)
        port = pub.address.rsplit(":", 1)[1]
        with Subscriber(f"tcp://127.0.0.1:{port}", ["frames"], context=ctx) as sub:
            _publish_until(pub, [], 3, sub)  # plain, as before
    finally:
        pub.close()


def test_keyed_bind_on_all_interfaces_is_allowed(keys, ctx) -> None:
    sec = _security(keys)
    with Publisher("tcp://0.0.0.0:0", "daq", context=ctx, security=sec) as pub:
        port = pub.address.rsplit(":", 1)[1]
        with Subscriber(f"tcp://127.0.0.1:{port}", ["frames"], context=ctx, security=sec) as sub:
            _publish_until(pub, [], 3, sub)


def test_keys_command_creates_and_refuses_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "k"
    paths = make_keys(out)
    for p in ("server.key", "server.key_secret", "clients/client.key_secret",
              "allowed_clients/client.key"):
        assert (out / p).is_file(), p
    assert paths["allowed_clients"] == out / "allowed_clients"
    if os.name == "posix":
        for p in ("server.key_secret", "clients/client.key_secret"):
            assert stat.S_IMODE((out / p).stat().st_mode) == 0o600
    before = (out / "server.key_secret").read_text()
    with pytest.raises(KeysError, match="--force"):
        make_keys(out)
    assert (out / "server.key_secret").read_text() == before
    make_keys(out, ["rig2"])  # adds a client, keeps the server
    assert (out / "allowed_clients" / "rig2.key").is_file()
    assert (out / "server.key_secret").read_text() == before
    with pytest.raises(KeysError):
        make_keys(out, ["rig2"])
    make_keys(out, force=True)
    assert (out / "server.key_secret").read_text() != before


def test_keys_cli_prints_a_loadable_security_table(tmp_path: Path, capsys) -> None:
    from cortexcast.app.cli import main

    assert main(["keys", "--out", str(tmp_path / "k")]) == 0
    snippet = capsys.readouterr().out
    table = snippet[snippet.index("[security]"):].split("\n\n")[0]
    cfg = tmp_path / "rig.toml"
    cfg.write_text(table + "\n")
    sec = load_security(cfg)
    assert sec.serves and sec.connects
    assert main(["keys", "--out", str(tmp_path / "k")]) == 2  # refuses overwrite


def test_security_table_paths_resolve_against_the_config(tmp_path: Path) -> None:
    make_keys(tmp_path / "keys")
    cfg = tmp_path / "rig.toml"
    cfg.write_text('[security]\nserver_secret_key = "keys/server.key_secret"\n'
                   'allowed_clients = "keys/allowed_clients"\n')
    sec = load_settings(SecuritySettings, cfg, "security")
    assert Path(sec.server_secret_key) == tmp_path / "keys" / "server.key_secret"
    assert sec.serves and not sec.connects
    assert sockets_for(cfg).security == sec
    assert sockets_for(None).security == SecuritySettings()


@pytest.mark.parametrize("table, message", [
    ('server_secret_key = "keys/nope"\nallowed_clients = "keys/allowed_clients"',
     r"server_secret_key = .*nope.*no such file"),
    ('server_secret_key = "keys/server.key"\nallowed_clients = "keys/allowed_clients"',
     r"server_secret_key .* only a public key"),
    ('server_secret_key = "keys/server.key_secret"', r"allowed_clients is not"),
    ('client_secret_key = "keys/clients/client.key_secret"', r"server_public_key is not"),
    ('server_public_key = "junk.txt"\nclient_secret_key = "keys/clients/client.key_secret"',
     r"server_public_key = .*junk.txt.*not a ZeroMQ key file"),
    ('server_secret_key = "keys/server.key_secret"\nallowed_clients = "empty"',
     r"allowed_clients = .*empty.* no client public keys"),
    ('insecure = "yes"', r"insecure: expected true or false"),
    ('secret = "x"', r"unknown key 'secret'"),
])
def test_security_settings_validation(tmp_path: Path, table: str, message: str) -> None:
    make_keys(tmp_path / "keys")
    (tmp_path / "junk.txt").write_text("not a key\n")
    (tmp_path / "empty").mkdir()
    cfg = tmp_path / "rig.toml"
    cfg.write_text(f"[security]\n{table}\n")
    with pytest.raises(ConfigError, match=message) as err:
        load_security(cfg)
    assert "[security]" in str(err.value)


def test_up_validation_refuses_exposed_stack(tmp_path: Path) -> None:
    """`check_stack_security` (for `up`) names the table and endpoint; keys or insecure pass."""
    from types import SimpleNamespace

    settings = {"daq": SimpleNamespace(publish="tcp://0.0.0.0:5555"),
                "decoder": SimpleNamespace(publish="tcp://127.0.0.1:5556"),
                "display": SimpleNamespace(stimulus_from="tcp://daq:5555")}
    cfg = tmp_path / "rig.toml"
    cfg.write_text("[daq]\n")
    with pytest.raises(ConfigError, match=r"0\.0\.0\.0:5555.*\[daq\] publish"):
        check_stack_security(cfg, settings)
    cfg.write_text("[security]\ninsecure = true\n")
    assert check_stack_security(cfg, settings).insecure
    make_keys(tmp_path / "keys")
    cfg.write_text('[security]\nserver_secret_key = "keys/server.key_secret"\n'
                   'allowed_clients = "keys/allowed_clients"\n')
    assert check_stack_security(cfg, settings).serves


def test_validate_stack_accepts_a_security_table(tmp_path: Path) -> None:
    from cortexcast.app.launcher import validate_stack

    cfg = tmp_path / "rig.toml"
    cfg.write_text('[stack]\nprocesses = ["daq"]\n[daq]\npublish = "tcp://127.0.0.1:5555"\n'
                   "[security]\ninsecure = false\n")
    stack, loaded = validate_stack(cfg)
    assert "daq" in loaded


def test_two_contexts_have_their_own_authenticators(keys) -> None:
    sec = _security(keys)
    a, b = zmq.Context(), zmq.Context()
    try:
        pa = Publisher("tcp://127.0.0.1:0", "a", context=a, security=sec)
        pa2 = Publisher("tcp://127.0.0.1:0", "a2", context=a, security=sec)
        pb = Publisher("tcp://127.0.0.1:0", "b", context=b, security=sec)
        assert authenticators() == 2
        pa.close()
        assert authenticators() == 2  # pa2 still uses a's
        with Subscriber(pa2.address, ["frames"], context=a, security=sec) as sub:
            _publish_until(pa2, [], 2, sub)
        pa2.close()
        pb.close()
        assert authenticators() == 0
    finally:
        a.destroy(linger=0)
        b.destroy(linger=0)


@pytest.mark.parametrize("security, status, words", [
    ('insecure = true', "WARN", "INSECURE"),
    ('', "FAIL", "refuse"),
    ('server_secret_key = "keys/server.key_secret"\nallowed_clients = "keys/allowed_clients"\n'
     'server_public_key = "keys/server.key"\n'
     'client_secret_key = "keys/clients/client.key_secret"', "OK", "CURVE on"),
])
def test_doctor_reports_curve_and_insecure_binds(tmp_path: Path, security: str, status: str,
                                                 words: str) -> None:
    from cortexcast.app.doctor import check_config, check_security

    make_keys(tmp_path / "keys")
    cfg = tmp_path / "rig.toml"
    cfg.write_text(f'[daq]\npublish = "tcp://0.0.0.0:5555"\n[security]\n{security}\n')
    _, facts = check_config(cfg)
    checks = check_security(cfg, facts)
    assert [c.status for c in checks] == [status] and words in checks[0].detail
    cfg.write_text('[daq]\npublish = "tcp://127.0.0.1:5555"\n')
    _, facts = check_config(cfg)
    assert [(c.status, "CURVE off" in c.detail) for c in check_security(cfg, facts)] == \
        [("OK", True)]


def test_background_publisher_serves_curve_and_releases(keys, ctx) -> None:
    """A publisher whose socket a send thread owns (and closes) still serves CURVE."""
    import inspect

    if "background" not in inspect.signature(Publisher).parameters:
        pytest.skip("Publisher has no send thread here")
    sec = _security(keys)
    pub = Publisher("tcp://127.0.0.1:0", "daq", context=ctx, security=sec, background=True)
    try:
        with Subscriber(pub.address, ["frames"], context=ctx, security=sec) as sub:
            _publish_until(pub, [], 3, sub)
    finally:
        pub.close()
    wait_for(lambda: authenticators() == 0, what="the authenticator to stop")
