"""docker-compose.yml parses and every service runs a real cortexcast subcommand.

No Docker engine runs here, so the check is: the YAML is valid compose, the
image is built from our Dockerfile, and each command parses with the same
argparse parser the `cortexcast` entry point uses (a misspelled subcommand or
flag fails).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from cortexcast.app.cli import build_parser

REPO = Path(__file__).resolve().parents[1]


def _compose() -> dict:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


def test_compose_has_the_three_processes_from_one_image() -> None:
    services = _compose()["services"]
    assert {"daq", "decoder", "display"} <= set(services)
    images = {s.get("image") for s in services.values()}
    assert images == {"cortexcast:latest"}
    assert any("build" in s for s in services.values())
    assert (REPO / "Dockerfile").exists()
    assert 'ENTRYPOINT ["cortexcast"]' in (REPO / "Dockerfile").read_text()


@pytest.mark.parametrize("name", ["prepare", "daq", "decoder", "display"])
def test_service_command_is_a_real_subcommand(name: str) -> None:
    command = _compose()["services"][name]["command"]
    parser = build_parser()
    args = parser.parse_args(command)  # SystemExit on an unknown subcommand or flag
    assert args.command == command[0]
    assert callable(args.func)


def test_services_connect_by_service_name() -> None:
    services = _compose()["services"]
    assert "tcp://daq:5555" in services["decoder"]["command"]
    assert "tcp://decoder:5556" in services["display"]["command"]


def test_dockerfile_copies_what_pip_install_needs() -> None:
    """`pip install .` in the image needs setup.py (the folder -> cortexcast.* mapping)."""
    text = (REPO / "Dockerfile").read_text()
    copied = {word.rstrip("/") for line in text.splitlines() if line.startswith("COPY ")
              for word in line.split()[1:-1]}
    assert {"pyproject.toml", "setup.py", "README.md", "cortexcast", "stream", "daq", "decoder",
            "display"} <= copied
