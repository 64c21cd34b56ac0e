"""Decoding recorded trials through the live path: the helpers ``reconstruct``,
``evaluate`` and the benchmarks share.

:func:`stream_trial` feeds a trial to :meth:`PixelDecoder.push` one row at a
time exactly as the live decoder does, then flushes with the zero padding rows
training used, so offline scores describe the live output.
:func:`decoder_for_dataset` re-standardises a session's responses onto the
model's training scale (its ``<stem>.norm.npz``) using the session's own
statistics. No torch here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from cortexcast.decoder.live.model_card import ModelError, load_card
from cortexcast.decoder.live.pixel_decoder import DEFAULT_PROVIDERS, PixelDecoder, load_training_stats
from cortexcast.decoder.live.session_stats import folder_session_stats, read_session_stats

__all__ = ["dataset_session_stats", "decoder_for_dataset", "read_session_stats", "stream_trial"]


def stream_trial(decoder: PixelDecoder, responses: np.ndarray,
                 behavior: np.ndarray | None = None) -> np.ndarray:
    """(T, N) responses (and (T, 4) behaviour) -> (T, H, W) float32 reconstructions of
    stimulus frames 0..T-1, through :meth:`PixelDecoder.push` exactly as live.

    Resets the decoder first; push k returns frame ``k - lag``, so the first
    ``lag`` outputs are dropped and ``lag`` padding rows (zeros, as in training)
    flush out the trial's last frames.
    """
    t_len = responses.shape[0]
    if behavior is not None and behavior.shape[0] != t_len:
        raise ModelError(f"behaviour has {behavior.shape[0]} rows but responses have {t_len}")
    lag = decoder.lag
    out = np.empty((t_len, *decoder.frame_shape), dtype=np.float32)
    decoder.reset()
    for k in range(t_len + lag):
        if k < t_len:
            frame = decoder.push(responses[k], None if behavior is None else behavior[k])
        else:
            frame = decoder.push_padding()
        if k >= lag:
            out[k - lag] = frame
    return out


def dataset_session_stats(ds: Any) -> tuple[np.ndarray, np.ndarray]:
    """Per-neuron response (mean, std) of a dataset: its ``meta/statistics`` when present
    and the right size, else one streaming pass over the trials of the tiers that have
    responses (:func:`cortexcast.decoder.live.session_stats.folder_session_stats`, which the
    live decoder's ``session_stats`` setting also reads)."""
    return folder_session_stats(ds.root, ds.n_neurons)


def decoder_for_dataset(model_path: str | Path, ds: Any, *,
                        providers: Sequence[str] = DEFAULT_PROVIDERS, threads: int = 1,
                        restandardise: bool = True) -> PixelDecoder:
    """A :class:`PixelDecoder` for decoding dataset ``ds``.

    When the model has ``<stem>.norm.npz`` (and ``restandardise``), the
    dataset's own response statistics map its activity onto the model's
    training scale; on the training session itself this is the identity.
    Models without the file are used as they are.
    """
    stats = None
    if restandardise and load_training_stats(model_path) is not None:
        card = load_card(model_path)
        if card.neurons == ds.n_neurons:  # a mismatch is reported by the caller's own check
            stats = dataset_session_stats(ds)
    return PixelDecoder(model_path, providers=providers, threads=threads, session_stats=stats)
