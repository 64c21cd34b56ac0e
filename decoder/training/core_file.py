"""The shared core of several mice, saved for calibrating a new mouse (issue 12, item 4).

``cortexcast train --data A --data B ...`` trains one nonlinear core (every member's ``mix``
and ``out``: a window of per-frame features -> frame-PC coefficients) on every mouse at once,
each mouse with its own front end, ridge branch and per-row readout. This module writes that
core beside the per-mouse models as ``<stem>.core.npz`` and reads it back, so that
``cortexcast train --data NEW --core CORE`` fits only what is the new mouse's own (its front
end, ridge branch and per-row readout) and fine-tunes the core on its calibration session.

The file is a plain ``.npz`` (no pickle): the frame basis the core's outputs live in, every
member's shared weights, and a JSON ``meta`` string with the shapes that must match.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cortexcast.decoder.live.model_card import ModelError

SHARED = ("mix", "out")
"""The member modules shared by every mouse (the rest of a member is per mouse)."""
FORMAT = "cortexcast-core/1"


@dataclass(frozen=True)
class CoreMeta:
    """What a new mouse's model must share with the core to use it."""

    window: int
    lag: int
    members: int
    row_features: int
    hidden: int
    dropout: float
    behavior: bool
    pixels: int
    height: int
    width: int
    mice: tuple[str, ...] = ()
    """The datasets it was trained on (for the card)."""
    validation_scores: tuple[float, ...] = ()
    """Each pretraining mouse's mean member validation r at the saved state."""
    format: str = FORMAT


@dataclass
class Core:
    meta: CoreMeta
    pix_mean: np.ndarray
    """(H*W,) mean frame of the basis the core's outputs are coefficients in."""
    pix_basis: np.ndarray
    """(H*W, P) frame principal components."""
    states: list[dict[str, np.ndarray]]
    """Per member: ``{"mix.1.weight": ..., "out.bias": ...}``."""


def shared_state(member: torch.nn.Module) -> dict[str, np.ndarray]:
    """A member's shared weights as numpy arrays, keyed ``<module>.<parameter>``."""
    out = {}
    for name in SHARED:
        for key, value in getattr(member, name).state_dict().items():
            out[f"{name}.{key}"] = value.detach().cpu().numpy().copy()
    return out


def load_shared(member: torch.nn.Module, state: dict[str, np.ndarray]) -> None:
    """Copy a saved shared state into ``member`` (shapes must match)."""
    for name in SHARED:
        module = getattr(member, name)
        prefix = f"{name}."
        sub = {k[len(prefix):]: torch.as_tensor(v) for k, v in state.items()
               if k.startswith(prefix)}
        try:
            module.load_state_dict(sub)
        except RuntimeError as exc:
            raise ModelError(f"the core's '{name}' does not fit this model: {exc}") from None


def shared_parameters(members: torch.nn.ModuleList) -> list[torch.nn.Parameter]:
    return [p for m in members for name in SHARED for p in getattr(m, name).parameters()]


def save_core(path: Path, core: Core) -> None:
    """Write ``core`` to ``path`` (a ``.npz``), through a temporary file."""
    arrays: dict[str, Any] = {"meta": np.array(json.dumps(asdict(core.meta))),
                              "pix_mean": np.asarray(core.pix_mean, np.float32),
                              "pix_basis": np.asarray(core.pix_basis, np.float32)}
    for i, st in enumerate(core.states):
        for key, value in st.items():
            arrays[f"member{i}/{key}"] = value
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, **arrays)
    tmp.replace(path)


def load_core(path: str | Path) -> Core:
    """Read a core written by :func:`save_core`; ModelError naming what is wrong."""
    p = Path(path)
    if not p.is_file():
        raise ModelError(f"core file {p} does not exist (write one with `cortexcast train "
                         "--data A --data B ...`: <out stem>.core.npz)")
    try:
        with np.load(p, allow_pickle=False) as z:
            meta_raw = json.loads(str(z["meta"]))
            arrays = {k: z[k] for k in z.files if k != "meta"}
    except (OSError, ValueError, KeyError) as exc:
        raise ModelError(f"{p}: not a cortexcast core file ({exc})") from None
    if not isinstance(meta_raw, dict) or meta_raw.get("format") != FORMAT:
        raise ModelError(f"{p}: not a {FORMAT} file (meta {str(meta_raw)[:80]!r})")
    try:
        meta_raw["mice"] = tuple(meta_raw.get("mice", ()))
        meta_raw["validation_scores"] = tuple(meta_raw.get("validation_scores", ()))
        meta = CoreMeta(**meta_raw)
    except TypeError as exc:
        raise ModelError(f"{p}: its meta does not describe a core: {exc}") from None
    states: list[dict[str, np.ndarray]] = [{} for _ in range(meta.members)]
    for key, value in arrays.items():
        if key.startswith("member"):
            idx, _, name = key[len("member"):].partition("/")
            if not idx.isdigit() or int(idx) >= meta.members:
                raise ModelError(f"{p}: unexpected entry {key!r}")
            states[int(idx)][name] = value
    pix = meta.height * meta.width
    for key in ("pix_mean", "pix_basis"):
        if key not in arrays:
            raise ModelError(f"{p}: no {key}")
    if arrays["pix_mean"].shape != (pix,) or arrays["pix_basis"].shape != (pix, meta.pixels):
        raise ModelError(f"{p}: frame basis shapes {arrays['pix_mean'].shape}, "
                         f"{arrays['pix_basis'].shape} do not match {meta.height}x{meta.width} "
                         f"frames and {meta.pixels} components")
    if any(not st for st in states):
        raise ModelError(f"{p}: a member's weights are missing")
    return Core(meta, arrays["pix_mean"], arrays["pix_basis"], states)


def settings_for_core(s, core: Core):
    """``s`` (TrainSettings) with what the core fixes: window, lag, member shapes, frame
    components, behaviour only if the core has it. ModelError if ``s.lag`` disagrees."""
    m = core.meta
    if s.lag is not None and s.lag != m.lag:
        raise ModelError(f"--lag {s.lag}: the core {s.core} was trained at lag {m.lag} "
                         f"(window {m.window}); leave --lag out or pretrain at that lag")
    return dataclasses.replace(s, window=m.window, lag=m.lag, ensemble=m.members,
                               row_features=m.row_features, hidden=m.hidden, dropout=m.dropout,
                               pixels=m.pixels, behavior=s.behavior and m.behavior)


def check_frames(core: Core, frame_shape: tuple[int, int], data: str) -> None:
    """ModelError if a mouse's frames are not the size the core decodes."""
    m = core.meta
    if tuple(frame_shape) != (m.height, m.width):
        raise ModelError(f"{data}: frames are {frame_shape[0]}x{frame_shape[1]}, the core "
                         f"decodes {m.height}x{m.width}")


def check_behavior(core: Core, behavior: bool, data: str) -> None:
    """ModelError if a mouse's behaviour inputs (after preparation) differ from the core's."""
    m = core.meta
    if behavior != m.behavior:
        has = "has them" if behavior else "has none (or not for every trial)"
        raise ModelError(
            f"{data}: the core was pretrained {'with' if m.behavior else 'without'} behaviour "
            f"inputs but this mouse {has}; pretrain and calibrate alike (--no-behavior on "
            "both)")


def start_from_core(model, core: Core, lr: float, lr_scale: float) -> list[dict]:
    """Load the core into every member of ``model``; AdamW parameter groups: the core at
    ``lr x lr_scale`` (left out when 0: frozen), the mouse's own parts at ``lr``."""
    for member, state in zip(model.members, core.states):
        load_shared(member, state)
    shared = shared_parameters(model.members)
    ids = {id(p) for p in shared}
    own = [p for p in model.members.parameters() if id(p) not in ids]
    if lr_scale == 0:
        for p in shared:
            p.requires_grad_(False)
        return [{"params": own, "lr": lr}]
    return [{"params": own, "lr": lr}, {"params": shared, "lr": lr * lr_scale}]
