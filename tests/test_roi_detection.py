"""`cortexcast rois`: built-in ROI detection on a simulated session, through real files.

The session is the simulated rig's (moving brain, shot noise, neuropil) recorded through
the daq's codec into a cortexcast recording, or written as ScanImage TIFFs; detection is
scored against the rig's true footprints.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cortexcast.app.cli import main
from cortexcast.core.events import ImagingFrame, from_message, to_message
from cortexcast.core.message import Message
from cortexcast.core.rois import ROIError, from_pixel_lists, load_rois, save_rois
from cortexcast.decoder.live.motion import (MotionCorrector, MotionError, MotionSettings,
                                            load_reference)
from cortexcast.decoder.live.process import DecoderSettings, _motion_corrector
from cortexcast.decoder.offline.roi_frames import plan_sample
from cortexcast.decoder.offline.roi_detection import DetectionSettings
from cortexcast.decoder.offline.roi_quality import match_rois
from cortexcast.stream.recording import RecordingReader, RecordingWriter

SIZE, NEURONS, SECONDS, RATE = 128, 300, 40.0, 30.0
DEFAULTS = {"max_frames": DetectionSettings().max_frames, "bin_s": DetectionSettings().bin_s}


def run_cli(*argv: object) -> int:
    return main([str(a) for a in argv])


def write_recording(path: Path, events) -> Path:
    with RecordingWriter(path, fsync_s=None) as w:
        for seq, ev in enumerate(events):
            p = to_message(ev)
            w.write(Message(p.topic, p.kind, seq, "daq", p.t_acq, p.arrays, (), p.meta))
    return path


@pytest.fixture(scope="module")
def session(tmp_path_factory) -> tuple[Path, Path]:
    """(recording, true ROI file): 40 s of a 128x128 field of 300 neurons at 30 Hz, the
    brain moving by ~2 px."""
    from cortexcast.app.simulate import sim_settings
    from cortexcast.daq.sim.rig import SimulatedRig

    folder = tmp_path_factory.mktemp("rois_session")
    s = sim_settings("easy", overrides={"n_neurons": NEURONS, "frame_height": SIZE,
                                        "frame_width": SIZE, "imaging_rate_hz": RATE,
                                        "motion_px": 2.0})
    import dataclasses

    rig = SimulatedRig(dataclasses.replace(s, duration_s=SECONDS))
    rec = write_recording(folder / "session.ccr", (ev for ev in rig.events()
                                                    if not type(ev).__name__ == "StimulusFrame"))
    truth = folder / "rois_true.npz"
    save_rois(truth, rig.rois())
    return rec, truth


def frames_of(rec: Path) -> list[np.ndarray]:
    with RecordingReader(rec) as r:
        return [ev.pixels for ev in map(from_message, r.messages(["frames"]))
                if isinstance(ev, ImagingFrame)]


# ------------------------------------------------------------------------------- plan

def test_plan_reads_the_reference_then_short_runs_over_the_whole_session() -> None:
    plan = plan_sample(54_000, 30.0, **DEFAULTS, reference_frames=60)
    assert np.array_equal(plan.reference, np.arange(120))
    assert plan.step == 1 and plan.bin_frames == 9  # 0.3 s at 30 Hz
    assert all(np.array_equal(b, np.arange(b[0], b[0] + 9)) for b in plan.bins)
    starts = np.array([b[0] for b in plan.bins])
    assert starts[0] == 0 and starts[-1] == 54_000 - 9 and np.all(np.diff(starts) > 9)
    assert plan.n_read <= 4000


def test_plan_caps_the_bins_held_in_memory() -> None:
    plan = plan_sample(14_400, 8.0, **DEFAULTS, reference_frames=60, max_bins=500)
    assert len(plan.bins) == 500 and plan.bin_frames == 4  # 0.3 s = 2 frames, at most 2x


def test_plan_for_a_source_read_in_order_is_strided() -> None:
    plan = plan_sample(54_000, 30.0, **DEFAULTS, reference_frames=60, contiguous=False)
    assert plan.step == 14  # ~3880 of 54000 frames
    every = np.concatenate(plan.bins)
    assert np.all(every % 14 == 0) and plan.n_read <= 4000


# ------------------------------------------------------------------------------ quality

def test_match_rois_finds_the_offset_and_scores(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    centres = rng.uniform(10, 90, (60, 2)).round().astype(int)
    ys, xs = [], []
    for cy, cx in centres:
        dy, dx = np.mgrid[-1:2, -1:2]
        ys.append((cy + dy).ravel())
        xs.append((cx + dx).ravel())
    truth = from_pixel_lists(ys, xs, None, (100, 100))
    assert match_rois(truth, truth).precision == 1.0
    moved = from_pixel_lists([y + 1 for y in ys], [x - 2 for x in xs], None, (100, 100))
    m = match_rois(moved, truth)
    assert m.offset == pytest.approx((1.0, -2.0), abs=0.2)
    assert m.recall == 1.0 and m.precision == 1.0
    assert match_rois(moved, truth, align=False).recall < 0.5


# ----------------------------------------------------------------------- the command

def test_rois_from_a_recording(session, tmp_path: Path, capsys) -> None:
    rec, truth = session
    out = tmp_path / "rois.npz"
    assert run_cli("rois", "--recording", rec, "--out", out, "--truth", truth) == 0
    printed = capsys.readouterr().out
    assert "at 30 Hz (the frame times in" in printed
    assert "precision" in printed and "recall" in printed
    rois = load_rois(out)
    assert rois.frame_shape == (SIZE, SIZE)
    m = match_rois(rois, load_rois(truth))
    assert m.precision >= 0.85 and m.recall >= 0.8, m.summary()
    assert out.with_suffix(".png").stat().st_size > 1000
    with np.load(out) as z:
        assert {"reference", "mean_image", "correlation_image"} <= set(z.files)
        saved_ref = z["reference"]
        assert z["mean_image"].shape == z["correlation_image"].shape == (SIZE, SIZE)

    # the reference is exactly what the live decoder's online correction builds
    mc = MotionCorrector((SIZE, SIZE), MotionSettings())
    for frame in frames_of(rec)[:2 * MotionSettings().reference_frames]:
        mc(frame)
    assert mc.final
    np.testing.assert_array_equal(saved_ref, mc.reference)

    # and the decoder uses it when [decoder.motion] reference is empty
    np.testing.assert_array_equal(load_reference(out), saved_ref)
    dec = _motion_corrector(DecoderSettings(rois=str(out), motion=MotionSettings(enabled=True)),
                            (SIZE, SIZE))
    assert dec is not None and dec.final
    np.testing.assert_array_equal(dec.reference, saved_ref)


def test_rois_from_scanimage_tiffs(session, tmp_path: Path, capsys) -> None:
    """TIFFs are read in order (every n-th frame); the rate comes from ScanImage's header."""
    from cortexcast.daq.standins.scanimage_tiff import ScanImageTiffWriter

    rec, truth = session
    folder = tmp_path / "si"
    with ScanImageTiffWriter(folder, frames_per_file=500, frame_rate_hz=RATE) as w:
        for k, frame in enumerate(frames_of(rec)):
            w.write(k + 1, k / RATE, frame.astype(np.int16)[None])
    out = tmp_path / "rois.npz"
    assert run_cli("rois", "--tiff-folder", folder, "--out", out, "--max-frames", 600) == 0
    printed = capsys.readouterr().out
    assert "ScanImage's metadata" in printed and "one frame in 3" in printed
    m = match_rois(load_rois(out), load_rois(truth))
    assert m.precision >= 0.8 and m.recall >= 0.6, m.summary()


# ---------------------------------------------------------------------------- bad input

def test_a_recording_without_frames(tmp_path: Path, capsys) -> None:
    from cortexcast.core.events import SyncEvent

    rec = write_recording(tmp_path / "sync_only.ccr",
                          [SyncEvent(i, i / 30, i, behavior={"running": 0.0}) for i in range(5)])
    assert run_cli("rois", "--recording", rec, "--out", tmp_path / "r.npz") == 2
    err = capsys.readouterr().err
    assert "sync_only.ccr holds no imaging frames" in err and "--tiff-folder" in err
    assert not (tmp_path / "r.npz").exists()


def test_a_tiff_folder_that_does_not_exist(tmp_path: Path, capsys) -> None:
    assert run_cli("rois", "--tiff-folder", tmp_path / "nowhere", "--out",
                   tmp_path / "r.npz") == 2
    err = capsys.readouterr().err
    assert "nowhere does not exist" in err and "--tiff-folder" in err


def test_an_existing_output_needs_force(session, tmp_path: Path, capsys) -> None:
    rec, _ = session
    out = tmp_path / "rois.npz"
    out.write_bytes(b"keep me")
    assert run_cli("rois", "--recording", rec, "--out", out) == 2
    err = capsys.readouterr().err
    assert f"{out} already exists" in err and "--force" in err
    assert out.read_bytes() == b"keep me"
    assert run_cli("rois", "--recording", rec, "--out", out, "--force",
                   "--max-frames", 300) == 0
    assert load_rois(out).n_neurons > 0


def test_no_frames_given(tmp_path: Path, capsys) -> None:
    assert run_cli("rois", "--out", tmp_path / "r.npz") == 2
    assert "--recording F.ccr or --tiff-folder DIR" in capsys.readouterr().err


# ----------------------------------------------------------------------- ROI file format

def test_save_rois_keeps_the_reference(tmp_path: Path) -> None:
    rois = from_pixel_lists([np.array([1, 1, 2])], [np.array([1, 2, 1])], None, (8, 10))
    ref = np.arange(80, dtype=np.float32).reshape(8, 10)
    save_rois(tmp_path / "a.npz", rois, reference=ref)
    np.testing.assert_array_equal(load_reference(tmp_path / "a.npz"), ref)
    assert load_rois(tmp_path / "a.npz").n_neurons == 1
    save_rois(tmp_path / "b.npz", rois)
    with pytest.raises(MotionError, match=r"b\.npz: this ROI file has no motion reference \("):
        load_reference(tmp_path / "b.npz")
    with pytest.raises(ROIError, match="motion reference is"):
        save_rois(tmp_path / "c.npz", rois, reference=np.zeros((4, 4)))
