"""Every subcommand the issues name exists and has --help."""

from __future__ import annotations

import subprocess
import sys

import pytest

from cortexcast.app.cli import build_parser

COMMANDS = ["demo", "up", "daq", "decoder", "display", "record", "replay", "simulate", "train",
            "evaluate", "reconstruct", "bench", "loop", "doctor"]


@pytest.mark.parametrize("command", COMMANDS)
def test_help(command: str, capsys) -> None:
    with pytest.raises(SystemExit) as done:
        build_parser().parse_args([command, "--help"])
    assert done.value.code == 0
    assert "usage: cortexcast " + command in capsys.readouterr().out


def test_live_path_does_not_import_torch(cli_env) -> None:
    code = ("import sys, cortexcast.app.cli as c; c.build_parser(); "
            "import cortexcast.daq.process, cortexcast.decoder.live.process, cortexcast.display.cli, cortexcast.daq.sim.rig, cortexcast.decoder.live.pixel_decoder; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=cli_env, check=True)
    assert out.stdout.strip() == "False"


def test_bad_config_is_a_clear_error(tmp_path, cli_env) -> None:
    cfg = tmp_path / "rig.toml"
    cfg.write_text("[decoder]\nrois = 'x.npz'\nthreads = 'many'\n")
    out = subprocess.run([sys.executable, "-m", "cortexcast", "decoder", "--config", str(cfg)],
                         capture_output=True, text=True, env=cli_env, timeout=60)
    assert out.returncode == 2
    assert "threads" in out.stderr and str(cfg) in out.stderr
    assert "Traceback" not in out.stderr


def test_up_rejects_unknown_process_before_starting(tmp_path, cli_env) -> None:
    cfg = tmp_path / "rig.toml"
    cfg.write_text("[stack]\nprocesses = ['daq', 'decodr']\n")
    out = subprocess.run([sys.executable, "-m", "cortexcast", "up", "--config", str(cfg)],
                         capture_output=True, text=True, env=cli_env, timeout=60)
    assert out.returncode == 2 and "decodr" in out.stderr and "Traceback" not in out.stderr


def test_missing_rois_file_is_a_clear_error(tmp_path, cli_env) -> None:
    out = subprocess.run([sys.executable, "-m", "cortexcast", "decoder", "--rois",
                          str(tmp_path / "nope.npz")],
                         capture_output=True, text=True, env=cli_env, timeout=60)
    assert out.returncode == 2 and "nope.npz" in out.stderr and "Traceback" not in out.stderr
