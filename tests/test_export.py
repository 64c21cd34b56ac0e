"""`cortexcast export`: a recorded session -> a Sensorium-layout dataset with the live features.

The proof (``test_live_decoder_replay_equals_reconstruct_on_the_export``): a short simulated
session is recorded (the rig's events through the one codec into a RecordingWriter, as the
record process stores what the daq publishes), exported with the true ROIs, a ridge model is
trained on the export, and the session's frames replayed through the live FrameDecoder give,
frame for frame, what `cortexcast reconstruct` gives on the exported trials wherever the
decoder's window lies inside one trial.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from cortexcast.app.cli import main
from cortexcast.core.events import ImagingFrame, StimulusFrame, SyncEvent, from_message, to_message
from cortexcast.core.message import Message
from cortexcast.core.rois import from_pixel_lists, save_rois
from cortexcast.decoder.live.motion import MotionSettings
from cortexcast.decoder.live.process import DecoderSettings, FrameDecoder, feature_pipeline
from cortexcast.decoder.offline.dataset import SensoriumDataset
from cortexcast.decoder.offline.export import ExportError, ExportSettings, export_session
from cortexcast.decoder.offline.session_frames import SessionFramesError, open_session_frames
from cortexcast.decoder.offline.session_plan import SessionPlanError, assign_tiers
from cortexcast.decoder.offline.trials import FrameValues, SessionAssembler, zero_values
from cortexcast.stream.recording import RecordingReader, RecordingWriter

CLIP_FRAMES = 45


# ------------------------------------------------------------------------------ helpers
def write_recording(path: Path, events, skip_topics: tuple[str, ...] = ()) -> Path:
    """Events -> a recording, through the codec the daq publishes with."""
    with RecordingWriter(path, fsync_s=None) as w:
        for seq, ev in enumerate(events):
            p = to_message(ev)
            if p.topic not in skip_topics:
                w.write(Message(p.topic, p.kind, seq, "daq", p.t_acq, p.arrays, (), p.meta))
    return path


def sim_session(folder: Path, *, rate_hz: float = 30.0, preset: str = "easy"):
    """A short calibration session on the simulated rig: 6 training clips, 2 test clips x 3
    repeats, interleaved, after a warm-up movie that names no clip. Returns (recording, true
    ROI file, clip library, presentation order)."""
    from cortexcast.app.simulate import sim_settings
    from cortexcast.daq.sim.rig import SimulatedRig
    from cortexcast.daq.sim.stimulus import make_clips

    folder.mkdir(parents=True, exist_ok=True)
    s = sim_settings(preset, overrides={"n_neurons": 150, "frame_height": 64, "frame_width": 64,
                                        "imaging_rate_hz": rate_hz})
    train, _ = make_clips("train", 6, CLIP_FRAMES, [7, 1])
    test, _ = make_clips("test", 2, CLIP_FRAMES, [7, 2])
    library = {f"train_{k:04d}": c for k, c in enumerate(train)}
    library |= {f"test_{k:04d}": c for k, c in enumerate(test)}
    order = ["train_0000", "test_0000", "train_0001", "test_0001", "test_0000", "train_0002",
             "test_0001", "train_0003", "test_0000", "train_0004", "test_0001", "train_0005"]
    warm = make_clips("train", 1, 20, [7, 3])[0]
    names = [""] + order
    rig = SimulatedRig(s, clips=warm + [library[n] for n in order])
    save_rois(folder / "rois.npz", rig.rois())

    def events():
        with rig:
            for ev in rig.events():
                if isinstance(ev, StimulusFrame):  # the stimulus computer names its clips
                    ev = dataclasses.replace(ev, clip=names[int(ev.clip)])
                yield ev

    write_recording(folder / "session.ccr", events())
    return folder / "session.ccr", folder / "rois.npz", library, order


def run_cli(*argv: str) -> int:
    return main([str(a) for a in argv])


def tiny_session(folder: Path, *, stale_from: int | None = None, stimulus: bool = True,
                 frames: bool = True, n_frames: int = 40) -> tuple[Path, Path]:
    """A hand-made 8x8 session: imaging frame i shows stimulus frame i - 2 (frames 0, 1: grey);
    clips "a" (stim 0-9), "b" (10-19), "a" (20-29), "c" (30-37, cut short)."""
    folder.mkdir(parents=True, exist_ok=True)
    rois = from_pixel_lists([np.array([1, 2]), np.array([5]), np.array([6, 7])],
                            [np.array([1, 1]), np.array([4]), np.array([6, 6])], None, (8, 8),
                            block_px=4)
    save_rois(folder / "rois.npz", rois)
    rng = np.random.default_rng(0)
    clips = [("a", 0), ("b", 10), ("a", 20), ("c", 30)]
    evs = []
    for i in range(n_frames):
        j = i - 2
        beh = {"running": float(i), "pupil": 100.0 + i, "pupil_x": 10.0 + i, "pupil_y": 20.0 + i}
        if stale_from is not None and i >= stale_from:
            beh = {"running": float(i), "behavior_stale": 1.0}
        if stimulus and j >= 0:
            name, start = next((c for c in reversed(clips) if c[1] <= j))
            evs.append(StimulusFrame(j, i / 30, np.full((36, 64), j, np.uint8), name, j - start))
        evs.append(SyncEvent(i, i / 30, j if j >= 0 else -1, behavior=beh))
        if frames:
            evs.append(ImagingFrame(i, i / 30, rng.integers(100, 200, (8, 8)).astype(np.uint16)))
    return write_recording(folder / "s.ccr", evs), folder / "rois.npz"


def export(rec: Path, rois: Path, out: Path, **kw) -> dict:
    decoder = DecoderSettings(rois=str(rois), **kw.pop("decoder", {}))
    return export_session(ExportSettings(recording=str(rec), out=str(out), progress=False, **kw),
                          decoder, say=lambda _: None)


# ------------------------------------------------------------------ feature pipeline
def test_feature_pipeline_is_the_old_frame_decoder_path(tmp_path) -> None:
    """FeaturePipeline = motion -> extraction -> deconvolution exactly as FrameDecoder ran it
    before it used the pipeline, and FrameDecoder's activity is the pipeline's."""
    from cortexcast.daq.sim.rig import SimulatedRig
    from cortexcast.daq.sim.settings import SimSettings
    from cortexcast.decoder.live.deconvolution import OnlineDeconvolver
    from cortexcast.decoder.live.extraction import ActivityExtractor
    from cortexcast.decoder.live.motion import MotionCorrector
    from cortexcast.decoder.training.synthetic import write_linear_model

    rig = SimulatedRig(SimSettings(n_neurons=100, frame_height=64, frame_width=64, paced=False,
                                   duration_s=5.0, eye_shift_px=0))
    rois = rig.rois()
    save_rois(tmp_path / "rois.npz", rois)
    model = write_linear_model(tmp_path / "m.onnx", neurons=rig.n_neurons, window=4, lag=1)
    settings = DecoderSettings(rois=str(tmp_path / "rois.npz"), model=str(model),
                               activity="deconvolved",
                               motion=MotionSettings(enabled=True, reference_frames=20))
    old = (MotionCorrector(rois.frame_shape, settings.motion),
           ActivityExtractor(rois, settings.frame_rate_hz, settings.extraction),
           OnlineDeconvolver(rois.n_neurons, settings.frame_rate_hz, settings.deconvolution))
    pipe = feature_pipeline(settings, rois)
    dec = FrameDecoder(settings)
    n = 0
    with rig:
        for ev in rig.events():
            if not isinstance(ev, ImagingFrame):
                continue
            want = old[2](old[1](old[0](ev.pixels)))
            got = pipe(ev.pixels)
            assert got.dtype == np.float32 and np.array_equal(got, want)
            assert np.array_equal(dec(ev.index, ev.pixels).activity, want)
            n += 1
    assert n == 150 and pipe.motion is not None and pipe.motion.final
    assert pipe.activity_kind == "deconvolved"


# ------------------------------------------------------------------- trial assembly
def test_session_assembler_means_holds_and_hands_out_in_order() -> None:
    done: list[tuple[int, np.ndarray, np.ndarray]] = []
    asm = SessionAssembler([10, 14, 30], [4, 3, 2], 2,
                           lambda pos, rows: done.append((pos, rows.responses.copy(),
                                                          rows.behavior.copy())))

    def v(x: float) -> FrameValues:
        return FrameValues(np.array([x, -x], np.float32), np.array([x, 2 * x], np.float32),
                           np.array([0, 0], np.float32))

    asm.feed(-1, v(1))  # grey: held into the first trial's first frame
    asm.feed(11, v(2))
    asm.feed(11, v(4))  # two imaging frames on one stimulus frame: their mean
    asm.feed(13, v(5))  # frame 12: none saw it, holds frame 11
    assert done == []  # trial 0 may still get frames
    asm.feed(15, v(6))  # trial 1 starts: trial 0 is complete
    assert [d[0] for d in done] == [0]
    np.testing.assert_array_equal(done[0][1][0], [1, 3, 3, 5])
    np.testing.assert_array_equal(done[0][2][1], [2, 6, 6, 10])
    asm.feed(12, v(9))  # sync went backwards into a trial handed out: counted, not used
    asm.feed(20, v(7))  # between trials: trial 1 is complete
    assert [d[0] for d in done] == [0, 1]
    np.testing.assert_array_equal(done[1][1][0], [5, 6, 6])  # frame 14 holds frame 13's
    asm.close()  # trial 2 no imaging frame saw: the last values, held
    np.testing.assert_array_equal(done[2][1][0], [7, 7])
    c = asm.counts
    assert (c.imaging_frames, c.in_trials, c.late, c.trials, c.held_frames) == (7, 4, 1, 3, 6)
    with pytest.raises(ValueError, match="overlap"):
        SessionAssembler([0, 3], [5, 5], 1, lambda *a: None)
    assert zero_values(3).activity.shape == (3,)


def test_tiers_from_repeats_or_clip_set_with_a_seeded_oracle() -> None:
    clips = [f"tr{k}" for k in range(20)] + ["te0", "te1"] * 3
    tiers = assign_tiers(clips, None, seed=0, oracle_fraction=0.1)
    assert tiers[20:] == ["final_test_main"] * 6
    assert tiers[:20].count("oracle") == 2 and tiers[:20].count("train") == 18
    assert assign_tiers(clips, None, seed=0, oracle_fraction=0.1) == tiers  # seeded
    assert any(assign_tiers(clips, None, seed=s, oracle_fraction=0.1) != tiers
               for s in range(1, 5))
    # the clip set's tiers win over repeats: a test clip shown once is still a test clip
    tiers = assign_tiers(["a", "b", "c"], {"a": "train", "b": "train", "c": "test"}, 0, 0.1)
    assert tiers[2] == "final_test_main" and sorted(tiers[:2]) == ["oracle", "train"]
    assert assign_tiers(["a"], None, 0, 0.1) == ["train"]  # never an empty train tier
    # the clip set's validation clips are the oracle tier; no training clip is held out
    kinds = {"a": "train", "b": "train", "v": "validation", "c": "test"}
    assert assign_tiers(["a", "v", "c", "b", "c"], kinds, 0, 0.5) == [
        "train", "oracle", "final_test_main", "train", "final_test_main"]


# -------------------------------------------------------------- export of a small session
def test_export_writes_the_layout_behaviour_and_rois(tmp_path) -> None:
    rec, rois = tiny_session(tmp_path / "s", stale_from=30)
    mask = np.zeros((36, 64), bool)
    mask[5:30, 10:50] = True
    np.save(tmp_path / "mask.npy", mask)
    summary = export(rec, rois, tmp_path / "ds", eval_mask=str(tmp_path / "mask.npy"))
    ds = SensoriumDataset(tmp_path / "ds")
    # a a b -> "a" shown twice is a test clip; "b" and the cut-short "c" are training clips
    assert list(np.load(tmp_path / "ds/meta/trials/clip_ids.npy")) == ["a", "b", "a", "c"]
    tiers = list(np.load(tmp_path / "ds/meta/trials/tiers.npy"))
    assert tiers[0] == tiers[2] == "final_test_main" and sorted(tiers[1::2]) == ["oracle", "train"]
    assert [ds.length(t) for t in range(4)] == [10, 10, 10, 8]
    assert list(np.load(tmp_path / "ds/meta/trials/first_stim_frame.npy")) == [0, 10, 20, 30]
    # videos: the stimulus stream's pixels, (36, 64, T) float32
    v = np.load(tmp_path / "ds/data/videos/1.npy")
    assert v.shape == (36, 64, 10) and v.dtype == np.float32
    np.testing.assert_array_equal(v[0, 0], np.arange(10, 20))
    # behaviour: stimulus frame j was on screen during imaging frame j + 2
    b = ds.behavior(1)
    np.testing.assert_array_equal(b[:, 1], np.arange(12, 22))  # running
    np.testing.assert_array_equal(b[:, 0], 100 + np.arange(12, 22))  # pupil
    # stale from imaging frame 30 (stimulus 28): pupil and eye hold the last good value
    c = ds.behavior_rows(2)
    np.testing.assert_array_equal(c[-3:, 0], [129, 129, 129])
    np.testing.assert_array_equal(c[-3:, 2:], [[39, 49]] * 3)
    np.testing.assert_array_equal(c[-3:, 1], [29, 30, 31])  # running is not the eye's
    assert summary["counts"]["behavior_held"] == {"pupil": 10, "running": 0, "pupil_x": 10,
                                                  "pupil_y": 10}
    # responses: the pipeline's activity of imaging frame j + 2, in order
    pipe = feature_pipeline(DecoderSettings(rois=str(rois)), ds_rois := _load(rois))
    with RecordingReader(rec) as r:
        act = [pipe(ev.pixels) for ev in map(from_message, r.messages(["frames"]))]
    np.testing.assert_array_equal(ds.responses(1), np.stack(act[12:22]))
    # neurons, statistics, ROI copy and fingerprint, eval mask, summary
    assert ds.n_neurons == 3 and ds.statistics("responses")["mean"].shape == (3,)
    xy = np.load(tmp_path / "ds/meta/neurons/cell_motor_coordinates.npy")
    np.testing.assert_allclose(xy[:, :2], ds_rois.centroids[:, ::-1])
    assert (tmp_path / "ds/rois.npz").read_bytes() == rois.read_bytes()
    meta = json.loads((tmp_path / "ds/meta/rois.json").read_text())
    assert meta["fingerprint"]["count"] == 3 and meta["rois_file"] == str(rois.resolve())
    np.testing.assert_array_equal(ds.eval_mask(), mask)
    assert json.loads((tmp_path / "ds/export.json").read_text())["trials"] == 4
    assert not (tmp_path / "ds.partial").exists()


def _load(path: Path):
    from cortexcast.core.rois import load_rois

    return load_rois(path)


def test_refuses_an_existing_folder_without_force(tmp_path, capsys) -> None:
    rec, rois = tiny_session(tmp_path / "s")
    out = tmp_path / "ds"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert run_cli("export", "--recording", rec, "--rois", rois, "--out", out,
                   "--no-progress") == 2
    err = capsys.readouterr().err
    assert str(out) in err and "--force" in err and "notes.txt" in err
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]  # nothing written
    assert run_cli("export", "--recording", rec, "--rois", rois, "--out", out, "--force",
                   "--no-progress") == 0
    assert (out / "notes.txt").read_text() == "mine"  # --force replaces only the dataset
    assert SensoriumDataset(out).n_neurons == 3


def test_a_recording_without_stimulus_identity_is_a_clear_error(tmp_path, capsys) -> None:
    rec, rois = tiny_session(tmp_path / "s", stimulus=False)
    assert run_cli("export", "--recording", rec, "--rois", rois, "--out", tmp_path / "ds",
                   "--no-progress") == 2
    err = capsys.readouterr().err
    assert str(rec) in err and "stimulus identity" in err and "[daq.stimulus]" in err
    assert not (tmp_path / "ds").exists()
    with pytest.raises(SessionPlanError, match="no sync"):
        export(write_recording(tmp_path / "nosync.ccr", []), rois, tmp_path / "ds2")


def test_rois_of_another_field_of_view_are_refused(tmp_path) -> None:
    rec, _ = tiny_session(tmp_path / "s")
    save_rois(tmp_path / "big.npz", from_pixel_lists([np.array([1])], [np.array([1])], None,
                                                     (16, 16), block_px=8))
    with pytest.raises(ExportError, match=r"big\.npz.*16x16.*8x8.*another field of view"):
        export(rec, tmp_path / "big.npz", tmp_path / "ds")


# ----------------------------------------------------------------------- TIFF frames
def _write_tiffs(folder: Path, rec: Path, first: int, last: int, per_file: int = 7) -> None:
    from cortexcast.daq.standins.scanimage_tiff import ScanImageTiffWriter

    with RecordingReader(rec) as r, ScanImageTiffWriter(folder, frames_per_file=per_file) as w:
        for ev in map(from_message, r.messages(["frames"])):
            if first <= ev.index <= last:
                assert ev.pixels.max() <= 32767
                w.write(ev.index + 1, ev.t, ev.pixels.astype(np.int16)[None])


def test_tiff_frames_give_the_same_dataset_and_must_cover_the_trials(tmp_path) -> None:
    rec, rois = tiny_session(tmp_path / "s")
    export(rec, rois, tmp_path / "from_rec")
    # the rig's recording holds only sync and stimulus; ScanImage logged the frames from
    # imaging frame 3 on (page 0 = frame 3)
    sync_only = tiny_session(tmp_path / "s2", frames=False)[0]
    _write_tiffs(tmp_path / "tifs", rec, 0, 39)
    frames = open_session_frames(tiff_folder=tmp_path / "tifs")
    assert len(frames) == 40 and frames.frame_shape == (8, 8) and len(frames.files) == 6
    export(sync_only, rois, tmp_path / "from_tif", tiff_folder=str(tmp_path / "tifs"))
    for tid in range(4):
        for kind in ("responses", "behavior", "videos"):
            np.testing.assert_array_equal(np.load(tmp_path / f"from_rec/data/{kind}/{tid}.npy"),
                                          np.load(tmp_path / f"from_tif/data/{kind}/{tid}.npy"))
    # files that stop early: an error naming the files and the fix, or the covered trials
    _write_tiffs(tmp_path / "short", rec, 0, 25)
    with pytest.raises(ExportError, match=r"file_00001_00001\.tif \.\. file_00001_00004\.tif"
                                          r".*frames 0\.\.25.*--first-frame.*--allow-partial"):
        export(sync_only, rois, tmp_path / "x", tiff_folder=str(tmp_path / "short"))
    s = export(sync_only, rois, tmp_path / "partial", tiff_folder=str(tmp_path / "short"),
               allow_partial=True)
    assert s["trials"] == 2  # clips "a" and "b" (imaging frames 2..21) are covered
    # --first-frame shifts pages onto imaging frames: a wrong offset covers nothing
    with pytest.raises(ExportError, match="not covered"):
        export(sync_only, rois, tmp_path / "y", tiff_folder=str(tmp_path / "tifs"),
               first_frame=1000)
    with pytest.raises(SessionFramesError, match="no TIFF files"):
        open_session_frames(tiff_folder=tmp_path / "s")


# -------------------------------------------------------------- the clip set's manifest
def test_clip_set_gives_tiers_and_pixels(tmp_path) -> None:
    from cortexcast.daq.playlist import PlaylistEntry, write_clip_set

    rec, rois = tiny_session(tmp_path / "s")
    clips = {"a": np.full((10, 36, 64), 7, np.uint8), "b": np.full((10, 36, 64), 9, np.uint8),
             "c": np.full((10, 36, 64), 11, np.uint8)}
    entries = [PlaylistEntry(0, "a", "train", 0, 10), PlaylistEntry(1, "b", "test", 0, 10),
               PlaylistEntry(2, "a", "train", 1, 10), PlaylistEntry(3, "c", "train", 0, 10)]
    write_clip_set(tmp_path / "clips", clips, entries, {"stim_rate_hz": 30.0})
    # the daq had no clip library: its stimulus frames are grey placeholders
    with RecordingReader(rec) as r:
        events = [ev if not isinstance(ev, StimulusFrame)
                  else dataclasses.replace(ev, pixels=np.full((36, 64), 128, np.uint8))
                  for ev in map(from_message, r.messages())]
    grey = write_recording(tmp_path / "grey.ccr", events)
    s = export(grey, rois, tmp_path / "ds", clips=str(tmp_path / "clips"))
    tiers = list(np.load(tmp_path / "ds/meta/trials/tiers.npy"))
    assert tiers[1] == "final_test_main" and "final_test_main" not in tiers[::2]
    assert s["tiers_from"] == "clip set"
    assert np.all(np.load(tmp_path / "ds/data/videos/1.npy") == 9)  # from the clip set
    assert s["counts"]["video_frames_from_clip_set"] == 38


# ------------------------------------------------------------------------- simulate
def test_simulate_records_its_roi_fingerprint(tmp_path) -> None:
    from cortexcast.app.simulate import DatasetPlan, sim_settings, write_dataset
    from cortexcast.core.roi_fingerprint import read_dataset_roi_meta, roi_fingerprint

    s = sim_settings("easy", overrides={"n_neurons": 120, "frame_height": 64,
                                        "frame_width": 64})
    write_dataset(tmp_path, s, DatasetPlan(train=2, test=1, oracle_clips=1, oracle_repeats=1,
                                           frames=20, warmup_s=0.5), log=lambda _: None)
    meta = read_dataset_roi_meta(tmp_path)
    assert meta is not None and meta["rois_file"] == "rois.npz"
    assert meta["fingerprint"] == roi_fingerprint(_load(tmp_path / "rois.npz"))


# ------------------------------------------------------------------------ the proof
@pytest.mark.slow
@pytest.mark.parametrize("rate_hz,preset,features", [
    (30.0, "easy", []),
    (15.0, "realistic", ["--activity", "deconvolved", "--motion"]),
], ids=["30Hz-dff", "15Hz-deconvolved-motion"])
def test_live_decoder_replay_equals_reconstruct_on_the_export(tmp_path, rate_hz, preset,
                                                               features) -> None:
    """Export -> train ridge -> `reconstruct` on the export == the live FrameDecoder fed the
    recorded session, frame for frame.

    Compared: stimulus frame ``start + f`` of every trial for ``W - 1 - lag <= f <= T - 1 -
    lag``. There the decoder's window (responses of trial frames ``f + lag - W + 1 .. f +
    lag``) lies inside the trial, so it holds the same rows live and offline. Outside,
    `reconstruct` starts each trial's window with zeros and flushes its end with zero
    padding (as training did), while live the window holds the neighbouring trials' activity:
    those frames differ by design (checked, so the comparison is not vacuous). At 15 Hz the
    live decoder feeds each imaging frame's activity once per stimulus frame it covers, as
    the export holds a frame no imaging frame saw.
    """
    w, lag = 5, 2
    rec, rois, _, order = sim_session(tmp_path / "session", rate_hz=rate_hz, preset=preset)
    ds = tmp_path / "ds"
    assert run_cli("export", "--recording", rec, "--rois", rois, "--out", ds,
                   "--frame-rate-hz", rate_hz, *features, "--no-progress") == 0
    tiers = np.load(ds / "meta/trials/tiers.npy")
    assert list(np.load(ds / "meta/trials/clip_ids.npy")) == order
    assert sorted(set(tiers)) == ["final_test_main", "oracle", "train"]
    model = tmp_path / "ridge.onnx"
    assert run_cli("train", "--method", "ridge", "--data", ds, "--out", model, "--window", w,
                   "--lag", lag, "--readout", 32, "--no-progress") == 0
    for tier in sorted(set(tiers)):
        assert run_cli("reconstruct", "--data", ds, "--model", model, "--tier", tier, "--out",
                       tmp_path / "recon", "--no-progress") == 0

    motion = MotionSettings(enabled="--motion" in features)
    activity = "deconvolved" if "deconvolved" in features else "dff"
    dec = FrameDecoder(DecoderSettings(rois=str(rois), model=str(model), frame_rate_hz=rate_hz,
                                       activity=activity, motion=motion))
    live: dict[int, np.ndarray] = {}
    with RecordingReader(rec) as r:
        for ev in map(from_message, r.messages(["sync", "frames"])):
            if isinstance(ev, SyncEvent):
                dec.sync.add(ev.imaging_frame, ev.stim_frame, ev.behavior)
            else:
                for stim, pixels in dec(ev.index, ev.pixels).outputs:
                    live[stim] = pixels
    compared, outside = 0, []
    # The session's last flips can leave the screen before its last imaging frame ends: no
    # imaging frame carries them, so the live decoder never reconstructs them.
    last_live = max(live)
    for tid, start in enumerate(np.load(ds / "meta/trials/first_stim_frame.npy")):
        offline = np.load(tmp_path / "recon" / f"{tid}.npy")
        t_len = len(offline)
        assert t_len >= CLIP_FRAMES - 1
        for f in range(w - 1 - lag, min(t_len - lag, last_live - start + 1)):
            np.testing.assert_allclose(live[start + f], offline[f], rtol=0, atol=1e-3,
                                       err_msg=f"trial {tid} frame {f}")
            compared += 1
        outside.append(np.abs(live[start] - offline[0]).max())
    assert compared >= len(order) * (CLIP_FRAMES - w - 1)
    assert min(outside) > 0.1  # the window across a trial boundary does differ


def test_features_come_from_the_rig_configs_decoder_table(tmp_path) -> None:
    """--config: the [decoder] table the live decoder runs with sets the features (paths
    relative to the file); flags override it."""
    rec, rois = tiny_session(tmp_path / "s")
    (tmp_path / "s" / "rig.toml").write_text(
        '[decoder]\nrois = "rois.npz"\nframe_rate_hz = 15.0\nactivity = "deconvolved"\n'
        '[decoder.extraction]\nneuropil_coef = 0.5\n')
    assert run_cli("export", "--recording", rec, "--config", tmp_path / "s/rig.toml", "--out",
                   tmp_path / "ds", "--no-progress") == 0
    f = json.loads((tmp_path / "ds/export.json").read_text())["features"]
    assert (f["frame_rate_hz"], f["activity"], f["extraction"]["neuropil_coef"]) == \
        (15.0, "deconvolved", 0.5)
    assert all(np.load(p).min() >= 0 for p in (tmp_path / "ds/data/responses").glob("*.npy"))
    assert run_cli("export", "--recording", rec, "--config", tmp_path / "s/rig.toml", "--out",
                   tmp_path / "ds2", "--activity", "dff", "--no-progress") == 0
    assert json.loads((tmp_path / "ds2/export.json").read_text())["features"]["activity"] == "dff"
