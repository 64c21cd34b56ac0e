"""How much each neuron's activity says about the movie: weights for the decoder's front end.

Z-scoring gives every neuron the same say in the principal axes the decoder reads, and on a
mouse where half the neurons are non-visual or barely driven, and a shared fluctuation
moves them together, the top axes of the z-scored population are mostly that noise (issue
12: the ridge branch on 256 such axes scored 0.454 on a suite mouse's test tiers; on axes of
the population weighted as below, 0.556, with the same window, penalty and pixels).

The weight of a neuron is the correlation between its z-scored activity and the activity a
linear encoding model predicts from the movie, cross-validated across two halves of the
training trials (so a neuron that only fits noise gets ~0): the frames ``t - lags + 1 .. t``
in the top ``components`` principal components of the training frames, ridge to every
neuron at once. Negative correlations count as 0. The weight is that correlation plus a
floor of 0.05, scaled to a root mean square of 1 (so the penalties chosen on the weighted
features keep their meaning).

The floor is there because the encoding model is linear and in screen coordinates: it
misses what a neuron says when the eye moves the image on the retina, and complex cells.
On five development mice (seeds 900-903, 10003; 2,000-3,000 neurons, 34-60 trials) the
plain ridge's test score went from base / weight r / r + 0.05 / sqrt(r): 0.426 / 0.424 /
0.432 / 0.434, 0.275 / 0.356 / 0.353 / 0.352, 0.096 / 0.148 / 0.147 / 0.144, 0.504 /
0.519 / 0.518 / 0.518, 0.454 / 0.556 / 0.554 / 0.548: the floor costs little where the
weights help most and keeps the one mouse whose eye rotates the image above the base.
numpy only; two streamed passes over the training trials (the responses are never all in
memory).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from cortexcast.decoder.offline.dataset import SensoriumDataset
from cortexcast.decoder.training.features import fit_pixel_basis
from cortexcast.decoder.training.windows import Normalisation
from cortexcast.decoder.training.plain_ridge import lagged


@dataclass(frozen=True)
class NeuronWeights:
    weights: np.ndarray      # (N,) >= 0, root mean square 1
    reliability: np.ndarray  # (N,) cross-validated encoding correlation, clipped at 0

    def summary(self) -> dict[str, float]:
        r = self.reliability
        return {"median_r": float(np.median(r)), "fraction_r_above_0.1": float(np.mean(r > 0.1)),
                "max_r": float(r.max()) if r.size else 0.0,
                "effective_fraction": float(self.weights.sum() ** 2
                                            / max(len(r) * (self.weights ** 2).sum(), 1e-12))}


FLOOR = 0.05
"""Added to every neuron's correlation before scaling (see the module docstring)."""


def fit_neuron_weights(ds: SensoriumDataset, ids: Sequence[int], norm: Normalisation, *,
                       components: int = 64, lags: int = 10, alpha: float = 0.1,
                       floor: float = FLOOR,
                       frame_basis: tuple[np.ndarray, np.ndarray] | None = None
                       ) -> NeuronWeights:
    """Cross-validated encoding correlation of every neuron on ``ids`` (see the module doc).

    ``alpha``: ridge penalty relative to the mean eigenvalue of each half's Gram matrix.
    ``frame_basis``: (mean, principal axes) of the frames, e.g. the decoder's own; its first
    ``components`` axes are used (default: fitted here). With fewer than two training trials
    there is nothing to cross-validate: weights of 1.
    """
    n = ds.n_neurons
    ids = list(ids)
    if len(ids) < 2:
        return NeuronWeights(np.ones(n), np.zeros(n))
    mean = np.asarray(norm.resp_mean, np.float64)
    inv_std = 1.0 / norm.safe_std()
    pix_mean, basis = frame_basis or fit_pixel_basis(ds, ids, components)
    axes = np.asarray(basis[:, :components], np.float64)
    d = lags * axes.shape[1]

    def design(tid: int) -> tuple[np.ndarray, np.ndarray]:
        v = ds.video(tid).reshape(ds.length(tid), -1).astype(np.float64)
        x = np.nan_to_num((v - pix_mean) @ axes)    # frames without a picture: the mean
        z = np.nan_to_num((ds.responses(tid).astype(np.float64) - mean) * inv_std)
        return lagged(x, lags, -(lags - 1)), z      # activity at t from frames t-lags+1..t

    halves = [ids[0::2], ids[1::2]]
    grams = [np.zeros((d, d)) for _ in halves]
    cross = [np.zeros((d, n)) for _ in halves]
    for h, half in enumerate(halves):
        for tid in half:
            x, z = design(tid)
            grams[h] += x.T @ x
            cross[h] += x.T @ z
    models = []
    for h in range(2):  # fitted on one half, scores the other
        g = grams[1 - h]
        penalty = alpha * float(np.trace(g)) / d
        models.append(np.linalg.solve(g + penalty * np.eye(d), cross[1 - h]))
    del grams, cross
    pz, pp, zz = np.zeros(n), np.zeros(n), np.zeros(n)
    for h, half in enumerate(halves):
        for tid in half:
            x, z = design(tid)
            pred = x @ models[h]
            pz += (pred * z).sum(0)
            pp += (pred * pred).sum(0)
            zz += (z * z).sum(0)
    r = np.clip(pz / np.sqrt(np.maximum(pp * zz, 1e-24)), 0.0, 1.0)
    w = r + floor
    rms = float(np.sqrt(np.mean(w * w)))
    if not rms > 0:  # floor 0 and no neuron follows the movie linearly: as it is
        return NeuronWeights(np.ones(n), r)
    return NeuronWeights(w / rms, r)
