"""Activity vectors in, 36x64 reconstructions out, through onnxruntime.

:class:`PixelDecoder` is the one code path from activity to pixels: the live
decoder process calls :meth:`PixelDecoder.push` once per stimulus frame, and
``cortexcast reconstruct`` streams recorded trials through the same method
(:func:`stream_trial`), so offline scores describe the live output. No torch here.

Timing: after the k-th push (k = 0, 1, ...) the window holds activity frames
``k - W + 1 .. k`` (frames before the first push are zeros) and the output is
the reconstruction of stimulus frame ``k - lag``.

Optional inputs:

* ``behavior`` (1, W, 4): raw pupil dilation, running speed, pupil x, pupil y,
  one row per activity row. A missing value is fed as the card's
  ``extra["behavior_mean"]`` (logged once). Models without this input ignore it.
* Re-standardisation: ``session_stats=(mean, std)`` maps each activity vector
  from this session's scale onto the scale the model was trained on
  (``<stem>.norm.npz``: ``resp_mean``, ``resp_std``), so a model trained on one
  session's scale decodes another's.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from cortexcast.core.behavior import BEHAVIOR_KEYS
from cortexcast.decoder.live.model_card import ModelCard, ModelError, load_card, load_mask
from cortexcast.decoder.live.onnx_providers import (
    CUDA, available_providers, missing_provider_message, report_session,
)

DEFAULT_PROVIDERS = ("CPUExecutionProvider",)
BEHAVIOR_INPUT = "behavior"

log = logging.getLogger("decoder")


def norm_path(model_path: str | Path) -> Path:
    """``<stem>.norm.npz`` beside the model: the statistics it was trained with."""
    return Path(model_path).with_suffix(".norm.npz")


def save_training_stats(model_path: str | Path, resp_mean: np.ndarray, resp_std: np.ndarray,
                        behavior_mean: np.ndarray | None = None,
                        behavior_std: np.ndarray | None = None) -> Path:
    """Write ``<stem>.norm.npz`` (float32 arrays; the behaviour ones only when given): the
    statistics the model was trained with, which :func:`load_training_stats` reads back."""
    arrays = {"resp_mean": resp_mean, "resp_std": resp_std}
    if behavior_mean is not None:
        arrays["behavior_mean"] = behavior_mean
    if behavior_std is not None:
        arrays["behavior_std"] = behavior_std
    p = norm_path(model_path)
    np.savez(p, **{k: np.asarray(v, np.float32).ravel() for k, v in arrays.items()})
    return p


def load_training_stats(model_path: str | Path) -> dict[str, np.ndarray] | None:
    """The arrays of ``<stem>.norm.npz`` (resp_mean, resp_std, ...), or None if absent."""
    p = norm_path(model_path)
    if not p.is_file():
        return None
    try:
        with np.load(p, allow_pickle=False) as z:
            return {k: np.asarray(z[k], np.float64) for k in z.files}
    except (ValueError, OSError) as exc:
        raise ModelError(f"{p}: cannot read the training statistics: {exc}") from exc


class PixelDecoder:
    """A causal window of activity (and behaviour) -> one frame, with preallocated ring buffers."""

    def __init__(self, model_path: str | Path,
                 providers: Sequence[str] = DEFAULT_PROVIDERS, threads: int = 1,
                 session_stats: tuple[np.ndarray, np.ndarray] | None = None) -> None:
        import onnxruntime as ort

        self.model_path = Path(model_path)
        self.card: ModelCard = load_card(self.model_path)
        available = available_providers(preload=CUDA in providers)
        unknown = [p for p in providers if p not in available]
        if unknown or not providers:
            raise ModelError(missing_provider_message(unknown, available))
        if threads < 1:
            raise ModelError(f"threads must be >= 1, got {threads}")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        # Worker threads sleep between frames instead of spinning: a frame comes every
        # 33 ms, and spinning threads on a 2-core rig PC steal the core the daq needs
        # (measured: per-frame p99 5.9 ms spinning vs 1.1 ms not, 2 threads, 7,800 neurons).
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(self.model_path), sess_options=opts,
                                                providers=list(providers))
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise ModelError(f"{self.model_path}: onnxruntime cannot load it: {exc}") from exc
        self.providers = report_session(self.session, providers, self.model_path.name)
        self.has_behavior = self._check_graph()
        c = self.card
        # Each row is written twice (at i and i + W) so rows i+1 .. i+W are always
        # the window, oldest first, as one contiguous view: no copy per push.
        self._ring = np.zeros((2 * c.window, c.neurons), dtype=np.float32)
        self._ok = np.empty(c.neurons, dtype=bool)
        self._pos = c.window - 1
        self.frames_pushed = 0
        self.nan_count = 0
        """Activity values that were NaN or infinite (fed as 0)."""
        self.nan_frames = 0
        """Pushes that had at least one such value."""
        self.behavior_keys: tuple[str, ...] = ()
        self.behavior_mean: np.ndarray | None = None
        self.behavior_filled = 0
        """Behaviour values that were missing or not finite (fed as the card's mean)."""
        self._beh_ring: np.ndarray | None = None
        if self.has_behavior:
            self.behavior_keys = tuple(c.extra.get("behavior_inputs") or BEHAVIOR_KEYS)
            self.behavior_mean = self._behavior_mean()
            self._beh_ring = np.zeros((2 * c.window, len(self.behavior_keys)), np.float32)
            self._beh_ok = np.empty(len(self.behavior_keys), dtype=bool)
        self._scale: np.ndarray | None = None
        self._offset: np.ndarray | None = None
        if session_stats is not None:
            self._set_session_stats(*session_stats)
        self._inputs: dict[str, np.ndarray] = {}

    # ------------------------------------------------------------------ checks
    def _check_graph(self) -> bool:
        """Validate inputs/outputs against the card; True if the graph takes behaviour."""
        c = self.card
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        names = [i.name for i in inputs]
        allowed = ([c.input_name], [c.input_name, BEHAVIOR_INPUT], [BEHAVIOR_INPUT, c.input_name])
        if names not in allowed:
            raise ModelError(f"{self.model_path}: expected one input named {c.input_name!r} "
                             f"(and optionally {BEHAVIOR_INPUT!r}), found {names}")
        if not any(o.name == c.output_name for o in outputs):
            raise ModelError(f"{self.model_path}: no output named {c.output_name!r} "
                             f"(found {[o.name for o in outputs]})")
        out = next(o for o in outputs if o.name == c.output_name)
        act = next(i for i in inputs if i.name == c.input_name)
        checks = [("input", act.shape, c.input_shape), ("output", out.shape, c.output_shape)]
        beh = next((i for i in inputs if i.name == BEHAVIOR_INPUT), None)
        if beh is not None:
            n_beh = len(c.extra.get("behavior_inputs") or BEHAVIOR_KEYS)
            checks.append((f"{BEHAVIOR_INPUT!r} input", beh.shape, (1, c.window, n_beh)))
        for what, got, want in checks:
            fixed = [d if isinstance(d, int) else None for d in got]
            if len(fixed) != len(want) or any(g is not None and g != w
                                              for g, w in zip(fixed, want)):
                raise ModelError(f"{self.model_path}: {what} shape {got} does not match the "
                                 f"card's {list(want)}")
        return beh is not None

    def _behavior_mean(self) -> np.ndarray:
        n = len(self.behavior_keys)
        mean: Any = self.card.extra.get("behavior_mean")
        where = "its card's extra['behavior_mean']"
        if mean is None:
            stats = load_training_stats(self.model_path)
            mean = None if stats is None else stats.get("behavior_mean")
            where = f"{norm_path(self.model_path).name} behavior_mean"
        if mean is None:
            raise ModelError(f"{self.model_path}: the model takes {BEHAVIOR_INPUT!r} but neither "
                             "its card's extra['behavior_mean'] nor a .norm.npz says what to "
                             "feed when behaviour is missing")
        m = np.asarray(mean, dtype=np.float64).ravel()
        if m.shape != (n,) or not np.isfinite(m).all():
            raise ModelError(f"{self.model_path}: {where} must be {n} finite numbers, got {mean!r}")
        return m.astype(np.float32)

    def _set_session_stats(self, mean: np.ndarray, std: np.ndarray) -> None:
        n = self.neurons
        mean = np.asarray(mean, np.float64).ravel()
        std = np.asarray(std, np.float64).ravel()
        if mean.shape != (n,) or std.shape != (n,):
            raise ModelError(f"session statistics have {mean.size} means and {std.size} stds but "
                             f"the model expects {n} neurons")
        train = load_training_stats(self.model_path)
        if train is None or "resp_mean" not in train or "resp_std" not in train:
            raise ModelError(f"{self.model_path}: cannot re-standardise this session: no "
                             f"{norm_path(self.model_path).name} with resp_mean and resp_std "
                             "(the statistics the model was trained with) beside it")
        t_mean, t_std = train["resp_mean"].ravel(), train["resp_std"].ravel()
        if t_mean.shape != (n,) or t_std.shape != (n,):
            raise ModelError(f"{norm_path(self.model_path)}: resp_mean/resp_std have "
                             f"{t_mean.size}/{t_std.size} values, the model expects {n}")
        mean, std = np.nan_to_num(mean), np.nan_to_num(std)
        ok = std > 1e-12  # a silent neuron this session sits at the training mean
        scale = np.where(ok, t_std / np.where(ok, std, 1.0), 0.0)
        offset = t_mean - mean * scale
        if np.allclose(scale, 1.0, rtol=0, atol=1e-7) and np.allclose(offset, 0.0, atol=1e-7):
            return  # same scale: leave the activity untouched (bit-identical output)
        self._scale = scale.astype(np.float32)
        self._offset = offset.astype(np.float32)

    # -------------------------------------------------------------- properties
    @property
    def neurons(self) -> int:
        return self.card.neurons

    @property
    def window(self) -> int:
        return self.card.window

    @property
    def lag(self) -> int:
        return self.card.lag

    @property
    def frame_shape(self) -> tuple[int, int]:
        return (self.card.height, self.card.width)

    @property
    def restandardising(self) -> bool:
        """True when activity is mapped from the session's scale onto the model's."""
        return self._scale is not None

    def mask(self) -> np.ndarray | None:
        """The evaluation mask stored with the model (None if it has none)."""
        return load_mask(self.model_path, self.frame_shape)

    def reset(self) -> None:
        """Forget the window (e.g. between recorded trials); counters are kept."""
        self._ring.fill(0.0)
        if self._beh_ring is not None:
            self._beh_ring.fill(0.0)
        self._pos = self.window - 1

    def behavior_vector(self, values: Mapping[str, Any] | None) -> np.ndarray | None:
        """A `sync` message's behaviour dict -> the model's behaviour vector (NaN where absent).

        None when the model takes no behaviour or ``values`` is empty.
        """
        if not self.has_behavior or not values:
            return None
        out = np.full(len(self.behavior_keys), np.nan, np.float32)
        for i, key in enumerate(self.behavior_keys):
            v = values.get(key)
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                out[i] = v
        return out

    # --------------------------------------------------------------- decoding
    def push(self, activity: np.ndarray, behavior: np.ndarray | None = None) -> np.ndarray:
        """Add one activity vector (N,) (and behaviour (4,), if the model takes it);
        return the frame ``lag`` pushes ago, (H, W) float32.

        Behaviour None, or NaN entries, are fed as the card's behaviour mean
        (the first time is logged); models without a behaviour input ignore it.
        """
        a = np.asarray(activity)
        if a.shape != (self.neurons,):
            size = a.shape[0] if a.ndim == 1 else f"shape {a.shape}"
            raise ModelError(f"activity has {size} values but the model expects "
                             f"{self.neurons} neurons")
        self._advance()
        row = self._ring[self._pos]
        np.copyto(row, a, casting="unsafe")
        if self._scale is not None:
            row *= self._scale
            row += self._offset
        np.isfinite(row, out=self._ok)
        if not self._ok.all():
            bad = self._ok.size - int(np.count_nonzero(self._ok))
            self.nan_count += bad
            self.nan_frames += 1
            np.logical_not(self._ok, out=self._ok)
            row[self._ok] = 0.0
        self._ring[self._pos + self.window] = row
        if self._beh_ring is not None:
            self._write_behavior(behavior)
        return self._run()

    def push_padding(self) -> np.ndarray:
        """Push a row of zeros for every input (the padding training saw before and after a
        trial), bypassing re-standardisation and behaviour filling; return the frame."""
        self._advance()
        w = self.window
        self._ring[self._pos] = 0.0
        self._ring[self._pos + w] = 0.0
        if self._beh_ring is not None:
            self._beh_ring[self._pos] = 0.0
            self._beh_ring[self._pos + w] = 0.0
        return self._run()

    def _advance(self) -> None:
        self._pos = (self._pos + 1) % self.window

    def _write_behavior(self, behavior: np.ndarray | None) -> None:
        assert self._beh_ring is not None and self.behavior_mean is not None
        row = self._beh_ring[self._pos]
        n = row.size
        if behavior is None:
            if self.behavior_filled == 0:
                log.warning("%s: no behaviour given; feeding the training mean %s (logged once)",
                            self.model_path.name, np.round(self.behavior_mean, 3).tolist())
            row[:] = self.behavior_mean
            self.behavior_filled += n
        else:
            b = np.asarray(behavior)
            if b.shape != (n,):
                raise ModelError(f"behaviour has shape {b.shape} but the model expects {n} "
                                 f"values ({', '.join(self.behavior_keys)})")
            np.copyto(row, b, casting="unsafe")
            np.isfinite(row, out=self._beh_ok)
            if not self._beh_ok.all():
                if self.behavior_filled == 0:
                    log.warning("%s: behaviour value(s) missing; feeding the training mean "
                                "(logged once)", self.model_path.name)
                np.logical_not(self._beh_ok, out=self._beh_ok)
                row[self._beh_ok] = self.behavior_mean[self._beh_ok]
                self.behavior_filled += int(np.count_nonzero(self._beh_ok))
        self._beh_ring[self._pos + self.window] = row

    def _run(self) -> np.ndarray:
        w, p = self.window, self._pos
        feed = self._inputs
        feed[self.card.input_name] = self._ring[p + 1: p + 1 + w][None]
        if self._beh_ring is not None:
            feed[BEHAVIOR_INPUT] = self._beh_ring[p + 1: p + 1 + w][None]
        out = self.session.run([self.card.output_name], feed)[0]
        self.frames_pushed += 1
        return out.reshape(self.frame_shape)

    def decode_window(self, window: np.ndarray, behavior: np.ndarray | None = None) -> np.ndarray:
        """One frame from an explicit (W, N) window (and (W, 4) behaviour), oldest row first.

        No state and no re-standardisation: the window is fed as given (NaN -> 0;
        missing behaviour -> the card's mean).
        """
        x = np.ascontiguousarray(window, dtype=np.float32)
        if x.shape != (self.window, self.neurons):
            raise ModelError(f"window is {x.shape}, the model expects "
                             f"({self.window}, {self.neurons})")
        x = np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)
        feed = {self.card.input_name: x[None]}
        if self.has_behavior:
            assert self.behavior_mean is not None
            shape = (self.window, len(self.behavior_keys))
            b = (np.broadcast_to(self.behavior_mean, shape) if behavior is None
                 else np.asarray(behavior, np.float32))
            if b.shape != shape:
                raise ModelError(f"behaviour window is {b.shape}, the model expects {shape}")
            b = np.where(np.isfinite(b), b, self.behavior_mean[None]).astype(np.float32)
            feed[BEHAVIOR_INPUT] = b[None]
        out = self.session.run([self.card.output_name], feed)[0]
        return out.reshape(self.frame_shape)
