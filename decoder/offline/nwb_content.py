"""The non-imaging parts of an NWB export, read from the recording's small topics.

* ``stimulus`` -> an ImageSeries of the frames shown (in ``/stimulus/presentation``) and the
  ``clip_presentations`` TimeIntervals (one row per clip presentation: clip, tier, repeat);
* ``sync`` behaviour -> ``running_speed`` (BehavioralTimeSeries) and ``pupil_size`` /
  ``pupil_center`` (PupilTracking); missing, non-finite and ``behavior_stale`` eye values
  are NaN here (the dataset export holds the last good value instead);
* ``reconstruction`` -> an ImageSeries of the decoder's reconstructions and the stimulus frame
  each one is of;
* ``loop`` -> a ``closed_loop_events`` table, one row per firing.

Pixels of the image series are read from the recording while the file is written (a
:class:`~hdmf.data_utils.DataChunkIterator` over the records), so memory holds their times
only. Everything here needs ``pynwb``; the caller imports this module only once it is there.
"""

from __future__ import annotations

import json
import logging
import math
from collections import Counter
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
from hdmf.data_utils import DataChunkIterator
from pynwb import H5DataIO, NWBFile, TimeSeries
from pynwb.behavior import BehavioralTimeSeries, PupilTracking
from pynwb.epoch import TimeIntervals
from pynwb.image import ImageSeries
from hdmf.common import DynamicTable

from cortexcast.core.events import LoopEvent, Reconstruction, StimulusFrame, SyncEvent, \
    from_message
from cortexcast.core.message import MessageError
from cortexcast.decoder.offline.session_plan import EYE_KEYS, SessionPlan
from cortexcast.stream.recording import RecordingError, RecordingReader

log = logging.getLogger("export")


def compressed(data: Any, chunks: tuple[int, ...] | bool = True) -> H5DataIO:
    """gzip-compressed, chunked: what NWB's best practice asks of the big series."""
    return H5DataIO(data, compression="gzip", compression_opts=4, chunks=chunks)


def chunk_frames(shape: tuple[int, ...], itemsize: int, n: int) -> tuple[int, ...]:
    """Chunks of whole frames, about 1 MB each (``n`` frames in all)."""
    per = int(np.prod(shape)) * itemsize
    k = max(1, min(n, (1 << 20) // max(per, 1)))
    return (k, *shape)


def timing(t: np.ndarray) -> dict[str, Any]:
    """``starting_time`` + ``rate`` when the times are regular (nwbinspector's advice), else
    ``timestamps``."""
    if len(t) >= 3:
        d = np.diff(t)
        med = float(np.median(d))
        if med > 0 and np.allclose(d, med, rtol=1e-6, atol=1e-9):
            return {"starting_time": float(t[0]), "rate": 1.0 / med}
    return {"timestamps": np.asarray(t, np.float64)}


@dataclass
class _Records:
    """Decoded records of one topic that hold pixels: rows and times, pixels read later."""

    rows: list[int]
    t: np.ndarray
    shape: tuple[int, ...]
    dtype: np.dtype
    meta: list[Any]


def _read(reader: RecordingReader, topic: str, kind: type, bad: Counter[str]
          ) -> Iterator[tuple[int, Any]]:
    for row in reader.select([topic]):
        try:
            event = from_message(reader.message(int(row)))
        except (RecordingError, MessageError):
            bad[topic] += 1
            continue
        if isinstance(event, kind):
            yield int(row), event


def _scan_pixels(reader: RecordingReader, topic: str, kind: type, bad: Counter[str],
                 key: Any) -> _Records | None:
    """Rows, times and ``key(event)`` of a topic's events (time order), pixels left behind;
    events whose pixels differ in shape from the first are counted as bad."""
    found: list[tuple[float, int, Any]] = []
    shape, dtype = None, None
    for row, ev in _read(reader, topic, kind, bad):
        if shape is None:
            shape, dtype = ev.pixels.shape, ev.pixels.dtype
        elif ev.pixels.shape != shape:
            bad[topic] += 1
            continue
        found.append((float(ev.t), row, key(ev)))
    if not found:
        return None
    found.sort(key=lambda x: (x[0], x[1]))
    return _Records([r for _, r, _ in found], np.array([t for t, _, _ in found], np.float64),
                    shape, np.dtype(dtype), [m for _, _, m in found])


def _pixels(reader: RecordingReader, records: _Records) -> DataChunkIterator:
    def frames() -> Iterator[np.ndarray]:
        blank = np.zeros(records.shape, records.dtype)
        for row in records.rows:
            try:
                px = from_message(reader.message(row)).pixels  # type: ignore[union-attr]
            except (RecordingError, MessageError):
                px = blank  # read once already: only a disk fault gets here
            yield np.asarray(px, records.dtype)

    n = len(records.rows)
    return DataChunkIterator(data=frames(), maxshape=(n, *records.shape), dtype=records.dtype,
                             buffer_size=chunk_frames(records.shape, records.dtype.itemsize,
                                                      n)[0])


def _image_series(name: str, description: str, reader: RecordingReader, records: _Records,
                  t0: float, unit: str = "n.a.") -> ImageSeries:
    n = len(records.rows)
    return ImageSeries(
        name=name, description=description, unit=unit,
        data=compressed(_pixels(reader, records),
                        chunk_frames(records.shape, records.dtype.itemsize, n)),
        **timing(records.t - t0))


def add_stimulus(nwb: NWBFile, reader: RecordingReader, plan: SessionPlan, t0: float,
                 bad: Counter[str]) -> dict[str, int]:
    """The stimulus frames (ImageSeries) and the clip presentations (TimeIntervals)."""
    rec = _scan_pixels(reader, "stimulus", StimulusFrame, bad,
                       lambda ev: (int(ev.index), ev.clip, int(ev.clip_frame)))
    if rec is None:
        return {"stimulus_frames": 0, "clip_presentations": 0}
    series = _image_series(
        "stimulus_frames", "every stimulus frame shown (36x64 uint8 as the stimulus stream "
        "sent it), at the time the recording stamped it", reader, rec, t0)
    nwb.add_stimulus(series)
    nwb.add_time_intervals(_presentations(plan, rec, t0, series))
    return {"stimulus_frames": len(rec.rows), "clip_presentations": len(plan.trials)}


def _presentations(plan: SessionPlan, rec: _Records, t0: float,
                   series: ImageSeries) -> TimeIntervals:
    table = TimeIntervals(name="clip_presentations",
                          description="one row per clip presentation (a trial of the dataset "
                                      "export): clip name, tier, repeat and stimulus frames")
    table.add_column("clip", "name of the clip shown")
    table.add_column("tier", "dataset tier: train, oracle (validation) or final_test_main "
                             "(repeated test clips)")
    table.add_column("repeat", "how many times the clip was shown before (0: first showing)")
    table.add_column("first_stim_frame", "global index of the clip's frame 0")
    table.add_column("n_frames", "stimulus frames of the presentation")
    index = np.array([m[0] for m in rec.meta], np.int64)
    period = float(np.median(np.diff(rec.t))) if len(rec.t) > 1 else 0.0
    shown: Counter[str] = Counter()
    for trial in plan.trials:
        inside = (index >= trial.start) & (index < trial.stop)
        if not inside.any():
            continue
        t = rec.t[inside] - t0
        table.add_interval(start_time=float(t.min()), stop_time=float(t.max()) + period,
                           timeseries=[series], clip=trial.clip, tier=trial.tier,
                           repeat=shown[trial.clip], first_stim_frame=int(trial.start),
                           n_frames=int(trial.length))
        shown[trial.clip] += 1
    return table


def raw_behavior(reader: RecordingReader, bad: Counter[str]
                 ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Sync times and each behaviour variable (NaN: missing, non-finite, or a stale eye)."""
    rows: dict[int, tuple[float, dict[str, float]]] = {}
    for _, ev in _read(reader, "sync", SyncEvent, bad):
        rows[ev.imaging_frame] = (float(ev.t), ev.behavior)
    order = sorted(rows)
    t = np.array([rows[i][0] for i in order], np.float64)
    out: dict[str, np.ndarray] = {}
    for key in ("running", *EYE_KEYS):
        v = np.full(len(order), np.nan, np.float64)
        for k, i in enumerate(order):
            b = rows[i][1]
            x = b.get(key)
            stale = key in EYE_KEYS and bool(b.get("behavior_stale", 0.0))
            if x is not None and math.isfinite(x) and not stale:
                v[k] = x
        out[key] = v
    keep = np.argsort(t, kind="stable")
    return t[keep], {k: v[keep] for k, v in out.items()}


def add_behavior(nwb: NWBFile, reader: RecordingReader, t0: float, bad: Counter[str]
                 ) -> dict[str, int]:
    """Running speed and pupil from the sync events, in a ``behavior`` processing module."""
    t, beh = raw_behavior(reader, bad)
    have = {k: v for k, v in beh.items() if np.isfinite(v).any()}
    if not have:
        return {"behavior_samples": 0}
    module = nwb.create_processing_module("behavior", "running and pupil, per imaging frame "
                                                      "(sync events); NaN where not known")
    tm = timing(t - t0)
    if "running" in have:
        module.add(BehavioralTimeSeries(time_series=TimeSeries(
            name="running_speed", data=compressed(have["running"]), unit="cm/s",
            description="treadmill running speed", **tm), name="BehavioralTimeSeries"))
    eye = []
    if "pupil" in have:
        eye.append(TimeSeries(name="pupil_size", data=compressed(have["pupil"]), unit="a.u.",
                              description="pupil dilation as the eye tracker reports it; NaN "
                                          "where stale or missing", **tm))
    if "pupil_x" in have or "pupil_y" in have:
        xy = np.stack([beh["pupil_x"], beh["pupil_y"]], 1)
        eye.append(TimeSeries(name="pupil_center", data=compressed(xy), unit="a.u.",
                              description="pupil centre (x, y) in the eye camera's units; NaN "
                                          "where stale or missing", **tm))
    if eye:
        module.add(PupilTracking(time_series=eye, name="PupilTracking"))
    return {"behavior_samples": len(t)}


def add_reconstructions(nwb: NWBFile, reader: RecordingReader, t0: float,
                        bad: Counter[str]) -> int:
    """The decoder's reconstructions, if recorded, in a ``decoder`` processing module."""
    rec = _scan_pixels(reader, "reconstruction", Reconstruction, bad,
                       lambda ev: int(ev.stim_frame))
    if rec is None:
        return 0
    module = nwb.create_processing_module("decoder", "what the live decoder published")
    tm = timing(rec.t - t0)
    series = _image_series("reconstructions", "the live decoder's reconstruction of the "
                           "stimulus (0..255 scale), as published", reader, rec, t0)
    module.add(series)
    module.add(TimeSeries(name="reconstruction_stim_frame",
                          data=compressed(np.array(rec.meta, np.int64)), unit="n.a.",
                          description="global stimulus frame each reconstruction is of "
                                      "(-1: not known)", **tm))
    return len(rec.rows)


LOOP_DOCS = {"rule": "rule that fired", "output": "output it triggered",
             "value": "value the rule saw", "threshold": "the rule's threshold",
             "frames": "reconstructions in a row over the threshold",
             "imaging_frame": "imaging frame of the reconstruction",
             "stim_frame": "stimulus frame of the reconstruction (-1: unknown)",
             "ok": "the output went out", "error": "why not ('' if it did)",
             "wall_time": "unix time the firing was logged"}


def flatten(record: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A logged record as flat columns: ``{"latency_ms": {"a": 1}}`` -> ``latency_ms_a``
    (nwbinspector asks for no dictionaries in table cells)."""
    out: dict[str, Any] = {}
    for key, value in record.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}_"))
        elif isinstance(value, (list, tuple)):
            out[f"{prefix}{key}"] = json.dumps(value, default=str)
        else:
            out[f"{prefix}{key}"] = value
    return out


def _kind(values: list[Any]) -> type:
    present = [v for v in values if v is not None]
    if present and all(isinstance(v, bool) for v in present):
        return bool
    if present and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                       for v in present):
        return float
    return str


def _cell(value: Any, kind: type) -> Any:
    if kind is float:
        return math.nan if value is None else float(value)
    if kind is bool:
        return bool(value)
    return "" if value is None else str(value)


def add_loop_events(nwb: NWBFile, reader: RecordingReader, t0: float, bad: Counter[str]
                    ) -> int:
    """The closed loop's firings, if recorded: one table row each, one column per field of
    the logged record (nested ones flattened; numbers as float, NaN where a row lacks one)."""
    events = sorted((ev for _, ev in _read(reader, "loop", LoopEvent, bad)), key=lambda e: e.t)
    if not events:
        return 0
    rows = [flatten({k: v for k, v in ev.record.items() if k != "t_acq"}) for ev in events]
    keys = list(dict.fromkeys(k for r in rows for k in r))
    kinds = {k: _kind([r.get(k) for r in rows]) for k in keys}
    table = DynamicTable(name="closed_loop_events",
                         description="closed-loop firings as the loop process logged them")
    table.add_column("timestamp", "time of the reconstruction that fired the rule (s, session "
                                  "time)")
    for key in keys:
        table.add_column(key, LOOP_DOCS.get(key, f"logged field {key}"))
    for ev, r in zip(events, rows):
        table.add_row(timestamp=float(ev.t - t0),
                      **{k: _cell(r.get(k), kinds[k]) for k in keys})
    module = nwb.create_processing_module("closed_loop", "closed-loop events")
    module.add(table)
    return len(events)
