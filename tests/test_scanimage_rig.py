"""Checks against a real ScanImage (skipped unless `pytest --hardware`; see docs/scanimage.md).

Start an acquisition in ScanImage, then on the cortexcast machine::

    CORTEXCAST_SI_STREAM=tcp://scanimage-pc:65179 \\
    CORTEXCAST_SI_BRIDGE=tcp://scanimage-pc:5560 \\
    CORTEXCAST_SI_FOLDER=/mnt/scanimage/today \\
    pytest --hardware tests/test_scanimage_rig.py

Each test runs only for the variables that are set; 30 consecutive frames must
arrive within 30 s, parse, keep their size and come with increasing numbers.
"""

from __future__ import annotations

import itertools
import os

import pytest

from cortexcast.daq.scanimage.tiff_source import TiffFollower, TiffSettings
from cortexcast.daq.scanimage.zmq_source import (BridgeSettings, ScanImageStreamSettings, bridge_source,
                                      scanimage_stream_source)

pytestmark = pytest.mark.hardware


def _check(source) -> None:
    with source:
        frames = list(itertools.islice(source.events(), 30))
    assert len(frames) == 30
    assert len({f.pixels.shape for f in frames}) == 1
    assert all(b.index > a.index and b.t > a.t for a, b in zip(frames, frames[1:]))
    assert source.status().get("si_bad_messages", 0) == 0


def _env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        pytest.skip(f"set {name} to run this check")
    return value


def test_scanimage_stream_delivers_frames() -> None:
    _check(scanimage_stream_source(ScanImageStreamSettings(
        endpoint=_env("CORTEXCAST_SI_STREAM"), timeout_s=30.0)))


def test_matlab_bridge_delivers_frames() -> None:
    _check(bridge_source(BridgeSettings(endpoint=_env("CORTEXCAST_SI_BRIDGE"), timeout_s=30.0)))


def test_tiff_files_are_followed() -> None:
    _check(TiffFollower(TiffSettings(folder=_env("CORTEXCAST_SI_FOLDER"), timeout_s=30.0)))
