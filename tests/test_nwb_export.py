"""`cortexcast export --nwb`: a recorded session as one NWB file, read back and inspected.

A short simulated session (tests/test_export.py's ``sim_session``) with reconstructions and
closed-loop events added, as the record process stores the decoder's and the loop's topics,
goes out through the command line; pynwb reads it back, each part is checked against the
recording (the ROI traces against the live FeaturePipeline run over the same frames), and
nwbinspector finds nothing critical and no best-practice violation.
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from cortexcast.core.events import (LoopEvent, Reconstruction, StimulusFrame, from_message,
                                    to_message)
from cortexcast.core.message import Message
from cortexcast.core.rois import load_rois
from cortexcast.decoder.live.process import DecoderSettings, feature_pipeline
from cortexcast.decoder.offline.export import ExportError
from cortexcast.stream.recording import RecordingReader, RecordingWriter
from test_export import _write_tiffs, run_cli, sim_session, tiny_session

pynwb = pytest.importorskip("pynwb")

RIG_TOML = """
[decoder]
rois = "rois.npz"
frame_rate_hz = 30.0

[export.nwb]
session_description = "calibration session on the simulated rig"
experiment_description = "live reconstruction of natural movies from V1"
experimenter = ["Doe, Jane"]
lab = "Cortexcast Lab"
institution = "Test University"
subject_id = "sim-001"
sex = "F"
age = "P90D"
genotype = "Slc17a7-Cre;Ai162"
subject_description = "simulated mouse"
indicator = "GCaMP6s"
"""


def add_decoder_topics(src: Path, dst: Path) -> tuple[int, int]:
    """``src`` plus a reconstruction of every even stimulus frame and a loop firing on every
    100th: (reconstructions, loop events) written."""
    n_rec = n_loop = 0
    with RecordingReader(src) as r, RecordingWriter(dst, fsync_s=None) as w:
        seq = len(r)
        for m in r:
            w.write(m)
            ev = from_message(m)
            if not isinstance(ev, StimulusFrame) or ev.index % 2:
                continue
            extra: list = [Reconstruction(ev.index, ev.t + 0.05, ev.pixels[::-1].astype(
                np.float32), ev.index + 2, 2, "sim")]
            n_rec += 1
            if ev.index % 100 == 0:
                extra.append(LoopEvent(ev.t + 0.06, {
                    "rule": "bright", "output": "ttl", "value": 1.5, "threshold": 1.0,
                    "frames": 3, "t_acq": ev.t + 0.06, "imaging_frame": ev.index + 2,
                    "stim_frame": ev.index, "ok": True, "error": None, "wall_time": 1.7e9,
                    "latency_ms": {"frame_to_output": 3.5, "decide_to_output": None}}))
                n_loop += 1
            for e in extra:
                p = to_message(e)
                w.write(Message(p.topic, p.kind, seq, "decoder", p.t_acq, p.arrays, (), p.meta))
                seq += 1
    return n_rec, n_loop


@pytest.fixture(scope="module")
def session(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("nwb")
    rec, rois, _, order = sim_session(folder / "sim")
    full = folder / "sim" / "full.ccr"
    n_rec, n_loop = add_decoder_topics(rec, full)
    (folder / "sim" / "rig.toml").write_text(RIG_TOML)
    out = folder / "session.nwb"
    assert run_cli("export", "--recording", full, "--config", folder / "sim" / "rig.toml",
                   "--nwb", out, "--no-progress") == 0
    return {"rec": full, "rois": rois, "order": order, "out": out, "n_rec": n_rec,
            "n_loop": n_loop}


def _recording_events(path: Path, topic: str) -> list:
    with RecordingReader(path) as r:
        return [from_message(m) for m in r.messages([topic])]


def test_the_nwb_file_holds_the_session(session) -> None:
    frames = _recording_events(session["rec"], "frames")
    stims = _recording_events(session["rec"], "stimulus")
    syncs = _recording_events(session["rec"], "sync")
    rois = load_rois(session["rois"])
    with pynwb.NWBHDF5IO(str(session["out"]), "r") as io:
        nwb = io.read()
        assert nwb.subject.subject_id == "sim-001" and nwb.subject.species == "Mus musculus"
        assert nwb.subject.age == "P90D" and nwb.subject.sex == "F"
        assert list(nwb.experimenter) == ["Doe, Jane"] and nwb.lab == "Cortexcast Lab"
        assert nwb.session_start_time.tzinfo is not None
        # imaging: every frame, as recorded, gzip-compressed
        tps = nwb.acquisition["TwoPhotonSeries"]
        assert tps.data.shape == (len(frames), 64, 64)
        np.testing.assert_array_equal(tps.data[5], frames[5].pixels)
        np.testing.assert_array_equal(tps.data[-1], frames[-1].pixels)
        assert tps.data.compression == "gzip"
        assert tps.imaging_plane.indicator == "GCaMP6s"
        assert abs(tps.rate - 30.0) < 1e-6 and tps.starting_time == 0.0
        # ROIs: the ROI set's soma weights as pixel masks
        ophys = nwb.processing["ophys"]
        seg = ophys["ImageSegmentation"]["PlaneSegmentation"]
        assert len(seg) == rois.n_neurons
        mask = np.array(seg["pixel_mask"][3])
        dense = np.zeros(rois.frame_shape, np.float32)
        dense[mask["y"], mask["x"]] = mask["weight"]
        np.testing.assert_allclose(dense.ravel(), rois.masks[3].toarray().ravel(), rtol=1e-6)
        # traces: exactly the live feature pipeline over the same frames
        pipe = feature_pipeline(DecoderSettings(rois=str(session["rois"])), rois)
        want = np.stack([pipe(f.pixels) for f in frames])
        dff = ophys["DfOverF"]["RoiResponseSeries"].data[:]
        assert dff.shape == (len(frames), rois.n_neurons)
        np.testing.assert_array_equal(dff, want)
        f = ophys["Fluorescence"]["RoiResponseSeries"].data[:]
        np.testing.assert_allclose(f[7], pipe.extract.fluorescence(frames[7].pixels), rtol=1e-6)
        # stimulus frames and clip presentations
        stim = nwb.stimulus["stimulus_frames"]
        assert stim.data.shape == (len(stims), 36, 64)
        np.testing.assert_array_equal(stim.data[100], stims[100].pixels)
        table = nwb.intervals["clip_presentations"].to_dataframe()
        assert list(table["clip"]) == session["order"]
        repeats = Counter()
        for clip, rep in zip(table["clip"], table["repeat"]):
            assert rep == repeats[clip]
            repeats[clip] += 1
        assert set(table.loc[table["clip"].str.startswith("test"), "tier"]) == {"final_test_main"}
        assert (table["stop_time"] > table["start_time"]).all()
        assert (table["n_frames"] == 45).all()
        # behaviour
        beh = nwb.processing["behavior"]
        running = beh["BehavioralTimeSeries"]["running_speed"]
        assert running.data.shape == (len(syncs),)
        np.testing.assert_allclose(running.data[:], [s.behavior["running"] for s in syncs])
        assert beh["PupilTracking"]["pupil_center"].data.shape == (len(syncs), 2)
        # decoder and closed loop
        recon = nwb.processing["decoder"]["reconstructions"]
        assert recon.data.shape == (session["n_rec"], 36, 64)
        stim_of = nwb.processing["decoder"]["reconstruction_stim_frame"].data[:]
        assert (stim_of % 2 == 0).all()
        np.testing.assert_allclose(recon.data[10], stims[int(stim_of[10])].pixels[::-1])
        loop = nwb.processing["closed_loop"]["closed_loop_events"].to_dataframe()
        assert len(loop) == session["n_loop"] and set(loop["rule"]) == {"bright"}
        assert (loop["latency_ms_frame_to_output"] == 3.5).all()
        assert (loop["error"] == "").all() and loop["ok"].all()  # None: an empty string


def test_nwbinspector_finds_no_violation(session) -> None:
    inspector = pytest.importorskip("nwbinspector")
    bad = [m for m in inspector.inspect_nwbfile(nwbfile_path=str(session["out"]))
           if m.importance.name in ("ERROR", "PYNWB_VALIDATION", "CRITICAL",
                                    "BEST_PRACTICE_VIOLATION")]
    assert not bad, "\n".join(f"{m.importance.name} {m.check_function_name} {m.location}: "
                              f"{m.message}" for m in bad)


def _export(rec: Path, rois: Path, out: Path, meta: dict | None = None, **kw) -> dict:
    from cortexcast.core.config import settings_from_table
    from cortexcast.decoder.offline.nwb_export import NwbSettings, export_nwb
    from cortexcast.decoder.offline.nwb_metadata import NwbMetadata

    meta = settings_from_table(NwbMetadata, meta or {})
    return export_nwb(NwbSettings(recording=str(rec), out=str(out), progress=False, **kw),
                      DecoderSettings(rois=str(rois)), meta, say=lambda _: None)


def test_subject_left_out_and_stale_eye_values_are_nan(tmp_path) -> None:
    rec, rois = tiny_session(tmp_path / "s", stale_from=30)
    _export(rec, rois, tmp_path / "s.nwb", {"include_subject": False})
    with pynwb.NWBHDF5IO(str(tmp_path / "s.nwb"), "r") as io:
        nwb = io.read()
        assert nwb.subject is None
        beh = nwb.processing["behavior"]
        pupil = beh["PupilTracking"]["pupil_size"].data[:]
        running = beh["BehavioralTimeSeries"]["running_speed"].data[:]
        np.testing.assert_array_equal(pupil[:30], 100.0 + np.arange(30))
        assert np.isnan(pupil[30:]).all() and np.isnan(
            beh["PupilTracking"]["pupil_center"].data[30:]).all()
        np.testing.assert_array_equal(running, np.arange(40.0))  # running is never stale
        assert "decoder" not in nwb.processing and "closed_loop" not in nwb.processing


def test_link_to_scanimage_tiffs(tmp_path) -> None:
    rec, rois = tiny_session(tmp_path / "s")
    sync_only = tiny_session(tmp_path / "s2", frames=False)[0]
    _write_tiffs(tmp_path / "tifs", rec, 0, 39)
    out = tmp_path / "out" / "linked.nwb"
    _export(sync_only, rois, out, {"age": "P60D", "subject_id": "m2"},
            tiff_folder=str(tmp_path / "tifs"), link_tiffs=True)
    with pynwb.NWBHDF5IO(str(out), "r") as io:
        tps = io.read().acquisition["TwoPhotonSeries"]
        assert tps.format == "external" and len(tps.external_file) == 6
        assert all(not Path(p).is_absolute() and (out.parent / p).is_file()
                   for p in tps.external_file)
        assert list(tps.starting_frame) == [0, 7, 14, 21, 28, 35]
    inspector = pytest.importorskip("nwbinspector")
    found = {(m.importance.name, m.check_function_name)
             for m in inspector.inspect_nwbfile(nwbfile_path=str(out))}
    # 38 stimulus frames of 36x64: too short a series for the orientation heuristic
    assert {f for f in found if f[0] not in ("BEST_PRACTICE_SUGGESTION",)} == {
        ("CRITICAL", "check_data_orientation")}


def test_clear_errors(tmp_path, monkeypatch, capsys) -> None:
    rec, rois = tiny_session(tmp_path / "s")
    _export(rec, rois, tmp_path / "a.nwb")
    with pytest.raises(ExportError, match="already exists.*--force"):
        _export(rec, rois, tmp_path / "a.nwb")
    _export(rec, rois, tmp_path / "a.nwb", force=True)
    bad = tmp_path / "bad.toml"
    bad.write_text(f'[decoder]\nrois = "{rois}"\n[export.nwb]\nage = "90 days"\n')
    assert run_cli("export", "--recording", rec, "--config", bad, "--nwb", tmp_path / "b.nwb") == 2
    assert "ISO 8601" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "pynwb", None)  # as if the nwb extra were not installed
    assert run_cli("export", "--recording", rec, "--rois", rois, "--nwb", tmp_path / "c.nwb") == 2
    assert "pip install 'cortexcast[nwb]'" in capsys.readouterr().err
    assert not (tmp_path / "c.nwb").exists()

