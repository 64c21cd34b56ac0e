"""The fixed front end of the live decoder and its per-frame feature cache.

Training end to end through a ``Linear(N -> K)`` readout costs ``N x K`` multiply-adds per
frame per step, most of a 20-minute budget on a 2-core CPU. The decoder therefore reads the
population through a fixed front end fitted in closed form, and every later stage trains on
a cache of K numbers per frame:

1. **behavioural gain divided out** per neuron: ``x' = x * exp(-(pupil_z, running_z) @ G)``,
   ``G`` (2, N) from a per-neuron regression of the response on pupil and running
   (:func:`fit_gain`; V1 gain follows state multiplicatively);
2. z-score with the dataset's statistics and project onto the top K principal axes of the
   corrected training responses (:func:`fit_front`).

Targets are reduced the same way: the top P principal components of the training frames
(:func:`fit_pixel_basis`), so the linear branch is ``W*K x P`` instead of ``W*K x H*W``.
Rows outside a trial are zero raw activity and zero raw behaviour, as live.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy.linalg import eigh

from cortexcast.core.behavior import N_BEHAVIOR, complete, fill_missing
from cortexcast.decoder.offline.dataset import DatasetError, SensoriumDataset
from cortexcast.decoder.training.windows import Normalisation, pad_responses

MAX_LOG_GAIN = 1.5
"""|log gain| per behaviour z-unit is clipped here."""


def has_behavior(ds: SensoriumDataset, ids: Sequence[int]) -> bool:
    """True when every trial of ``ids`` has all four behaviour variables
    (:func:`cortexcast.core.behavior.complete`)."""
    return all(complete(ds.behavior_rows(t)) for t in ids)


def trial_behavior(ds: SensoriumDataset, tid: int, window: int, lag: int,
                    mean: np.ndarray) -> np.ndarray:
    """(T + W - 1, 4) raw behaviour padded like :func:`pad_responses`: zero rows outside the
    trial (what :class:`cortexcast.decoder.live.pixel_decoder.PixelDecoder` holds there), the training mean
    in place of NaN or a missing file (what it feeds when behaviour is missing)."""
    t = ds.length(tid)
    out = np.zeros((t + window - 1, N_BEHAVIOR), np.float32)
    before = window - 1 - lag
    out[before: before + t] = fill_missing(ds.behavior_rows(tid), mean, t)
    return out


def check_trials(ds: SensoriumDataset, tier: str) -> None:
    """DatasetError naming the trials of ``tier`` whose response files hold only NaN.

    The reader treats such trials as withheld (the competition's test tiers look like
    that); in a tier used for training they mean broken data, so training refuses them.
    """
    bad = []
    for tid in ds.trial_ids(tier):
        if ds.raw("responses", tid) is None:
            continue
        if not ds.trials[tid].has_responses or not np.isfinite(ds.responses(tid)).any():
            bad.append(tid)
    if bad:
        shown = ", ".join(str(b) for b in bad[:10]) + (" ..." if len(bad) > 10 else "")
        raise DatasetError(f"{ds.root}: {len(bad)} trial(s) of tier {tier!r} have only NaN "
                           f"responses (trials {shown}); fix or remove them, or move them to "
                           "another tier")


# ------------------------------------------------------------------ the front end
@dataclass(frozen=True)
class FrontEnd:
    """Raw rows (n, N) [+ raw behaviour (n, 4)] -> features (n, K)."""

    resp_mean: np.ndarray   # (N,)
    resp_std: np.ndarray    # (N,) > 0
    beh_mean: np.ndarray    # (4,)
    beh_std: np.ndarray     # (4,)
    gain: np.ndarray        # (2, N) log gain per z-unit of pupil, running (zeros: none)
    axes: np.ndarray        # (N, K) principal axes of the weighted z-space, times the weights

    @property
    def c0(self) -> np.ndarray:
        """(K,) ``(mean / std) @ axes``: the features of zero activity are ``-c0``."""
        return (self.resp_mean / self.resp_std) @ self.axes

    def behavior_z(self, beh: np.ndarray) -> np.ndarray:
        return np.clip((beh - self.beh_mean) / self.beh_std, -5.0, 5.0)

    def corrected(self, rows: np.ndarray, beh: np.ndarray | None) -> np.ndarray:
        """Activity with the behavioural gain divided out (NaN -> 0)."""
        x = np.nan_to_num(rows, nan=0.0, posinf=0.0, neginf=0.0)
        if beh is None or not self.gain.any():
            return x
        return x * np.exp(-(self.behavior_z(beh)[:, :2] @ self.gain))

    def __call__(self, rows: np.ndarray, beh: np.ndarray | None) -> np.ndarray:
        z = (self.corrected(rows, beh) - self.resp_mean) / self.resp_std
        return (z @ self.axes).astype(np.float32)


def fit_gain(ds: SensoriumDataset, ids: Sequence[int], beh_mean: np.ndarray,
             beh_std: np.ndarray, passes: int = 2) -> np.ndarray:
    """(2, N) per-neuron log gain per z-unit of (pupil, running).

    Least squares ``r_i ~ a_i + b_i . beh_z`` over the training frames gives the first-order
    log gain ``b_i / a_i``; each further pass refits on the responses corrected so far
    (towards the multiplicative fit when gains are large). Neurons with a mean near zero get
    no correction.
    """
    n = ds.n_neurons
    g = np.zeros((2, n))
    for _ in range(passes):
        dtd = np.zeros((3, 3))
        dtr = np.zeros((3, n))
        for tid in ids:
            b = ds.behavior_rows(tid)
            ok = np.isfinite(b[:, :2]).all(1)
            bz = np.clip((b[ok, :2] - beh_mean[:2]) / beh_std[:2], -5, 5)
            r = np.nan_to_num(ds.responses(tid)[ok].astype(np.float64)) * np.exp(-(bz @ g))
            d = np.concatenate([np.ones((len(bz), 1)), bz], 1)
            dtd += d.T @ d
            dtr += d.T @ r
        coef = np.linalg.solve(dtd + 1e-6 * np.eye(3), dtr)    # (3, N)
        a, slope = coef[0], coef[1:]
        usable = (a > 1e-3 * max(float(np.abs(a).max()), 1e-12))[None]
        g = np.clip(g + np.where(usable, slope / np.where(a > 0, a, 1.0)[None], 0.0),
                    -MAX_LOG_GAIN, MAX_LOG_GAIN)
    return g.astype(np.float32)


PCA_STEPS = 12
"""Subspace-iteration steps of the front end's PCA (see :func:`fit_front`)."""


def fit_front(ds: SensoriumDataset, ids: Sequence[int], norm: Normalisation,
              beh_mean: np.ndarray, beh_std: np.ndarray, gain: np.ndarray, k: int,
              max_frames: int, seed: int, weights: np.ndarray | None = None) -> FrontEnd:
    """Top-k principal axes of the gain-corrected, z-scored training responses (streamed;
    at most ``max_frames`` evenly spread frames; randomised subspace iteration).

    ``weights`` (N,): each z-scored neuron is scaled by its weight before the PCA
    (:mod:`~cortexcast.decoder.training.neuron_weights`) and the weights are folded into
    ``axes``, so the features are ``(z * weights) @ V``; the live graph is unchanged."""
    n = ds.n_neurons
    w = np.ones(n, np.float32) if weights is None else np.asarray(weights, np.float32)
    if w.shape != (n,) or not np.all(np.isfinite(w)) or not np.any(w > 0):
        raise ValueError(f"neuron weights must be {n} finite numbers, some > 0")
    k = min(k, n)
    proto = FrontEnd(np.asarray(norm.resp_mean, np.float64), norm.safe_std(), beh_mean, beh_std,
                     gain, np.zeros((n, 0)))
    total = sum(ds.length(i) for i in ids)
    step = max(1, int(np.ceil(total / max_frames)))
    parts, offset = [], 0
    for tid in ids:
        r = ds.responses(tid)
        rows = np.arange((-offset) % step, len(r), step)
        offset += len(r)
        if not rows.size:
            continue
        b = ds.behavior_rows(tid) if gain.any() else None
        x = proto.corrected(r[rows], None if b is None else np.nan_to_num(b[rows]))
        parts.append(((x - proto.resp_mean) / proto.resp_std).astype(np.float32) * w)
    z = np.concatenate(parts) if parts else np.zeros((0, n), np.float32)
    if len(z) < 2:
        raise DatasetError(f"{ds.root}: too few training frames for a PCA ({len(z)})")
    # randomised SVD of the (frames x N) matrix: never forms the N x N second moment. The
    # z-scored spectrum decays slowly: k + 10 columns and 2 steps left the trailing axes
    # rotated (issue 12: the decoder's ridge branch 0.988x --method ridge on a 120-trial
    # mouse); 2k columns and 12 steps, as --method ridge's PCA (ridge_fit.fit_pca).
    rng = np.random.default_rng(seed)
    start = rng.standard_normal((n, min(n, 2 * k + 10))).astype(np.float32)
    q = np.linalg.qr(z.T @ (z @ start))[0]
    for _ in range(PCA_STEPS):
        q = np.linalg.qr(z.T @ (z @ q))[0]
    _, _, vt = np.linalg.svd(z @ q, full_matrices=False)
    axes = (q @ vt.T[:, :k]).astype(np.float64) * w[:, None].astype(np.float64)
    return FrontEnd(proto.resp_mean, proto.resp_std, beh_mean, beh_std, gain, axes)


def fit_pixel_basis(ds: SensoriumDataset, ids: Sequence[int], p: int,
                    max_frames: int = 6000) -> tuple[np.ndarray, np.ndarray]:
    """(mean (H*W,), basis (H*W, P) orthonormal): top principal components of the frames."""
    total = sum(ds.length(i) for i in ids)
    step = max(1, int(np.ceil(total / max_frames)))
    s1, m, used = None, None, 0
    for tid in ids:
        v = ds.video(tid)[::step].reshape(-1, int(np.prod(ds.frame_shape)))
        vv = (v.T @ v).astype(np.float64)
        s1 = v.sum(0, dtype=np.float64) if s1 is None else s1 + v.sum(0, dtype=np.float64)
        m = vv if m is None else m + vv
        used += len(v)
    mean = s1 / used
    cov = (m / used - np.outer(mean, mean)).astype(np.float32)
    d = len(cov)
    p = min(p, d)
    # randomised subspace iteration for the top p eigenvectors, then a small eigenproblem
    q = np.linalg.qr(cov @ np.random.default_rng(0).standard_normal((d, min(d, p + 16)))
                     .astype(np.float32))[0]
    for _ in range(3):
        q = np.linalg.qr(cov @ q)[0]
    ev, vec = eigh(q.T @ cov @ q)
    return mean.astype(np.float32), (q @ vec[:, np.argsort(ev)[::-1][:p]]).astype(np.float32)


# ------------------------------------------------------------------ the cache
@dataclass
class FeatureSet:
    """Cached features of some trials, each trial padded, concatenated."""

    feats: np.ndarray       # (rows, K) float32: front end of each padded row
    behavior: np.ndarray   # (rows, 4) float32 raw behaviour of each padded row
    videos: np.ndarray      # (frames, H*W) float32 targets, 0..255 (screen coordinates)
    starts: list[tuple[int, int, int]]  # per trial: (row offset, frame offset, T)
    ids: list[int]

    @property
    def frames(self) -> int:
        return len(self.videos)

    def window_starts(self) -> np.ndarray:
        """(frames,) the row of each frame's window start (frame t of a trial: row t)."""
        return np.concatenate([p + np.arange(t) for p, _, t in self.starts]).astype(np.int64)

    def eye_z(self, front: FrontEnd, window: int, lag: int) -> np.ndarray:
        """(frames, 2) pupil-centre z of each decoded frame (its own row in the window)."""
        rows = self.window_starts() + (window - 1 - lag)
        return front.behavior_z(self.behavior[rows])[:, 2:4]


def build_features(ds: SensoriumDataset, ids: Sequence[int], front: FrontEnd, window: int,
                   lag: int) -> FeatureSet:
    """Front-end features, behaviour and targets of ``ids``, one trial read at a time."""
    feats, behs, vids, starts = [], [], [], []
    p_off = v_off = 0
    for tid in ids:
        beh = trial_behavior(ds, tid, window, lag, front.beh_mean)
        f = front(pad_responses(ds.responses(tid), window, lag), beh)
        video = ds.video(tid)
        feats.append(f)
        behs.append(beh)
        vids.append(video.reshape(len(video), -1))
        starts.append((p_off, v_off, len(video)))
        p_off += len(f)
        v_off += len(video)
    if not feats:
        raise DatasetError(f"{ds.root}: no trials to build features from")
    return FeatureSet(np.concatenate(feats), np.concatenate(behs), np.concatenate(vids),
                      starts, list(ids))
