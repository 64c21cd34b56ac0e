"""`cortexcast keys --out DIR`: CURVE key pairs for the streams that leave a host.

Layout of DIR (what the printed [security] table points at)::

    server.key, server.key_secret        the publishers' pair (secret: publishing hosts only)
    clients/NAME.key, NAME.key_secret    one pair per client identity (secret: that host only)
    allowed_clients/NAME.key             the client public keys publishers admit

The first run makes the server pair and a client pair named ``client``; ``--client NAME``
adds another client pair (and its public key to allowed_clients/). Existing secret keys are
never overwritten without ``--force``: a new server key locks every subscriber out.
"""

from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path

import zmq
import zmq.auth

from cortexcast.core.errors import CortexcastError

DEFAULT_CLIENT = "client"


class KeysError(CortexcastError, ValueError):
    """Key files could not be made (they exist, a bad name, no CURVE)."""


def _secret_mode(path: Path) -> None:
    """Owner-only (0600) where the OS has such modes."""
    if os.name == "posix":
        path.chmod(0o600)


def _make_pair(folder: Path, name: str) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    old = os.umask(0o077) if os.name == "posix" else None  # the secret is never world-readable
    try:
        public, secret = zmq.auth.create_certificates(folder, name)
    finally:
        if old is not None:
            os.umask(old)
    _secret_mode(Path(secret))
    if os.name == "posix":  # public keys are meant to be copied around
        Path(public).chmod(0o644)
    return Path(public), Path(secret)


def make_keys(out: Path, clients: list[str] | None = None, force: bool = False) -> dict[str, Path]:
    """Make the key pairs; return the paths the [security] table names.

    Without ``clients``: the server pair and client ``client``. With ``clients``: those client
    pairs, plus the server pair and ``client`` if ``out`` has no server pair yet.
    """
    if not zmq.has("curve"):
        raise KeysError("this libzmq was built without CURVE support")
    out = Path(out)
    clients = list(clients or [])
    for name in clients:
        if not name or name != Path(name).name or name.startswith("."):
            raise KeysError(f"--client {name!r}: give a plain name (letters, digits, -_)")
    server_secret = out / "server.key_secret"
    make_server = not clients or not server_secret.exists()
    names = clients + ([DEFAULT_CLIENT] if make_server and DEFAULT_CLIENT not in clients else [])
    targets = ([server_secret] if make_server else []) + \
        [out / "clients" / f"{n}.key_secret" for n in names]
    existing = [str(p) for p in targets if p.exists()]
    if existing and not force:
        raise KeysError(f"{', '.join(existing)} already exist{'s' if len(existing) == 1 else ''}; "
                        "refusing to overwrite secret keys (--force replaces them; a new server "
                        "key means every host needs the new server.key)")
    if make_server:
        _make_pair(out, "server")
    allowed = out / "allowed_clients"
    allowed.mkdir(parents=True, exist_ok=True)
    for name in names:
        public, _ = _make_pair(out / "clients", name)
        shutil.copyfile(public, allowed / public.name)
    first = names[0] if not make_server else DEFAULT_CLIENT
    return {"server_secret_key": server_secret, "server_public_key": out / "server.key",
            "client_secret_key": out / "clients" / f"{first}.key_secret",
            "allowed_clients": allowed}


def toml_snippet(paths: dict[str, Path]) -> str:
    """The [security] table to paste into the rig config."""
    notes = {"server_secret_key": "publishing hosts only",
             "server_public_key": "every subscribing host",
             "client_secret_key": "this host's identity as a subscriber",
             "allowed_clients": "client public keys the publishers admit"}
    lines = ["[security]"]
    for key, path in paths.items():
        lines.append(f'{key} = "{Path(path).resolve().as_posix()}"   # {notes[key]}')
    return "\n".join(lines)


def _run(args: argparse.Namespace) -> int:
    paths = make_keys(Path(args.out), args.client, args.force)
    print(f"keys in {Path(args.out).resolve()}/ (secret keys mode 0600). Add to the rig config:\n")
    print(toml_snippet(paths))
    print("\nOn another host: copy server.key and that host's clients/NAME.key_secret there "
          "(never server.key_secret unless it publishes); allowed_clients/ lists who may "
          "connect (restart the publishers after changing it).")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("keys", help="make CURVE keys so streams that leave this host are "
                       "encrypted and only allowed clients connect",
                       description="Make ZeroMQ CURVE key pairs (server and client) and print "
                       "the [security] table that turns encryption on for every tcp stream.")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for the key files")
    p.add_argument("--client", action="append", metavar="NAME",
                   help="add a client pair NAME (repeatable); its public key is allowed")
    p.add_argument("--force", action="store_true", help="overwrite existing secret keys")
    p.set_defaults(func=_run)
