"""``cortexcast train``: fit a pixel decoder on a Sensorium-layout folder, export ONNX.

``--method ridge`` is :func:`cortexcast.decoder.training.ridge.train_ridge`. ``--method decoder`` (the
default) is the live decoder of :mod:`cortexcast.decoder.training.residual`:

1. open the dataset; training trials = tier ``train`` (``--train-trials``: the first N);
   validation = tier ``oracle`` if it has responses, else a seeded 10 % of the training
   trials; the validation trials are split by clip into an *early-stopping* split and a
   *selection* split (:func:`~cortexcast.decoder.training.common.split_validation`);
   refuse training trials whose responses are all NaN; evaluation mask = the one
   ``evaluate`` would choose;
2. the fixed front end (:mod:`cortexcast.decoder.training.features`): each neuron's
   behavioural gain (pupil, running), z-score with the dataset's statistics, top K
   principal axes;
3. without ``--lag``: window and lag chosen on validation among every lag within
   ``--max-lag-ms`` (:mod:`cortexcast.decoder.training.lag_choice`);
4. the gain correction kept only if the ridge branch with it beats the one without on the
   selection split; every training and validation row goes through the front end once
   (the cache);
5. the ridge branch in closed form on the cached windows, to the top P principal components
   of the frames in *retinal* coordinates; alpha chosen as ``--method ridge`` does, the
   eye-shift gain (pixels per pupil-centre z) on the early-stopping split and kept only if
   it beats gain 0 on the selection split;
6. ``ensemble`` nonlinear members trained at once by AdamW on random frames, each starting
   at zero (= the ridge branch) and early-stopped on the early-stopping split, until the
   time budget runs out; kept only if the ensemble beats the ridge branch on the selection
   split (else the model is the ridge branch);
7. export one ONNX graph (members averaged inside), check onnxruntime against torch on
   held-out windows, write the card (every choice with its candidates' validation scores
   under ``extra.training.choices``), the mask and ``<stem>.norm.npz``.

Several ``--data`` folders: :mod:`cortexcast.decoder.training.multi_mouse` (one model per
mouse and their shared core, ``<stem>.core.npz``). ``--core CORE`` calibrates a new mouse on
such a core: its window, lag, member shapes and frame basis are the core's, the members start
from it (:mod:`cortexcast.decoder.training.core_file`), and step 6 fine-tunes them at
``--core-lr-scale`` x the learning rate for the core. The settings,
result and split live in :mod:`cortexcast.decoder.training.common` (no torch there).
"""

from __future__ import annotations

import time

import torch

from cortexcast.decoder.offline.dataset import SensoriumDataset
from cortexcast.decoder.training.common import TrainResult, TrainSettings
from cortexcast.decoder.training.core_file import (check_behavior, check_frames, load_core,
                                                   settings_for_core)
from cortexcast.decoder.training.device import pick_device
from cortexcast.decoder.training.mouse import fit_and_export, prepare_mouse


def train(s: TrainSettings) -> TrainResult:
    """Fit, export and check one residual decoder; returns where it went and its card."""
    t0 = time.monotonic()
    torch.manual_seed(s.seed)
    device = pick_device(s.device)
    if s.core is None:
        return fit_and_export(prepare_mouse(s.data, s, device), device, t0)
    core = load_core(s.core)
    s = settings_for_core(s, core)
    check_frames(core, SensoriumDataset(s.data).frame_shape, s.data)  # before the basis is used
    mouse = prepare_mouse(s.data, s, device, (core.pix_mean, core.pix_basis))
    check_behavior(core, mouse.behavior, s.data)
    return fit_and_export(mouse, device, t0, core)
