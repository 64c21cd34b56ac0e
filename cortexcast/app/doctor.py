"""`cortexcast doctor [CONFIG]`: check a rig before a session, calmly.

Each check prints OK, WARN or FAIL with what is wrong and how to fix it:
the config validates; NI devices (and the ones the config names); serial
ports (and the configured ones); frames from the configured ScanImage
endpoint (size, numbers); the ROI file against the frame size; the model
run on one window (and timed); the ROI set against the one the model was
trained on (its card's fingerprint); the closed-loop rules and outputs. Exit 0
when nothing FAILs, 1 otherwise. Missing hardware or drivers are reported,
never raised: on a machine with no rig every hardware check says "not
found" and how to fix it.

Vendor packages and other helpers' modules (nidaqmx, pyserial,
cortexcast.daq.scanimage, cortexcast.decoder.live.roi_loaders) are imported lazily, so the doctor
runs wherever the rest of cortexcast does.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

import numpy as np

from cortexcast.app.behavior_check import check_behavior
from cortexcast.app.onnx_check import check_onnxruntime
from cortexcast.app.scanimage_check import check_scanimage_header
from cortexcast.app.registry import STACK_PROCESSES, process
from cortexcast.app.rig_checks import (
    Check, RigFacts, Status, check_frames, check_ni, check_ports, check_scanimage, check_serial,
)

__all__ = ["Check", "RigFacts", "check_scanimage", "format_report", "run_checks"]


# -- the config -------------------------------------------------------------------------

def check_config(path: Path) -> tuple[list[Check], RigFacts]:
    from cortexcast.core.config import ConfigError, load_toml

    try:
        raw = load_toml(path)
    except ConfigError as exc:
        fix = ("give the path of a rig config (TOML); `cortexcast demo --prepare-only` writes "
               "an example" if not path.exists() else "fix the TOML at the line and column named")
        return [Check("config", "FAIL", str(exc), fix)], RigFacts({}, {})
    facts = RigFacts(raw, {})
    checks: list[Check] = []
    fix = "correct the key named (every key and type is checked; see README 'A rig config')"
    names = [n for n in STACK_PROCESSES if n in raw]
    if "stack" in raw:  # the whole-file rules `up` applies: [stack], unknown tables, ...
        from cortexcast.app.launcher import validate_stack

        try:
            stack, _ = validate_stack(path)
            names += [n for n in stack.processes if n not in names]
        except (ConfigError, ValueError) as exc:
            checks.append(Check("config", "FAIL", str(exc), fix))
    for name in names:  # each table on its own, so one bad table leaves the others checked
        try:
            # check_loop reports each rule's files itself
            facts.settings[name] = process(name).load(path, check_files=False)
        except (ConfigError, ValueError) as exc:
            if not any(c.detail == str(exc) for c in checks):
                checks.append(Check("config", "FAIL", str(exc), fix))
    if not checks:
        tables = ", ".join(f"[{n}]" for n in names) or "no process tables"
        checks.append(Check("config", "OK", f"{path} validates: {tables}"))
    return checks, facts


# -- ROIs, model, loop ----------------------------------------------------------------------

def check_rois(facts: RigFacts) -> list[Check]:
    dec = facts.settings.get("decoder")
    if dec is None:
        return []
    from cortexcast.core.rois import ROIError

    try:
        try:
            from cortexcast.decoder.live.roi_loaders import load_roi_set
        except ImportError:
            from cortexcast.core.rois import load_rois as _load

            rois = _load(dec.rois)
        else:
            rois = load_roi_set(dec.rois, getattr(dec, "rois_format", "auto"),
                                cells_only=getattr(dec, "rois_cells_only", True))
    except (ROIError, OSError, ValueError) as exc:
        return [Check("ROIs", "FAIL", str(exc), "point [decoder] rois at the cortexcast .npz, "
                      "suite2p folder or CaImAn .hdf5 made for this field of view")]
    facts.n_rois = rois.n_neurons
    facts.rois = rois
    h, w = rois.frame_shape
    detail = f"{rois.n_neurons} ROIs from {dec.rois}, drawn on {h}x{w} frames"
    if facts.frame_shape is None:
        return [Check("ROIs", "WARN", detail + "; frame size unknown (no frames seen), "
                      "not compared", "run the doctor while frames are coming in")]
    if tuple(facts.frame_shape) != (h, w):
        fh, fw = facts.frame_shape
        return [Check("ROIs", "FAIL", f"{detail}, but the frames are {fh}x{fw}",
                      "use the ROI file made for this field of view and zoom (re-run "
                      "suite2p/CaImAn on a recording at this resolution)")]
    return [Check("ROIs", "OK", detail + " = the frame size")]


def check_model(facts: RigFacts, repeats: int = 20, default: bool = False) -> list[Check]:
    """The [decoder] model (or, with ``default``, the bundled one) on one window, timed."""
    from cortexcast.decoder.live.model_card import ModelError
    from cortexcast.decoder.live.pixel_decoder import PixelDecoder
    from cortexcast.decoder.live.process import resolve_model

    dec = facts.settings.get("decoder")
    if dec is None and not default:
        return []
    model = dec.model if dec is not None else "bundled"
    providers = dec.providers if dec is not None else ("CPUExecutionProvider",)
    threads = dec.threads if dec is not None else 1
    rate = dec.frame_rate_hz if dec is not None else 30.0
    try:
        pix = PixelDecoder(resolve_model(model), providers=providers, threads=threads)
        window = np.random.default_rng(0).random((pix.window, pix.neurons), np.float32)
        t0 = time.perf_counter_ns()
        frame = pix.decode_window(window)
        first_ms = (time.perf_counter_ns() - t0) / 1e6
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter_ns()
            pix.decode_window(window)
            times.append((time.perf_counter_ns() - t0) / 1e6)
    except (ModelError, OSError) as exc:
        return [Check("model", "FAIL", str(exc), "set [decoder] model to an ONNX file written "
                      "by `cortexcast train` (its .json card beside it), or 'bundled'")]
    checks = []
    name = resolve_model(model).name
    p50, worst = float(np.median(times)), float(max(times))
    budget = 1000.0 / rate
    if frame.shape != pix.frame_shape or not np.isfinite(frame).all():
        checks.append(Check("model", "FAIL", f"{name}: output {frame.shape} "
                            f"{'has NaN/inf' if frame.size else ''}",
                            "re-export the model (cortexcast train)"))
    else:
        status: Status = "OK" if p50 < budget / 2 else "WARN"
        checks.append(Check(
            "model", status, f"{name} on {', '.join(providers)}: one window "
            f"({pix.window}x{pix.neurons}) -> {frame.shape[0]}x{frame.shape[1]} in "
            f"{first_ms:.1f} ms first, p50 {p50:.2f} ms / max {worst:.2f} ms over {repeats}",
            "" if status == "OK" else f"over half the {budget:.0f} ms frame budget: use a GPU "
            "provider or a smaller model"))
    if facts.n_rois is not None and facts.n_rois != pix.neurons:
        checks.append(Check("model", "FAIL", f"{name} expects {pix.neurons} neurons, the ROI "
                            f"file has {facts.n_rois}", "use the model trained on these ROIs"))
    return checks


def check_roi_fingerprint(facts: RigFacts) -> list[Check]:
    """The [decoder] ROI set against the fingerprint the model's card records."""
    dec = facts.settings.get("decoder")
    if dec is None or facts.rois is None:
        return []
    from cortexcast.core.roi_fingerprint import roi_fingerprint
    from cortexcast.decoder.live.model_card import ModelError, card_rois, load_card
    from cortexcast.decoder.live.process import resolve_model

    path = resolve_model(dec.model)
    try:
        meta = card_rois(load_card(path), str(path.with_suffix(".json")))
    except ModelError as exc:
        if not path.is_file():  # check_model reports a missing model
            return []
        return [Check("ROI set", "FAIL", str(exc), "re-train the model (cortexcast train)")]
    loaded = roi_fingerprint(facts.rois)
    h, w = loaded["frame_shape"]
    mine = (f"{dec.rois}: {loaded['count']} ROIs on {h}x{w} frames, fingerprint "
            f"{loaded['sha256'][:12]}")
    if meta is None:
        return [Check("ROI set", "OK", f"{mine}; {path.name} records no ROI fingerprint "
                      "(simulated data or an older model), not compared")]
    trained = meta["fingerprint"]
    trained_file = meta.get("rois_file") or "its dataset's rois.npz"
    if (trained["count"], list(trained["frame_shape"]), trained["sha256"]) != (
            loaded["count"], loaded["frame_shape"], loaded["sha256"]):
        th, tw = trained["frame_shape"]
        return [Check("ROI set", "FAIL", f"{mine}, but {path} was trained on {trained_file}: "
                      f"{trained['count']} ROIs on {th}x{tw} frames, fingerprint "
                      f"{str(trained['sha256'])[:12]}",
                      f"point [decoder] rois at the ROI file the model was trained with "
                      f"({trained_file}), or make a model for these ROIs: `cortexcast export "
                      f"--recording F.ccr --rois {dec.rois} --out DIR`, then `cortexcast train "
                      f"--data DIR --out MODEL.onnx`")]
    ref = meta.get("reference_sha256")
    return [Check("ROI set", "OK", f"{mine} = the set {path.name} was trained on "
                  f"({trained_file}" + (f"; motion reference {str(ref)[:12]})" if ref else ")"))]


def check_loop(facts: RigFacts) -> list[Check]:
    loop = facts.settings.get("loop")
    if loop is None:
        return []
    from cortexcast.decoder.closed_loop.rules import RuleError, build_rule

    checks = []
    for r in loop.rules:
        try:
            build_rule(r)
        except RuleError as exc:
            checks.append(Check("loop", "FAIL", str(exc), "fix the rule's target/mask file "
                                "(a 36x64 .npy or .png)"))
            continue
        out = next(o for o in loop.outputs if o.name == r.output)
        checks.append(Check("loop", "OK", f"rule '{r.name}' ({r.kind}, threshold "
                            f"{r.threshold:g}, {r.frames} frame(s), refractory "
                            f"{r.refractory_s:g} s) -> {out.describe()}"))
    return checks


def check_security(config: Path | None, facts: RigFacts) -> list[Check]:
    """Is CURVE on; does a stream leave this host unencrypted (insecure = true)?"""
    if config is None:
        return []
    from cortexcast.core.config import ConfigError
    from cortexcast.stream.security import is_loopback, load_security, publish_endpoints

    try:
        sec = load_security(config)
    except ConfigError as exc:
        return [Check("security", "FAIL", str(exc), "fix the [security] key named (`cortexcast "
                      "keys --out DIR` prints a table that works)")]
    exposed = [f"{what} = {ep}" for what, ep in publish_endpoints(facts.settings)
               if not is_loopback(ep)]
    if sec.curve:
        halves = [h for h, on in (("publishers serve with the server key, admitting "
                                   f"{sec.allowed_clients}", sec.serves),
                                  ("subscribers connect with the client key", sec.connects)) if on]
        checks = [Check("security", "OK", "CURVE on for tcp: " + "; ".join(halves))]
        if sec.serves != sec.connects and facts.settings:
            missing = "client_secret_key/server_public_key" if sec.serves else \
                "server_secret_key/allowed_clients"
            checks.append(Check("security", "WARN", f"[security] has no {missing}: this "
                                "host's " + ("subscribers" if sec.serves else "publishers") +
                                " run without CURVE and cannot talk to CURVE peers",
                                "paste the whole table `cortexcast keys` prints"))
        return checks
    if exposed and sec.insecure:
        return [Check("security", "WARN", "!!! INSECURE: " + ", ".join(exposed) + " publish "
                      "raw frames and reconstructions to the network WITHOUT encryption "
                      "([security] insecure = true): anyone who reaches these ports reads them",
                      "run `cortexcast keys --out keys` and paste its [security] table "
                      "(then drop insecure = true)")]
    if exposed:
        return [Check("security", "FAIL", ", ".join(exposed) + " reach other hosts but "
                      "[security] has no keys: `up` and the processes refuse to start",
                      "`cortexcast keys --out keys` and paste its [security] table, or bind "
                      "tcp://127.0.0.1")]
    return [Check("security", "OK", "CURVE off; every stream stays on this host (loopback/ipc)")]


# -- running and printing -------------------------------------------------------------------

def run_checks(config: Path | None, timeout_s: float = 3.0,
               ni_system: Callable[[], Any] | None = None) -> list[Check]:
    if config is not None:
        checks, facts = check_config(config)  # the tables that loaded feed the other checks
    else:
        checks, facts = [], RigFacts({}, {})
    steps: list[Callable[[], list[Check]]] = [
        lambda: check_ni(facts, ni_system), lambda: check_serial(facts),
        lambda: check_ports(facts),
        lambda: check_frames(facts, timeout_s), lambda: check_behavior(facts, timeout_s),
        lambda: check_scanimage_header(facts),  # before check_rois: it learns the frame size
        lambda: check_rois(facts),
        lambda: check_onnxruntime(facts),
        lambda: check_model(facts, default=config is None),
        lambda: check_roi_fingerprint(facts), lambda: check_loop(facts),
        lambda: check_security(config, facts)]
    for step in steps:
        try:
            checks += step()
        except Exception as exc:  # the doctor reports; it never ends in a traceback
            checks.append(Check("doctor", "FAIL", f"a check crashed: {type(exc).__name__}: "
                                f"{exc}", "please report this (with the config)"))
    return checks


def format_report(checks: list[Check], config: Path | None) -> str:
    lines = [f"cortexcast doctor: {config or 'no config (hardware and the bundled model only)'}"]
    for c in checks:
        lines.append(f"  {c.status:<5} {c.name:<13} {c.detail}")
        if c.fix:
            lines.append(f"  {'':<5} {'':<13} fix: {c.fix}")
    n = {s: sum(c.status == s for c in checks) for s in ("OK", "WARN", "FAIL")}
    lines.append(f"{n['OK']} OK, {n['WARN']} WARN, {n['FAIL']} FAIL")
    return "\n".join(lines)


def _run(args: argparse.Namespace) -> int:
    config = Path(args.config) if args.config else None
    checks = run_checks(config, args.timeout)
    print(format_report(checks, config), flush=True)
    if args.json:
        from cortexcast.core.runtime import write_json_atomic

        write_json_atomic(args.json, {"config": str(config) if config else None,
                                      "checks": [asdict(c) for c in checks]})
    return 1 if any(c.status == "FAIL" for c in checks) else 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("doctor", help="check a rig: devices, ports, ScanImage, ROIs, model",
                       description="Check the rig a config describes and this machine: NI "
                       "devices, serial ports, frames from ScanImage, the ROI file against the "
                       "frame size, the model on one window and the ROIs it was trained on, the "
                       "closed-loop rules. Prints OK/"
                       "WARN/FAIL with fixes; exit 0 when nothing fails, 1 otherwise.")
    p.add_argument("config", nargs="?", help="rig config (TOML); without it only this "
                   "machine's hardware and the bundled model are checked")
    p.add_argument("--timeout", type=float, default=3.0,
                   help="seconds to wait for ScanImage frames (default 3)")
    p.add_argument("--json", help="also write the checks as JSON here")
    p.set_defaults(func=_run)
