"""Real Sensorium 2023 metadata the simulator builds its animals from.

``daq/data/sensorium_meta.npz`` holds, for each mouse X in A..J (public
Sensorium 2023 data, as published with ViV1T):

* ``coords_X``         int16 (N, 3)  cortical x, y, z of every neuron (µm);
* ``resp_mean_X``      float32 (N,)  mean deconvolved response of each neuron;
* ``resp_std_X``       float32 (N,)  its standard deviation;
* ``behavior_mean_X``  float32 (2,)  pupil dilation, running speed (cm/s); ``behavior_std_X``;
* ``pupil_mean_X``     float32 (2,)  pupil centre x, y; ``pupil_std_X``;
* ``video_mean_X``, ``video_std_X``  float32 scalars, 0..255 scale.

Rebuild it from ``../shared`` with ``python -m cortexcast.daq.sim.meta SHARED_DIR``.
"""

from __future__ import annotations

import functools
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cortexcast.daq.sim.settings import MICE

META_PATH = Path(__file__).resolve().parent.parent / "data" / "sensorium_meta.npz"


@dataclass(frozen=True)
class MouseMeta:
    mouse: str
    coords: np.ndarray  # (N, 3) float64 µm
    resp_mean: np.ndarray  # (N,)
    resp_std: np.ndarray  # (N,)
    behavior_mean: np.ndarray  # (2,) pupil dilation, running speed
    behavior_std: np.ndarray
    pupil_mean: np.ndarray  # (2,) x, y
    pupil_std: np.ndarray
    video_mean: float
    video_std: float


@functools.lru_cache(maxsize=16)
def load_mouse(mouse: str, path: str | None = None) -> MouseMeta:
    """The packaged metadata of one mouse (cached; arrays are read-only)."""
    if mouse not in MICE:
        raise ValueError(f"mouse must be one of {', '.join(MICE)}, got {mouse!r}")
    p = Path(path) if path else META_PATH
    if not p.is_file():
        raise FileNotFoundError(
            f"{p} is missing: the package was installed without its data; rebuild it with "
            "python -m cortexcast.daq.sim.meta ../shared"
        )
    with np.load(p, allow_pickle=False) as z:
        arrays = {k: np.array(z[f"{k}_{mouse}"]) for k in (
            "coords", "resp_mean", "resp_std", "behavior_mean", "behavior_std",
            "pupil_mean", "pupil_std", "video_mean", "video_std")}
    for a in arrays.values():
        a.setflags(write=False)
    return MouseMeta(
        mouse=mouse, coords=arrays["coords"].astype(np.float64),
        resp_mean=arrays["resp_mean"].astype(np.float64),
        resp_std=arrays["resp_std"].astype(np.float64),
        behavior_mean=arrays["behavior_mean"].astype(np.float64),
        behavior_std=arrays["behavior_std"].astype(np.float64),
        pupil_mean=arrays["pupil_mean"].astype(np.float64),
        pupil_std=arrays["pupil_std"].astype(np.float64),
        video_mean=float(arrays["video_mean"]), video_std=float(arrays["video_std"]),
    )


def build_meta(shared: str | Path, out: str | Path = META_PATH) -> Path:
    """Copy what the simulator uses from ``shared/data/sensorium2023`` into ``out``."""
    root = Path(shared) / "data" / "sensorium2023"
    if not root.is_dir():
        raise FileNotFoundError(f"{root} does not exist")
    arrays: dict[str, np.ndarray] = {}
    for m in MICE:
        coords = np.load(root / "neuron_coordinates" / f"mouse{m}.npy")
        if np.abs(coords).max() > np.iinfo(np.int16).max:
            raise ValueError(f"mouse {m}: coordinates do not fit int16")
        arrays[f"coords_{m}"] = coords.astype(np.int16)
        stats = root / "statistics" / f"mouse{m}"
        for var, key in (("response", "resp"), ("behavior", "behavior"),
                         ("pupil_center", "pupil"), ("video", "video")):
            for s in ("mean", "std"):
                arrays[f"{key}_{s}_{m}"] = np.load(stats / var / f"{s}.npy").astype(np.float32)
        if arrays[f"resp_mean_{m}"].shape[0] != coords.shape[0]:
            raise ValueError(f"mouse {m}: response statistics and coordinates disagree on N")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, **arrays)
    return out


if __name__ == "__main__":  # pragma: no cover
    target = build_meta(sys.argv[1] if len(sys.argv) > 1 else "../shared")
    print(f"wrote {target} ({target.stat().st_size / 1e6:.2f} MB)")
