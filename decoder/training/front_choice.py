"""Which front end the decoder reads through: chosen on the selection split (issue 12).

Two choices are made this way, each between two front ends fitted on the training trials:
the behavioural gain correction (kept only where it wins clearly over none) and the neuron
weights (:mod:`~cortexcast.decoder.training.neuron_weights`; the unweighted population is
used only where it wins clearly). The judge is the ridge branch without eye shift on each
front end, its alpha chosen on the early-stopping split, compared trial by trial on the
selection split: a bare "higher" on a few clips kept a gain that cost 0.015 on test.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from cortexcast.decoder.offline.dataset import SensoriumDataset
from cortexcast.decoder.training.common import TrainSettings
from cortexcast.decoder.training.features import FeatureSet, FrontEnd, build_features
from cortexcast.decoder.training.fit import branch_scores, fit_ridge_branch
from cortexcast.decoder.training.ridge_fit import clearly_better

Split = tuple[list[int], list[int], list[int]]
Caches = tuple[FeatureSet, FeatureSet, FeatureSet]
Judged = tuple[Caches, np.ndarray]
"""A front end's feature caches and its ridge branch's per-trial selection scores."""


def feature_sets(ds: SensoriumDataset, s: TrainSettings, front: FrontEnd,
                 split: Split) -> Caches:
    """(training, early-stopping, selection) feature caches; the last two are one object
    when the selection split is the early-stopping split."""
    train_ids, stop_ids, select_ids = split
    train = build_features(ds, train_ids, front, s.window, s.lag)
    val = build_features(ds, stop_ids, front, s.window, s.lag)
    select = (val if select_ids == stop_ids
              else build_features(ds, select_ids, front, s.window, s.lag))
    return train, val, select


def choose_front(ds: SensoriumDataset, s: TrainSettings, variants: Mapping[str, FrontEnd],
                 default: str, split: Split, mask: np.ndarray, pix_mean: np.ndarray,
                 basis: np.ndarray, known: Mapping[str, Judged] | None = None
                 ) -> tuple[str, Judged, dict[str, float]]:
    """The ``default`` variant unless another beats it by two standard errors of the paired
    per-trial difference on the selection split. Returns (name, its feature caches and
    per-trial selection scores, the mean selection score of every variant). ``known``: the
    same for variants already judged (a front end kept by an earlier choice)."""
    names = list(variants)
    judged: dict[str, Judged] = dict(known or {})
    for name in names:
        if name in judged:
            continue
        fr = variants[name]
        caches = feature_sets(ds, s, fr, split)
        train, val, select = caches
        br = fit_ridge_branch(train, val, select, fr, s.window, s.lag, s.alphas,
                              s.default_alpha, (0.0,), mask, ds.frame_shape, pix_mean, basis)
        judged[name] = (caches, np.asarray(branch_scores(br, select, fr, s.window, s.lag, mask,
                                                         ds.frame_shape, pix_mean, basis)))
    won, means = clearly_better(np.array([judged[n][1] for n in names]).T,
                                names.index(default))
    return names[won], judged[names[won]], {n: float(v) for n, v in zip(names, means)}
