"""`cortexcast up` (run the processes a config names) and `cortexcast demo`.

``up`` validates every process's settings before it starts anything, so a
bad key fails at once with the file and key named. ``demo`` writes a config
for the simulated rig and the bundled model into a run folder and runs ``up``
on it.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import secrets
import signal
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cortexcast.core.config import ConfigError, load_settings, load_toml, path_field
from cortexcast.app.registry import PROCESSES, STACK_PROCESSES, process
from cortexcast.app.status import StatusBoard, print_summary
from cortexcast.app.ports import free_ports
from cortexcast.app.supervisor import ACTIONS, RestartPolicy, Supervisor
from cortexcast.stream.security import check_stack_security, load_security

#: The processes [stack] may name (cortexcast.app.registry).
KNOWN_PROCESSES = STACK_PROCESSES


@dataclass(frozen=True)
class StackSettings:
    processes: tuple[str, ...] = ("display", "decoder", "daq")
    """Processes to start, in this order (each reads its own table of the same file)."""
    run_dir: str = path_field("")
    """Folder for logs and per-process stats (default runs/<time>)."""
    status_interval_s: float = 1.0
    """How often the status line is refreshed (s)."""
    stop_timeout_s: float = 10.0
    """How long each process may take to stop before it is killed (s)."""
    on_exit: dict[str, str] = dataclasses.field(default_factory=dict)
    """What to do when a process dies or hangs: ``"restart"`` it, ``"end_session"`` (stop
    them all), or ``"ignore"`` (go on without it). Default: the daq and the recorder
    end the session (the source; a dead recorder loses data), the others restart. A
    restarted recorder writes a new file, ``<out stem>.<k><suffix>``."""
    restart_limit: int = RestartPolicy.limit
    """At most this many restarts of one process per ``restart_window_s``; one more death
    ends the session with that reason (0: never restart)."""
    restart_window_s: float = RestartPolicy.window_s
    restart_backoff_s: float = RestartPolicy.backoff_s
    """A first restart is immediate; further ones within the window wait this, doubling."""
    hang_after_s: float = RestartPolicy.hang_after_s
    """A process whose main loop sends no heartbeat for this long (counted from its first,
    so a slow start-up is fine) is hung: killed and handled as by ``on_exit`` if that is
    "restart", only reported otherwise. 0: no hang detection."""

    def __post_init__(self) -> None:
        bad = [p for p in self.processes if p not in KNOWN_PROCESSES]
        if bad:
            raise ValueError(f"unknown process {bad[0]!r} (known: {', '.join(KNOWN_PROCESSES)})")
        if not self.processes:
            raise ValueError("processes is empty")
        for name, action in self.on_exit.items():
            if name not in KNOWN_PROCESSES:
                raise ValueError(f"on_exit names unknown process {name!r} "
                                 f"(known: {', '.join(KNOWN_PROCESSES)})")
            if action not in ACTIONS:
                raise ValueError(f"on_exit.{name} = {action!r}: must be one of "
                                 f"{', '.join(repr(a) for a in ACTIONS)}")
        if self.restart_limit < 0:
            raise ValueError(f"restart_limit must be >= 0 (0: never restart), "
                             f"got {self.restart_limit}")
        if self.restart_window_s <= 0:
            raise ValueError(f"restart_window_s must be > 0, got {self.restart_window_s}")
        if self.restart_backoff_s < 0:
            raise ValueError(f"restart_backoff_s must be >= 0, got {self.restart_backoff_s}")
        if self.hang_after_s != 0 and self.hang_after_s < 1.0:
            raise ValueError(f"hang_after_s must be 0 (off) or at least 1 s (a process "
                             f"beats every 0.25 s at most), got {self.hang_after_s}")

    def restart_policy(self) -> RestartPolicy:
        """What the supervisor does when one of these processes dies or hangs."""
        return RestartPolicy(on_exit=dict(self.on_exit), limit=self.restart_limit,
                             window_s=self.restart_window_s, backoff_s=self.restart_backoff_s,
                             hang_after_s=self.hang_after_s)


def validate_stack(config: Path) -> tuple[StackSettings, dict[str, Any]]:
    """Load [stack] and every named process's table; raise ConfigError on any fault."""
    data = load_toml(config)
    # [security]: every process; [export]: `cortexcast export` (its [export.nwb] metadata)
    unknown = sorted(set(data) - {"stack", "security", "export", *PROCESSES})
    if unknown:
        raise ConfigError(f"{config}: unknown table [{unknown[0]}]")
    stack = load_settings(StackSettings, config, "stack")
    loaded = {name: process(name).load(config) for name in stack.processes}
    check_stack_security(config, loaded)  # no frames off this host without keys (or insecure)
    if "record" in loaded and not loaded["record"].out:
        raise ConfigError(f"{config}: [record] out is required (the recording file to create)")
    if "decoder" in loaded:
        rois = check_decoder_files(loaded["decoder"], config)
        if "daq" in loaded:  # ScanImage's header against the ROI set and the decoder's rate
            from cortexcast.app.scanimage_check import check_daq_header

            problems = check_daq_header(loaded["daq"], rois.frame_shape,
                                        loaded["decoder"].frame_rate_hz)
            if problems:
                raise ConfigError(f"{config}: ScanImage's header disagrees with the decoder: "
                                  + "; ".join(problems))
    return stack, loaded


def check_decoder_files(settings: Any, config: Path | str) -> Any:
    """The decoder's ROI set (returned) loads and its model's card fits it, or ConfigError.

    Run by ``up`` before it starts anything, so a missing ROI file or a wrong model fails at
    once with the key named instead of seconds later inside a started stack. Cheap: the ROI
    file is read and the model's JSON card checked (the .onnx must exist; no onnxruntime
    session is made, the decoder does that when it starts).
    """
    from cortexcast.core.rois import ROIError
    from cortexcast.decoder.live.model_card import ModelError, check_model_rois, load_card
    from cortexcast.decoder.live.process import resolve_model
    from cortexcast.decoder.live.roi_loaders import load_roi_set

    where = f"{config}: [decoder]"
    try:
        rois = load_roi_set(settings.rois, settings.rois_format,
                            cells_only=settings.rois_cells_only)
    except ROIError as exc:
        raise ConfigError(f"{where} rois = {settings.rois!r}: {exc}. Set rois to the ROI file "
                          "drawn on this rig's frames (`cortexcast rois`, suite2p or "
                          "CaImAn output)") from exc
    model = resolve_model(settings.model)
    try:
        card = load_card(model)
    except ModelError as exc:
        raise ConfigError(f"{where} model = {settings.model!r}: {exc}. Set model to an .onnx "
                          "made by `cortexcast train` (its .json card beside it), or "
                          "'bundled'") from exc
    try:
        check_model_rois(card, rois, settings.model, settings.rois)
    except ModelError as exc:
        raise ConfigError(f"{where} model/rois: {exc}") from exc
    return rois


def run_stack(config: Path, duration_s: float | None, run_dir: Path | None = None,
              quiet: bool = False,
              on_start: Any = None) -> tuple[int, dict[str, Any]]:
    """Start, supervise and stop a stack; print and return its summary.

    ``on_start(supervisor)``, if given, is called once every process is started (the
    fault bench starts its injector thread there).
    """
    stack, settings = validate_stack(config)
    run_dir = run_dir or Path(stack.run_dir or f"runs/{time.strftime('%Y%m%d-%H%M%S')}")
    token = display_token(settings)
    board = StatusBoard(settings, quiet=quiet, security=load_security(config),
                        display_token=token)
    policy = stack.restart_policy()
    restart_args = {}
    if "record" in settings:  # never reopen (or clobber) the first recording
        out = Path(settings["record"].out)
        restart_args["record"] = lambda k: ["--out", str(out.with_name(f"{out.stem}.{k}{out.suffix}"))]
    sup = Supervisor(config, list(stack.processes), run_dir, policy=policy,
                     restart_args=restart_args, on_event=board.event)
    board.supervisor = sup
    if "display" in settings and not settings["display"].headless:
        board.say(f"display: http://{settings['display'].host}:{settings['display'].port}/"
                  + (f"?token={token}" if token else ""))
    board.say(f"logs and stats in {run_dir}/ ; Ctrl-C to stop")
    until = None if duration_s is None else time.monotonic() + duration_s
    previous = _stop_on_terminate()
    try:
        sup.start()
        if on_start is not None:
            on_start(sup)
        reason = sup.watch(until, board.tick, stack.status_interval_s)
    except KeyboardInterrupt:  # while starting
        reason = "interrupted"
    finally:
        sup.stop(stack.stop_timeout_s)
        board.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    summary = print_summary(sup, reason, quiet=quiet)
    code = 1 if sup.failed else 0
    return code, summary


def display_token(settings: dict[str, Any]) -> str | None:
    """The token of the display ``up`` starts, when it needs one (not on loopback).

    The config's own ``token``, or one made now and handed to the display through the
    environment: the same across the display's restarts, and known to the status line.
    """
    from cortexcast.display.access import TOKEN_ENV, token_required

    disp = settings.get("display")
    if disp is None or disp.headless or not token_required(disp):
        return None
    if disp.token:
        return disp.token
    token = os.environ.get(TOKEN_ENV) or secrets.token_urlsafe(24)
    os.environ[TOKEN_ENV] = token  # inherited by the display process
    return token


def _stop_on_terminate() -> dict[int, Any]:
    """SIGTERM (docker stop, timeout), SIGHUP (a closed terminal; POSIX only) and SIGBREAK
    (Ctrl-Break, a parent's CTRL_BREAK_EVENT; Windows only) stop the stack like Ctrl-C.
    Returns the previous handlers, for ``run_stack`` to put back."""
    from cortexcast.core.platform import terminate_signals

    def _interrupt(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    return {sig: signal.signal(sig, _interrupt) for sig in terminate_signals()}


def _run_up(args: argparse.Namespace) -> int:
    code, _ = run_stack(Path(args.config), args.duration,
                        Path(args.run_dir) if args.run_dir else None)
    return code


def register_up(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("up", help="start the processes a config names and supervise them",
                       description="Start every process named in [stack] processes of the "
                       "config, print a live status line, stop all cleanly on Ctrl-C, "
                       "--duration, or when one of them dies.")
    p.add_argument("--config", required=True, help="rig config (TOML)")
    p.add_argument("--duration", type=float, help="stop after this many seconds")
    p.add_argument("--run-dir", help="folder for logs and stats (default runs/<time>)")
    p.set_defaults(func=_run_up)


# -- demo ---------------------------------------------------------------------

def write_sim_config(run_dir: Path, *, model: str = "bundled", headless: bool = False,
                     port: int = 8030, save: str | None = None, neurons: int | None = None,
                     daq_port: int = 5555, decoder_port: int = 5556, transport: str = "tcp",
                     handshake: bool = True, record: str | None = None,
                     use_behavior: bool = True, clips: str | None = None,
                     secure: bool = False) -> Path:
    """Write rig.toml (and the ROI file) for the simulated rig + a trained model.

    The simulated animal is the one the model was trained on (its card says
    which); the movie comes from the held-out image pool, or with ``clips`` from that
    ``cortexcast clips`` folder's playlist: the rig then plays a whole rig, announcing the
    stimulus identity and the eye tracker's samples over UDP (on free ports) to the daq's
    stimulus and behaviour sources, and the session ends with the playlist. ``secure``: make
    CURVE keys in ``run_dir/keys`` and name them in ``[security]`` (every tcp stream
    encrypted; what docker-compose uses, whose services bind 0.0.0.0).
    """
    from cortexcast.decoder.live.model_card import load_card, mask_path
    from cortexcast.decoder.live.process import resolve_model
    from cortexcast.core.rois import save_rois
    from cortexcast.daq.sim.rig import SimulatedRig
    from cortexcast.daq.sim.settings import SimSettings
    from cortexcast.core.tomlwrite import dumps

    if model != "bundled":  # the config lives in run_dir: relative paths would move with it
        model = str(Path(model).resolve())
    card = load_card(resolve_model(model))
    sim_fields = {f.name for f in dataclasses.fields(SimSettings)}
    trained = {k: v for k, v in dict(card.extra.get("simulation", {})).items() if k in sim_fields}
    if neurons is not None and neurons != trained.get("n_neurons", neurons):
        raise ConfigError(f"model {model} was trained on {trained.get('n_neurons')} neurons, "
                          f"not {neurons}")
    sim = dataclasses.replace(SimSettings(**trained), images="test", session_seed=12345,
                              paced=True, duration_s=None, clips="")
    stim_port = eye_port = 0
    if clips:
        stim_port, eye_port = free_ports(2, socket.SOCK_DGRAM)
        sim = dataclasses.replace(sim, clips=str(Path(clips).resolve()),
                                  stimulus_to=f"127.0.0.1:{stim_port}",
                                  eye_to=f"127.0.0.1:{eye_port}")
    rig = SimulatedRig(sim)  # a clip set is checked here, before anything is written
    run_dir = run_dir.resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    rois = run_dir / "rois.npz"
    save_rois(rois, rig.rois())
    if transport == "ipc" and os.name == "nt":
        raise ConfigError("transport 'ipc' (Unix-domain sockets) does not work on Windows; "
                          "use tcp (the default)")
    if transport == "ipc":  # Unix-domain sockets: same host only, a little cheaper than TCP
        daq_ep, dec_ep = f"ipc://{run_dir.resolve()}/daq.sock", f"ipc://{run_dir.resolve()}/decoder.sock"
    else:
        daq_ep, dec_ep = f"tcp://127.0.0.1:{daq_port}", f"tcp://127.0.0.1:{decoder_port}"
    config = {
        "stack": {"processes": ["display", "decoder", "daq"], "run_dir": str(run_dir)},
        "daq": {"publish": daq_ep,
                # decoder (+ recorder) on frames and sync, display (+ recorder) on stimulus
                "wait_for": ([f"frames:{1 + bool(record)}", f"sync:{1 + bool(record)}",
                              f"stimulus:{1 + bool(record)}"] if handshake else []),
                "sim": {k: v for k, v in dataclasses.asdict(sim).items() if v is not None}},
        "decoder": {"frames_from": daq_ep, "publish": dec_ep, "rois": str(rois), "model": model,
                    "frame_rate_hz": sim.imaging_rate_hz, "stim_rate_hz": sim.stim_rate_hz,
                    "wait_for": ["reconstruction"] if handshake else [],
                    "use_behavior": use_behavior},
        "display": {"stimulus_from": daq_ep, "reconstruction_from": dec_ep, "port": port,
                    "headless": headless, "save": save},
    }
    if clips:  # the rig's stand-in stimulus computer and eye tracker talk to these
        config["daq"].update({
            "sync": ["stimulus", "behavior"],
            "stimulus": {"mode": "udp", "listen": f"127.0.0.1:{stim_port}",
                         "clip_library": sim.clips},
            "behavior": {"mode": "udp", "listen": f"127.0.0.1:{eye_port}"}})
    if record:
        config["stack"]["processes"] = ["display", "record", "decoder", "daq"]
        config["record"] = {"endpoints": [daq_ep, dec_ep], "out": str(Path(record).resolve()),
                            "topics": ["frames", "sync", "stimulus", "activity",
                                       "reconstruction"]}
    if mask_path(resolve_model(model)).exists():
        config["display"]["eval_mask"] = str(mask_path(resolve_model(model)))
    if secure:
        from cortexcast.app.keys_command import make_keys

        keys = make_keys(run_dir / "keys", force=True)
        config["security"] = {k: str(v) for k, v in keys.items()}
    path = run_dir / "rig.toml"
    path.write_text(dumps(config))
    return path


def _run_demo(args: argparse.Namespace) -> int:
    run_dir = Path(args.run_dir or f"runs/demo-{time.strftime('%Y%m%d-%H%M%S')}")
    print(f"preparing the simulated rig in {run_dir}/ ...", flush=True)
    config = write_sim_config(run_dir, model=args.model, headless=args.headless, port=args.port,
                              save=args.save, handshake=not args.prepare_only,
                              record=args.record, daq_port=args.daq_port,
                              decoder_port=args.decoder_port, use_behavior=not args.no_behavior,
                              clips=args.clips, secure=args.secure)
    if args.prepare_only:
        print(f"wrote {config}; start it with: cortexcast up --config {config}")
        return 0
    code, _ = run_stack(config, args.duration, run_dir)
    return code


def register_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="the whole stack on the simulated rig with the bundled model",
                       description="Simulated rig -> decoder (bundled ONNX model) -> live "
                       "display in the browser. Runs until Ctrl-C, --duration, or the end of "
                       "the --clips playlist.")
    p.add_argument("--duration", type=float, help="stop after this many seconds")
    p.add_argument("--port", type=int, default=8030, help="display HTTP port (default 8030)")
    p.add_argument("--daq-port", type=int, default=5555,
                   help="ZeroMQ port the daq publishes on (default 5555)")
    p.add_argument("--decoder-port", type=int, default=5556,
                   help="ZeroMQ port the decoder publishes on (default 5556)")
    p.add_argument("--model", default="bundled", help="ONNX model trained on the simulator")
    p.add_argument("--headless", action="store_true", help="no web page")
    p.add_argument("--save", help="with --headless: write what would be shown (.gif or folder)")
    p.add_argument("--run-dir", help="folder for config, logs and stats")
    p.add_argument("--record", metavar="FILE",
                   help="also record every stream to FILE (replay it with "
                   "`cortexcast daq --source replay --recording FILE`)")
    p.add_argument("--clips", metavar="DIR",
                   help="play this `cortexcast clips` folder's playlist instead of an endless "
                   "movie; the simulated rig announces stimulus identity and pupil/eye over "
                   "UDP as a rig's stimulus and eye-tracking programs do, and the demo ends "
                   "with the playlist (with --record: a calibration session)")
    p.add_argument("--no-behavior", action="store_true",
                   help="decode without the rig's pupil/running/eye signals (the model's "
                   "training mean instead), as on a rig that does not measure them")
    p.add_argument("--secure", action="store_true",
                   help="make CURVE keys in the run folder and encrypt every stream with them "
                   "(needed when the processes bind 0.0.0.0, as in docker-compose)")
    p.add_argument("--prepare-only", action="store_true",
                   help="only write the config and ROI file (for docker-compose), do not run")
    p.set_defaults(func=_run_demo)
