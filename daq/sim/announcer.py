"""The simulated rig's stand-ins for a rig's separate programs: a stimulus computer that
announces each flip's clip identity, and an eye tracker that reports pupil size and centre.

Both speak the wire formats the daq's real sources read (UDP JSON datagrams):

- stimulus identity (:mod:`cortexcast.daq.stimulus_identity`), one list per imaging frame
  holding that frame's flips: ``[{"v": 1, "frame": j, "clip": "train_0003",
  "clip_frame": k, "t": t_flip}, ...]``;
- eye tracker (the behaviour source, ``[daq.behavior]``), one object per imaging frame:
  ``{"v": 1, "t": t, "pupil": ..., "pupil_x": ..., "pupil_y": ...}``.

Sending never blocks and never raises into acquisition: the sockets are non-blocking, a
datagram that cannot go out (no route, full buffer, nobody listening on some platforms) is
dropped and counted, as a real rig's programs would not wait for the daq either.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
from typing import Any, Sequence

from cortexcast.daq.source import AcquisitionError

log = logging.getLogger(__name__)

MAX_FLIPS_PER_DATAGRAM = 200
"""A frame's flips go in one datagram up to this many (~14 kB, far below UDP's limit)."""


def _address(name: str, value: str) -> tuple[str, int]:
    """``host:port`` resolved once (IPv4), so a send never waits on a name lookup."""
    host, _, port = value.rpartition(":")
    try:
        info = socket.getaddrinfo(host, int(port), socket.AF_INET, socket.SOCK_DGRAM)
    except (OSError, ValueError) as exc:
        raise AcquisitionError(f"simulated rig: cannot resolve [daq.sim] {name} = {value!r} "
                               f"({exc}); set it to 'host:port' of the receiving daq") from exc
    addr = info[0][4]
    return str(addr[0]), int(addr[1])


class _Sender:
    """One non-blocking UDP socket sending to one address, counting what went and what not."""

    def __init__(self, name: str, to: str) -> None:
        self.name = name
        self.to = _address(name, to)
        self.sent = self.errors = 0
        self._lock = threading.Lock()  # close() may come from another thread than send()
        self._sock: socket.socket | None = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.setblocking(False)

    def send(self, payload: Any) -> None:
        data = json.dumps(payload, separators=(",", ":")).encode()
        with self._lock:
            if self._sock is None:
                return
            try:
                self._sock.sendto(data, self.to)
            except OSError as exc:  # BlockingIOError (buffer full), refused, unreachable
                self.errors += 1
                if self.errors <= 3 or self.errors % 1000 == 0:
                    log.warning("simulated %s: datagram to %s:%d not sent (%d so far): %s",
                                self.name, *self.to, self.errors, exc)
                return
            self.sent += 1

    @property
    def closed(self) -> bool:
        return self._sock is None

    def close(self) -> None:
        with self._lock:
            sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()


class RigAnnouncer:
    """The stand-in stimulus computer (``stimulus_to``) and eye tracker (``eye_to``; "" none)."""

    def __init__(self, stimulus_to: str, eye_to: str = "") -> None:
        self._stimulus = _Sender("stimulus computer", stimulus_to)
        try:
            self._eye = _Sender("eye tracker", eye_to) if eye_to else None
        except BaseException:
            self._stimulus.close()
            raise

    def flips(self, flips: Sequence[tuple[int, str, int, float]]) -> None:
        """Announce one imaging frame's flips: (frame, clip, clip_frame, t_flip) each."""
        for start in range(0, len(flips), MAX_FLIPS_PER_DATAGRAM):
            self._stimulus.send([{"v": 1, "frame": int(j), "clip": clip,
                                  "clip_frame": int(k), "t": float(t)}
                                 for j, clip, k, t in flips[start:start + MAX_FLIPS_PER_DATAGRAM]])

    def eye(self, t: float, pupil: float, pupil_x: float, pupil_y: float) -> None:
        """Report one eye-camera sample taken at rig time ``t``."""
        if self._eye is not None:
            self._eye.send({"v": 1, "t": float(t), "pupil": float(pupil),
                            "pupil_x": float(pupil_x), "pupil_y": float(pupil_y)})

    def status(self) -> dict[str, int]:
        eye = self._eye
        return {"sim_stimulus_sent": self._stimulus.sent,
                "sim_eye_sent": 0 if eye is None else eye.sent,
                "sim_send_errors": self._stimulus.errors + (0 if eye is None else eye.errors)}

    @property
    def closed(self) -> bool:
        return self._stimulus.closed and (self._eye is None or self._eye.closed)

    def close(self) -> None:
        """Close both sockets (idempotent, any thread); later sends are dropped silently."""
        self._stimulus.close()
        if self._eye is not None:
            self._eye.close()
