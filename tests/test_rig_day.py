"""The rig day end to end, small (issue 9, item 8): scripts/rig_day.py runs the operator's
commands as separate processes — `clips`, a session through `up` (the simulated rig playing the
clip set, announcing clip identity and the eye over UDP, `record` writing it), `rois`, `export`
(detected and true ROIs), `train`, `evaluate`, and a live replay through daq -> decoder with the
model trained on the detected ROIs — and the results hang together."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def rig_day(tmp_path_factory) -> Path:
    pytest.importorskip("onnx")
    work = tmp_path_factory.mktemp("rigday") / "w"
    cmd = [sys.executable, str(ROOT / "scripts" / "rig_day.py"), "--work", str(work),
           "--seed", "77", "--train-clips", "6", "--test-clips", "2", "--repeats", "2",
           "--validation-clips", "2",
           "--clip-seconds", "2", "--neurons", "150", "--size", "64", "--imaging-rate", "15",
           "--train-args", "--window 3 --lag 1 --readout 16 --no-progress", "--live",
           "--live-speed", "0.5"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return work


def test_the_session_recorded_every_flip_with_its_clip_and_the_eye(rig_day: Path) -> None:
    from cortexcast.core.events import SyncEvent, StimulusFrame, from_message
    from cortexcast.daq.playlist import load_clip_set
    from cortexcast.stream.recording import RecordingReader

    clips = load_clip_set(rig_day / "clips")
    shown = [(e.clip, f) for e in clips.entries for f in range(e.frames)]
    with RecordingReader(rig_day / "session.ccr") as rec:
        stim = [from_message(m) for m in rec.messages(["stimulus"])]
        syncs = [from_message(m) for m in rec.messages(["sync"])]
        frames = rec.counts()["frames"]
    assert all(isinstance(s, StimulusFrame) for s in stim)
    assert [(s.clip, s.clip_frame) for s in stim] == shown  # every flip, in playlist order
    assert [s.index for s in stim] == list(range(len(shown)))
    assert np.array_equal(stim[5].pixels, clips.clip(stim[5].clip)[stim[5].clip_frame])
    assert len(syncs) == frames and all(isinstance(s, SyncEvent) for s in syncs)
    fresh = [s for s in syncs if "pupil" in s.behavior]
    assert len(fresh) >= 0.9 * len(syncs)  # the eye tracker's pupil reached the sync
    assert all("running" in s.behavior for s in syncs)
    summary = (rig_day / "logs" / "session.log").read_text()  # what `up` printed at the end
    assert f"recorded to {rig_day / 'session.ccr'}: " in summary and "dropped 0" in summary


def test_rois_export_train_evaluate_and_the_live_replay(rig_day: Path) -> None:
    from cortexcast.core.roi_fingerprint import read_dataset_roi_meta, roi_fingerprint
    from cortexcast.core.rois import load_rois
    from cortexcast.decoder.live.model_card import load_card
    from cortexcast.decoder.offline.dataset import SensoriumDataset

    result = json.loads((rig_day / "rig_day.json").read_text())
    detected = load_rois(rig_day / "rois.npz")
    assert detected.n_neurons > 0
    ds = SensoriumDataset(rig_day / "ds_detected")
    assert ds.n_neurons == detected.n_neurons
    tiers = {t: len(ds.trial_ids(t)) for t in ds.tiers()}
    assert tiers.get("final_test_main") == 2 * 2  # test clips x repeats
    assert (tiers.get("train"), tiers.get("oracle")) == (6, 2)  # the clip set's validation
    meta = read_dataset_roi_meta(rig_day / "ds_detected")
    assert meta is not None and meta["fingerprint"] == roi_fingerprint(detected)
    card = load_card(rig_day / "model_detected.onnx")
    assert card.extra["rois"]["fingerprint"] == roi_fingerprint(detected)
    for name in ("simulate", "true", "detected"):
        assert math.isfinite(result["scores"][name]), result["scores"]
    assert result["live_reconstructions"] > 0
    # every replayed imaging frame was decoded: one reconstruction per stimulus frame it covers
    stats = json.loads((rig_day / "live-run" / "decoder.json").read_text())
    assert stats["frames_in"] == result["session_counts"]["frames"], stats
    assert stats["bad_frames"] == 0 and stats["reconstructions_out"] == result["live_reconstructions"]
