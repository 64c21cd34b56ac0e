"""Writing a mouse folder in the Sensorium 2023 layout (the one :mod:`.dataset` reads).

``cortexcast simulate`` and the test stand-in
(:func:`cortexcast.decoder.training.synthetic.write_synthetic_dataset`) both write through
:class:`SensoriumWriter`, so the file names and array layouts are spelled once beside
their reader: per trial ``data/<variable>/<trial>.npy`` with time last, ``meta/trials``,
``meta/neurons``, ``meta/statistics/<variable>/all/{mean,std}.npy`` and ``eval_mask.npy``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


class SensoriumWriter:
    """Writes one dataset folder; every method writes its files at once."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        for sub in ("videos", "responses", "behavior", "pupil_center"):
            (self.root / "data" / sub).mkdir(parents=True, exist_ok=True)

    def trial(self, tid: int, video: np.ndarray, responses: np.ndarray | None = None,
              behavior: np.ndarray | None = None, pupil_center: np.ndarray | None = None
              ) -> None:
        """One trial: video (H, W, T), responses (N, T), behaviour (2, T) [pupil, running]
        and pupil centre (2, T) [x, y]; None leaves that file out (e.g. withheld responses)."""
        for kind, a in (("videos", video), ("responses", responses), ("behavior", behavior),
                        ("pupil_center", pupil_center)):
            if a is not None:
                np.save(self.root / "data" / kind / f"{tid}.npy", a)

    def trials_meta(self, tiers: np.ndarray, **more: np.ndarray) -> None:
        """``meta/trials/tiers.npy`` (one tier per trial id) and any ``<name>.npy`` in ``more``
        (e.g. ``clip_ids``, ``images``)."""
        d = self.root / "meta" / "trials"
        d.mkdir(parents=True, exist_ok=True)
        np.save(d / "tiers.npy", tiers)
        for name, a in more.items():
            np.save(d / f"{name}.npy", a)

    def neurons(self, unit_ids: np.ndarray, coordinates: np.ndarray | None = None) -> None:
        """``meta/neurons/unit_ids.npy`` and (optional) ``cell_motor_coordinates.npy`` (N, 3)."""
        d = self.root / "meta" / "neurons"
        d.mkdir(parents=True, exist_ok=True)
        np.save(d / "unit_ids.npy", unit_ids)
        if coordinates is not None:
            np.save(d / "cell_motor_coordinates.npy", coordinates)

    def statistics(self, variable: str, mean: np.ndarray | float, std: np.ndarray | float
                   ) -> None:
        """``meta/statistics/<variable>/all/{mean,std}.npy`` as float32."""
        d = self.root / "meta" / "statistics" / variable / "all"
        d.mkdir(parents=True, exist_ok=True)
        np.save(d / "mean.npy", np.asarray(mean, np.float32))
        np.save(d / "std.npy", np.asarray(std, np.float32))

    def eval_mask(self, mask: np.ndarray) -> None:
        """``eval_mask.npy``: bool (H, W)."""
        np.save(self.root / "eval_mask.npy", mask)
