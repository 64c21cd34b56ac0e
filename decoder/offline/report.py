"""``cortexcast evaluate --report DIR``: scores, pictures and the neuron-dropping curve.

For every method (an ONNX model run through the live path, or a folder of
reconstructions such as ``reconstruct --method inversion`` writes), on one tier:

* per-clip pixel correlations (:mod:`cortexcast.decoder.live.metric`, the one implementation) and their mean;
* ``strip_<label>.png``: ground truth over reconstruction for the best, median and worst
  clip (pixels outside the evaluation mask dimmed);
* ``corr_map_<label>.png`` / ``.npy``: the per-pixel correlation over time (see
  :func:`pixel_correlation_map`);
* ``neurons.png`` and the JSON's ``neuron_dropping``: the score when only 100/50/25/12.5 %
  of the neurons are kept (random subsets, several draws; the others set to their mean, i.e.
  z-score 0 for the model). Only ONNX models are re-run; a folder of reconstructions is
  fixed, so it has no curve.

* ``trials.png`` and the JSON's ``trial_counts``: for models labelled ``NAME@N`` (e.g.
  ``--model ridge@30=r30.onnx --model ridge@60=r60.onnx``), the score against the training
  trials their cards record, one line per NAME (learning curves; issue 12).

Everything also goes to ``report.json``. Every method is scored with the same mask. No torch.
"""

from __future__ import annotations

import importlib.util
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from scipy.ndimage import gaussian_filter

from cortexcast.decoder.offline.dataset import DatasetError, SensoriumDataset
from cortexcast.decoder.offline.evaluate import choose_mask, load_reconstruction
from cortexcast.decoder.live.model_card import ModelError, load_card
from cortexcast.decoder.live.metric import SIGMA, START, STOP, mean_over_clips, per_clip_correlation
from cortexcast.decoder.offline.streaming import decoder_for_dataset
from cortexcast.decoder.live.pixel_decoder import DEFAULT_PROVIDERS, PixelDecoder
from cortexcast.decoder.offline.reconstruct import iter_reconstructions, missing_responses_message, tier_ids
from cortexcast.decoder.offline.report_images import curve_png, map_png, strip_png
from cortexcast.decoder.offline.session_movie import write_movie

FRACTIONS = (1.0, 0.5, 0.25, 0.125)
DROP_HOW = ("random subsets of neurons kept (one draw at 100 %); each dropped neuron's "
            "responses replaced by its mean (z-score 0 after the model's own normalisation), "
            "so the model sees 'no information' from it rather than silence")
_LABEL = re.compile(r"^[A-Za-z0-9_.+@-]+$")


@dataclass(frozen=True)
class Method:
    label: str
    kind: str
    """'model' (ONNX file) or 'recon' (folder of <trial>.npy)."""
    path: Path


def parse_method(text: str, kind: str) -> Method:
    """``LABEL=PATH`` or ``PATH`` (label: the file stem or folder name)."""
    label, sep, rest = text.partition("=")
    if sep and _LABEL.match(label) and rest:
        path = Path(rest)
    else:
        path = Path(text)
        label = path.stem if kind == "model" else (path.name or str(path))
    return Method(label, kind, path)


def unique_labels(methods: Sequence[Method]) -> list[Method]:
    seen: dict[str, int] = {}
    out = []
    for m in methods:
        n = seen.get(m.label, 0)
        seen[m.label] = n + 1
        out.append(m if n == 0 else Method(f"{m.label}-{n + 1}", m.kind, m.path))
    return out


# ---------------------------------------------------------------- the map
class CorrelationMap:
    """Per-pixel Pearson r between reconstruction and target over time, pooled over clips.

    Uses the metric's own preparation: the reconstruction smoothed by ``SIGMA`` over the whole
    clip, frames ``START..STOP-1``, non-finite pairs left out.
    """

    def __init__(self, shape: tuple[int, int]) -> None:
        self.sums = {k: np.zeros(shape) for k in ("n", "r", "t", "rr", "tt", "rt")}

    def add(self, recon: np.ndarray, target: np.ndarray) -> None:
        r = gaussian_filter(np.asarray(recon, np.float64), sigma=tuple(map(float, SIGMA)))
        r, t = r[START:STOP], np.asarray(target, np.float64)[START:STOP]
        ok = np.isfinite(r) & np.isfinite(t)
        r, t = np.where(ok, r, 0.0), np.where(ok, t, 0.0)
        for key, value in (("n", ok), ("r", r), ("t", t), ("rr", r * r), ("tt", t * t),
                           ("rt", r * t)):
            self.sums[key] += value.sum(0)

    def result(self) -> np.ndarray:
        s = self.sums
        n = np.maximum(s["n"], 1)
        cov = s["rt"] / n - s["r"] * s["t"] / n**2
        vr = s["rr"] / n - (s["r"] / n) ** 2
        vt = s["tt"] / n - (s["t"] / n) ** 2
        den = np.sqrt(np.maximum(vr, 0) * np.maximum(vt, 0))
        with np.errstate(divide="ignore", invalid="ignore"):
            out = np.where((den > 1e-12) & (s["n"] >= 2), cov / den, np.nan)
        return np.clip(out, -1, 1).astype(np.float32)


def pixel_correlation_map(recons: Sequence[np.ndarray], targets: Sequence[np.ndarray]
                          ) -> np.ndarray:
    m = CorrelationMap(np.shape(targets[0])[1:])
    for r, t in zip(recons, targets):
        m.add(r, t)
    return m.result()


# ---------------------------------------------------------------- sources
def _open_model(m: Method, ds: SensoriumDataset, providers: Sequence[str],
                threads: int) -> PixelDecoder:
    return decoder_for_dataset(m.path, ds, providers=providers, threads=threads)


def _reconstructions(m: Method, ds: SensoriumDataset, ids: Sequence[int], tier: str,
                     decoder: PixelDecoder | None,
                     transform: Callable[[np.ndarray], np.ndarray] | None = None):
    if m.kind == "recon":
        for tid in ids:
            yield tid, load_reconstruction(ds, m.path, tid, tier)
    else:
        assert decoder is not None
        yield from iter_reconstructions(ds, decoder, ids, transform)


def neuron_means(ds: SensoriumDataset, model_path: Path) -> tuple[np.ndarray, str]:
    """Per-neuron mean response: the model's training statistics, else the dataset's."""
    from cortexcast.decoder.live.pixel_decoder import load_training_stats

    stats = load_training_stats(model_path)
    if stats is not None and np.size(stats.get("resp_mean", [])) == ds.n_neurons:
        return np.asarray(stats["resp_mean"], np.float32).ravel(), "model .norm.npz resp_mean"
    rs = ds.statistics("responses")
    if np.size(rs.get("mean", [])) == ds.n_neurons:
        return np.asarray(rs["mean"], np.float32).ravel(), "dataset meta/statistics"
    ids = [i for i in ds.trial_ids("train") if ds.trials[i].has_responses][:40]
    if not ids:
        ids = [i for i in ds.trial_ids() if ds.trials[i].has_responses][:40]
    total = np.zeros(ds.n_neurons)
    count = np.zeros(ds.n_neurons)
    for tid in ids:
        r = ds.responses(tid).astype(np.float64)
        ok = np.isfinite(r)
        total += np.where(ok, r, 0).sum(0)
        count += ok.sum(0)
    return (total / np.maximum(count, 1)).astype(np.float32), f"mean of {len(ids)} trials"


def _dropper(keep: np.ndarray, means: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    drop = ~keep

    def transform(resp: np.ndarray) -> np.ndarray:
        out = np.array(resp, np.float32, copy=True)
        out[:, drop] = means[drop]
        return out

    return transform


# ---------------------------------------------------------------- the report
def build_report(data_dir: str | Path, tier: str, methods: Sequence[Method],
                 out_dir: str | Path, *, mask_file: str | Path | None = None,
                 fractions: Sequence[float] = FRACTIONS, draws: int = 3, seed: int = 0,
                 strip_frames: int = 8, providers: Sequence[str] = DEFAULT_PROVIDERS,
                 threads: int = 1, log: Callable[[str], None] = lambda s: None
                 ) -> dict[str, Any]:
    """Write the report files into ``out_dir`` and return what ``report.json`` holds."""
    if not methods:
        raise DatasetError("the report needs at least one --model or --recon")
    if draws < 1 or any(not 0 < f <= 1 for f in fractions):
        raise DatasetError(f"draws must be >= 1 and fractions in (0, 1], got {draws}, "
                           f"{list(fractions)}")
    methods = unique_labels(methods)
    ds = SensoriumDataset(data_dir)
    ids = tier_ids(ds, tier)
    first_model = next((m.path for m in methods if m.kind == "model"), None)
    mask, mask_source = choose_mask(ds, first_model, mask_file)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    why = missing_responses_message(ds, tier)
    report: dict[str, Any] = {
        "data": str(ds.root), "tier": tier, "clips": [int(i) for i in ids],
        "metric": {"name": "pixel_correlation", "sigma": list(SIGMA), "frames": [START, STOP],
                   "implementation": "cortexcast.decoder.live.metric.per_clip_correlation"},
        "mask": {"source": mask_source, "pixels": int(mask.sum()), "shape": list(mask.shape)},
        "methods": {}, "skipped": {},
        "neuron_dropping": {"fractions": list(fractions), "draws": draws, "seed": seed,
                            "how": DROP_HOW, "methods": {}},
    }
    np.save(out / "mask.npy", mask)
    for m in methods:
        if m.kind == "model" and why is not None:
            report["skipped"][m.label] = f"{why}; a model needs responses (use --recon)"
            log(f"{m.label}: skipped: {report['skipped'][m.label]}")
            continue
        decoder = _open_model(m, ds, providers, threads) if m.kind == "model" else None
        cmap = CorrelationMap(ds.frame_shape)
        per_clip: dict[int, float] = {}
        for tid, recon in _reconstructions(m, ds, ids, tier, decoder):
            video = ds.video(tid)
            per_clip[tid] = float(per_clip_correlation(recon, video, mask)[0])
            cmap.add(recon, video)
        corr = cmap.result()
        entry = _method_entry(m, per_clip, corr, mask)
        np.save(out / f"corr_map_{m.label}.npy", corr)
        map_png(corr, mask, out / f"corr_map_{m.label}.png", title=f"{m.label}: per-pixel r")
        entry["images"] = {"strip": f"strip_{m.label}.png",
                           "corr_map": f"corr_map_{m.label}.png",
                           "corr_map_npy": f"corr_map_{m.label}.npy"}
        picks = entry["picks"]
        if picks:
            chosen = {p["trial"] for p in picks.values()}
            recons = dict(_reconstructions(m, ds, sorted(chosen), tier, decoder))
            rows = [(f"{name} clip {p['trial']} r={p['r']:.3f}", ds.video(p["trial"]),
                     recons[p["trial"]]) for name, p in picks.items()]
            strip_png(rows, mask, out / f"strip_{m.label}.png", frames=strip_frames,
                      start=START, stop=STOP)
            entry["images"]["movies"] = _pick_movies(
                m.label, {name: (ds.video(p["trial"]), recons[p["trial"]])
                          for name, p in picks.items()}, out)
        report["methods"][m.label] = entry
        log(f"{m.label}: mean pixel correlation {entry['mean']} over "
            f"{entry['clips_scored']} clips")
        if decoder is not None:
            report["neuron_dropping"]["methods"][m.label] = _drop_curve(
                ds, decoder, m, ids, mask, fractions, draws, seed, entry["mean"], log)
    for m in methods:
        if m.kind == "recon":
            report["neuron_dropping"]["methods"].setdefault(m.label, {
                "not_computed": "a folder of reconstructions is fixed; rerun `cortexcast "
                                "reconstruct` per subset to get its curve"})
    curves = {k: v["points"] for k, v in report["neuron_dropping"]["methods"].items()
              if "points" in v}
    if curves:
        curve_png(curves, out / "neurons.png", neurons=ds.n_neurons)
        report["neuron_dropping"]["image"] = "neurons.png"
    trials = trial_curves(methods, report["methods"])
    if trials:
        top = max(p["trials"] for pts in trials.values() for p in pts)
        curve_png(trials, out / "trials.png", neurons=top,
                  title="pixel correlation vs training trials",
                  x_label="training trials (from each model's card)")
        report["trial_counts"] = {"curves": trials, "image": "trials.png"}
    (out / "report.json").write_text(json.dumps(report, indent=2, allow_nan=False) + "\n")
    return report


def trial_curves(methods: Sequence[Method], entries: dict[str, dict[str, Any]]
                 ) -> dict[str, list[dict[str, Any]]]:
    """Per NAME of the models labelled ``NAME@N``, the score at each training-trial count its
    cards record (``data_used.train_trials``); only names with two counts or more."""
    groups: dict[str, dict[int, float]] = {}
    for m in methods:
        if m.kind != "model" or "@" not in m.label or m.label not in entries:
            continue
        try:
            n = load_card(m.path).data_used.get("train_trials")
        except (ModelError, OSError):
            n = None
        if isinstance(n, int) and entries[m.label]["mean"] is not None:
            groups.setdefault(m.label.split("@")[0], {})[n] = entries[m.label]["mean"]
    groups = {k: v for k, v in groups.items() if len(v) > 1}
    if not groups:
        return {}
    top = max(n for v in groups.values() for n in v)
    return {name: [{"fraction": n / top, "trials": n, "mean": r, "std": 0.0}
                   for n, r in sorted(v.items())] for name, v in groups.items()}


def _pick_movies(label: str, clips: dict[str, tuple[np.ndarray, np.ndarray]],
                 out: Path) -> dict[str, list[str]]:
    """Stimulus | reconstruction movies of the best, median and worst clip: a GIF each, and
    an MP4 where imageio-ffmpeg is installed. Returns pick -> file names."""
    formats = [".gif"] + ([".mp4"] if importlib.util.find_spec("imageio_ffmpeg") else [])
    written: dict[str, list[str]] = {}
    for name, (video, recon) in clips.items():
        written[name] = []
        for suffix in formats:
            path = out / f"movie_{label}_{name}{suffix}"
            write_movie(path, video, recon, fps=30.0)
            written[name].append(path.name)
    return written


def _num(x: float) -> float | None:
    return round(float(x), 6) if math.isfinite(x) else None


def _method_entry(m: Method, per_clip: dict[int, float], corr: np.ndarray,
                  mask: np.ndarray) -> dict[str, Any]:
    scored = sorted(((r, t) for t, r in per_clip.items() if math.isfinite(r)),
                    key=lambda x: (x[0], x[1]))
    picks: dict[str, dict[str, Any]] = {}
    if scored:
        for name, (r, t) in (("best", scored[-1]), ("median", scored[len(scored) // 2]),
                             ("worst", scored[0])):
            picks[name] = {"trial": int(t), "r": round(r, 6)}
    inside = corr[mask & np.isfinite(corr)]
    return {"kind": m.kind, "path": str(m.path),
            "per_clip": {str(t): _num(r) for t, r in per_clip.items()},
            "mean": _num(mean_over_clips(list(per_clip.values()))),
            "clips": len(per_clip), "clips_scored": len(scored), "picks": picks,
            "corr_map": {"mean_in_mask": _num(float(inside.mean())) if inside.size else None,
                         "max_in_mask": _num(float(inside.max())) if inside.size else None}}


def _drop_curve(ds: SensoriumDataset, decoder: PixelDecoder, m: Method, ids: Sequence[int],
                mask: np.ndarray, fractions: Sequence[float], draws: int, seed: int,
                full_score: float | None, log: Callable[[str], None]) -> dict[str, Any]:
    means, means_from = neuron_means(ds, m.path)
    rng = np.random.default_rng(seed)
    n = ds.n_neurons
    points = []
    for frac in fractions:
        k = max(1, int(round(frac * n)))
        scores = []
        for _ in range(1 if k == n else draws):
            if k == n and full_score is not None:
                scores.append(full_score)
                continue
            keep = np.zeros(n, bool)
            keep[rng.choice(n, size=k, replace=False)] = True
            per = [float(per_clip_correlation(r, ds.video(t), mask)[0])
                   for t, r in iter_reconstructions(ds, decoder, ids, _dropper(keep, means))]
            scores.append(mean_over_clips(per))
        finite = [s for s in scores if s is not None and math.isfinite(s)]
        points.append({"fraction": frac, "neurons": k, "draws": [_num(s) for s in scores],
                       "mean": _num(float(np.mean(finite))) if finite else None,
                       "std": _num(float(np.std(finite))) if finite else None})
        log(f"{m.label}: {k} neurons ({frac:.1%}): {points[-1]['mean']}")
    return {"means_from": means_from, "points": points}


def summary_lines(report: dict[str, Any]) -> list[str]:
    lines = [f"{report['data']} tier {report['tier']}: {len(report['clips'])} clips, mask "
             f"{report['mask']['pixels']} px ({report['mask']['source']})"]
    for label, e in report["methods"].items():
        lines.append(f"  {label:<16} mean r = {e['mean']}  ({e['clips_scored']} clips; best "
                     f"{e['picks'].get('best', {}).get('r')}, worst "
                     f"{e['picks'].get('worst', {}).get('r')})")
    for label, why in report["skipped"].items():
        lines.append(f"  {label:<16} skipped: {why}")
    for label, d in report["neuron_dropping"]["methods"].items():
        if "points" in d:
            pts = ", ".join(f"{p['fraction']:.3g}: {p['mean']}" for p in d["points"])
            lines.append(f"  {label:<16} neurons kept -> r: {pts}")
    return lines
