"""Activity vectors in, 36x64 reconstructions out, through onnxruntime.

:class:`PixelDecoder` is the one code path from activity to pixels: the live
decoder process calls :meth:`PixelDecoder.push` once per imaging frame, and
``cortexcast reconstruct`` streams recorded trials through the same method, so
offline scores describe the live output. No torch here.

Timing: after the k-th push (k = 0, 1, ...) the window holds activity frames
``k - W + 1 .. k`` (frames before the first push are zeros) and the output is
the reconstruction of stimulus frame ``k - lag``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from decoder.model_card import ModelCard, ModelError, load_card, load_mask

DEFAULT_PROVIDERS = ("CPUExecutionProvider",)


class PixelDecoder:
    """A causal window of activity -> one frame, with a preallocated ring buffer."""

    def __init__(self, model_path: str | Path,
                 providers: Sequence[str] = DEFAULT_PROVIDERS, threads: int = 1) -> None:
        import onnxruntime as ort

        self.model_path = Path(model_path)
        self.card: ModelCard = load_card(self.model_path)
        available = ort.get_available_providers()
        unknown = [p for p in providers if p not in available]
        if unknown or not providers:
            raise ModelError(
                f"onnxruntime provider(s) {unknown or '(none given)'} not available here; "
                f"available: {', '.join(available)}"
            )
        if threads < 1:
            raise ModelError(f"threads must be >= 1, got {threads}")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(self.model_path), sess_options=opts,
                                                providers=list(providers))
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise ModelError(f"{self.model_path}: onnxruntime cannot load it: {exc}") from exc
        self._check_graph()
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

    def _check_graph(self) -> None:
        c = self.card
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1 or inputs[0].name != c.input_name:
            raise ModelError(f"{self.model_path}: expected one input named {c.input_name!r}, "
                             f"found {[i.name for i in inputs]}")
        if not any(o.name == c.output_name for o in outputs):
            raise ModelError(f"{self.model_path}: no output named {c.output_name!r} "
                             f"(found {[o.name for o in outputs]})")
        out = next(o for o in outputs if o.name == c.output_name)
        for what, got, want in (("input", inputs[0].shape, c.input_shape),
                                ("output", out.shape, c.output_shape)):
            fixed = [d if isinstance(d, int) else None for d in got]
            if len(fixed) != len(want) or any(g is not None and g != w
                                              for g, w in zip(fixed, want)):
                raise ModelError(f"{self.model_path}: {what} shape {got} does not match the "
                                 f"card's {list(want)}")

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

    def mask(self) -> np.ndarray | None:
        """The evaluation mask stored with the model (None if it has none)."""
        return load_mask(self.model_path, self.frame_shape)

    def reset(self) -> None:
        """Forget the window (e.g. between recorded trials); counters are kept."""
        self._ring.fill(0.0)
        self._pos = self.window - 1

    def push(self, activity: np.ndarray) -> np.ndarray:
        """Add one activity vector (N,); return the frame ``lag`` pushes ago, (H, W) float32."""
        a = np.asarray(activity)
        if a.shape != (self.neurons,):
            size = a.shape[0] if a.ndim == 1 else f"shape {a.shape}"
            raise ModelError(f"activity has {size} values but the model expects "
                             f"{self.neurons} neurons")
        w = self.window
        self._pos = (self._pos + 1) % w
        row = self._ring[self._pos]
        np.copyto(row, a, casting="unsafe")
        np.isfinite(row, out=self._ok)
        if not self._ok.all():
            bad = self._ok.size - int(np.count_nonzero(self._ok))
            self.nan_count += bad
            self.nan_frames += 1
            np.logical_not(self._ok, out=self._ok)
            row[self._ok] = 0.0
        self._ring[self._pos + w] = row
        window = self._ring[self._pos + 1: self._pos + 1 + w][None]
        out = self.session.run([self.card.output_name], {self.card.input_name: window})[0]
        self.frames_pushed += 1
        return out.reshape(self.frame_shape)

    def decode_window(self, window: np.ndarray) -> np.ndarray:
        """One frame from an explicit (W, N) window, oldest row first (no state)."""
        x = np.ascontiguousarray(window, dtype=np.float32)
        if x.shape != (self.window, self.neurons):
            raise ModelError(f"window is {x.shape}, the model expects "
                             f"({self.window}, {self.neurons})")
        x = np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)
        out = self.session.run([self.card.output_name], {self.card.input_name: x[None]})[0]
        return out.reshape(self.frame_shape)
