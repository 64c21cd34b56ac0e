"""The offline inversion method: pixels by gradient descent through encoding models."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from cortexcast.app.cli import main  # noqa: E402
from cortexcast.decoder.offline.dataset import SensoriumDataset  # noqa: E402
from cortexcast.decoder.training.inversion.encoder import EncoderShape, VideoEncoder  # noqa: E402
from cortexcast.decoder.training.inversion.fit import FitSettings, fit_encoders  # noqa: E402
from cortexcast.decoder.training.inversion.invert import InversionSettings, invert_clip, smooth  # noqa: E402
from cortexcast.decoder.live.metric import pixel_correlation  # noqa: E402
from cortexcast.decoder.live.model_card import ModelError  # noqa: E402
from cortexcast.decoder.training.synthetic import write_synthetic_dataset  # noqa: E402
from scipy.ndimage import gaussian_filter  # noqa: E402


class LinearPoisson(torch.nn.Module):
    """A known encoder: rate_n(t) = exp(b + w_n . (frame t - 128) / 64)."""

    def __init__(self, rf: np.ndarray) -> None:
        super().__init__()
        self.rf = torch.as_tensor(rf.reshape(len(rf), -1), dtype=torch.float32)

    def forward(self, video, behavior, frames=None, neurons=None):
        v = video if frames is None else video[:, frames]
        w = self.rf if neurons is None else self.rf[neurons]
        drive = ((v - 128.0) / 64.0).flatten(2) @ w.T
        return torch.exp(0.5 + drive)


def _movie(rng: np.random.Generator, t: int, h: int, w: int) -> np.ndarray:
    m = gaussian_filter(rng.standard_normal((t, h, w)), (1.5, 2.5, 2.5))
    return np.clip(128 + 60 * m / m.std(), 0, 255).astype(np.float32)


def test_inversion_with_a_known_linear_poisson_encoder_beats_grey() -> None:
    rng = np.random.default_rng(1)
    t, h, w, n = 24, 12, 16, 300
    rf = rng.standard_normal((n, h, w))
    rf = gaussian_filter(rf, (0, 1.0, 1.0))
    rf /= np.linalg.norm(rf.reshape(n, -1), axis=1)[:, None, None]
    model = LinearPoisson(rf).requires_grad_(False)
    movie = _movie(rng, t, h, w)
    with torch.no_grad():
        rate = model(torch.from_numpy(movie)[None], None)[0].numpy()
    counts = rng.poisson(rate * 20) / 20.0     # a well-measured Poisson response
    mask = np.ones((h, w), bool)
    s = InversionSettings(iterations=150, lr=6.0, sigma_px=0.5, sigma_frames=0.0,
                          frames_per_step=0, neurons_per_step=0)
    recon = invert_clip([model], counts, np.zeros((t, 4)), mask, s, grey=128.0)
    assert recon.shape == movie.shape and recon.dtype == np.float32
    assert recon.min() >= 0 and recon.max() <= 255
    grey = np.full_like(movie, 128.0)
    r = pixel_correlation(recon, movie, start=0, stop=t)
    assert r > 0.6, r
    assert pixel_correlation(grey, movie, start=0, stop=t) == 0.0
    assert np.mean((recon - movie) ** 2) < 0.7 * np.mean((grey - movie) ** 2)


def test_pixels_outside_the_mask_never_move() -> None:
    torch.manual_seed(0)
    model = VideoEncoder(EncoderShape(neurons=12, frames=3, temporal=2, channels=4))
    with torch.no_grad():
        model.features.mul_(5.0)
    model.requires_grad_(False)
    mask = np.zeros((36, 64), bool)
    mask[10:20, 20:40] = True
    rng = np.random.default_rng(0)
    targets = rng.poisson(2.0, size=(10, 12)).astype(np.float32)
    s = InversionSettings(iterations=4, lr=20.0, sigma_px=2.0, sigma_frames=1.0,
                          frames_per_step=5, neurons_per_step=6)
    recon = invert_clip([model, model], targets, np.zeros((10, 4)), mask, s, grey=100.0)
    np.testing.assert_array_equal(recon[:, ~mask], 100.0)
    assert np.abs(recon[:, mask] - 100.0).max() > 1.0


def test_smoothing_keeps_mass_and_zero_sigma_is_identity() -> None:
    x = torch.zeros(9, 11, 13)
    x[4, 5, 6] = 1.0
    y = smooth(x, 1.0, 1.0)
    assert abs(float(y.sum()) - 1.0) < 1e-5 and float(y[4, 5, 6]) < 1.0
    assert torch.equal(smooth(x, 0.0, 0.0), x)


def test_settings_are_validated() -> None:
    with pytest.raises(ValueError, match="iterations"):
        InversionSettings(iterations=0)
    with pytest.raises(ValueError, match="members"):
        FitSettings(members=0)
    with pytest.raises(ValueError, match="budget"):
        FitSettings(time_budget_s=0)
    with pytest.raises(ValueError, match="visual_warmup"):
        FitSettings(visual_warmup=1.0)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic_dataset(tmp_path_factory.mktemp("inv") / "mouse", neurons=20,
                                   length=40, padded=44, eval_mask=True)


def test_encoders_are_cached_and_reused(data_dir: Path, tmp_path: Path) -> None:
    ds = SensoriumDataset(data_dir)
    cache = tmp_path / "enc.pt"
    s = FitSettings(members=1, time_budget_s=1.0, frames=4, temporal=2, channels=4,
                    segment=16, batch=2, neurons_per_step=8, visual_warmup=0.5,
                    progress=False)
    models, info = fit_encoders(ds, cache, s, torch.device("cpu"))
    assert cache.is_file() and len(models) == 1 and info["reused"] == 0
    assert info["members"][0]["steps"] >= 1
    before = cache.stat().st_mtime_ns
    again, info2 = fit_encoders(ds, cache, s, torch.device("cpu"))
    assert info2["reused"] == 1 and cache.stat().st_mtime_ns == before
    for a, b in zip(models[0].state_dict().values(), again[0].state_dict().values()):
        assert torch.equal(a, b)
    two, info3 = fit_encoders(ds, cache, FitSettings(**{**s.__dict__, "members": 2}),
                              torch.device("cpu"))
    assert len(two) == 2 and info3["reused"] == 1
    assert [m["seed"] for m in info3["members"]] == [0, 1]
    other = write_synthetic_dataset(tmp_path / "other", neurons=7, length=30, padded=30)
    with pytest.raises(ModelError, match="7"):
        fit_encoders(SensoriumDataset(other), cache, s, torch.device("cpu"))


def test_cli_inversion_writes_what_evaluate_scores(data_dir: Path, tmp_path: Path,
                                                   capsys) -> None:
    out = tmp_path / "inv"
    args = ["reconstruct", "--method", "inversion", "--data", str(data_dir), "--tier",
            "final_test_main", "--out", str(out), "--members", "1", "--time-budget", "2",
            "--iterations", "3", "--no-progress", "--device", "cpu"]
    assert main(args) == 0
    assert "wrote 3 reconstructions" in capsys.readouterr().out
    ds = SensoriumDataset(data_dir)
    for tid in ds.trial_ids("final_test_main"):
        r = np.load(out / f"{tid}.npy")
        assert r.shape == (40, 36, 64) and r.dtype == np.float32
        assert r.min() >= 0 and r.max() <= 255
        np.testing.assert_array_equal(r[:, ~ds.eval_mask()], r[0, 0, 0])  # grey outside
    summary = json.loads((out / "inversion.json").read_text())
    assert summary["method"] == "inversion" and (out / "encoder.pt").is_file()
    assert main(["evaluate", "--data", str(data_dir), "--tier", "final_test_main",
                 "--recon", str(out)]) == 0
    assert "mean pixel correlation over 3 of 3 clips" in capsys.readouterr().out
    # a withheld tier is reported and skipped, not an error
    assert main(args[:6] + ["live_test_main"] + args[7:]) == 0
    assert "no responses" in capsys.readouterr().err
    # a user error is a message and exit 2
    if not torch.cuda.is_available():
        assert main(args[:-2] + ["--device", "cuda:7"]) == 2
        assert "CUDA is not available" in capsys.readouterr().err


def test_offline_package_is_not_imported_by_the_live_path() -> None:
    import subprocess
    import sys

    code = ("import sys, cortexcast.decoder.live.process, cortexcast.decoder.offline.reconstruct, cortexcast.decoder.offline.evaluate, "
            "cortexcast.decoder.offline.report; print('torch' in sys.modules)")
    env = dict(os.environ)
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env=env)
    assert out.stdout.strip() == "False"


def test_readout_positions_start_at_the_receptive_fields(data_dir: Path) -> None:
    from cortexcast.decoder.training.inversion.encoder import estimate_positions

    ds = SensoriumDataset(data_dir)
    ids = ds.trial_ids("train")
    xy = estimate_positions((ds.responses(i) for i in ids), (ds.video(i) for i in ids),
                            bin_px=2)
    coords = np.load(data_dir / "meta/neurons/cell_motor_coordinates.npy")
    cx, cy = coords[:, 0] / 10, coords[:, 1] / 10        # the synthetic fields' centres (px)
    px = (xy[:, 0] + 1) / 2 * 64
    py = (xy[:, 1] + 1) / 2 * 36
    err = np.hypot(px - cx - 0.5, py - cy - 0.5)
    assert np.median(err) < 4.0, np.median(err)
