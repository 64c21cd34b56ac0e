"""Config files: validated on load, errors name the file and the key."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from cortexcast.core.config import ConfigError, load_settings, path_field
from cortexcast.core.tomlwrite import dumps


@dataclass(frozen=True)
class Inner:
    rate_hz: float = 30.0
    name: str = "x"


@dataclass(frozen=True)
class Outer:
    endpoint: str = "tcp://127.0.0.1:5555"
    count: int = 3
    flag: bool = False
    topics: tuple[str, ...] = ()
    maybe: str | None = None
    inner: Inner = field(default_factory=Inner)

    def __post_init__(self) -> None:
        if self.count < 0:
            raise ValueError("count must be >= 0")


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "rig.toml"
    p.write_text(text)
    return p


def test_defaults_when_table_missing(tmp_path: Path) -> None:
    assert load_settings(Outer, _write(tmp_path, ""), "proc") == Outer()


def test_values_and_nested_tables_load(tmp_path: Path) -> None:
    p = _write(tmp_path, '[proc]\ncount = 5\ntopics = ["a", "b"]\n[proc.inner]\nrate_hz = 8\n')
    s = load_settings(Outer, p, "proc")
    assert s.count == 5 and s.topics == ("a", "b") and s.inner.rate_hz == 8.0


@pytest.mark.parametrize("body, key", [
    ("cuont = 5", "cuont"),
    ("count = 'five'", "count"),
    ("flag = 1", "flag"),
    ("topics = 'a'", "topics"),
    ("[proc.inner]\nrate = 3", "rate"),
    ("[proc.inner]\nrate_hz = 'fast'", "rate_hz"),
])
def test_errors_name_file_and_key(tmp_path: Path, body: str, key: str) -> None:
    p = _write(tmp_path, "[proc]\n" + body + "\n")
    with pytest.raises(ConfigError) as err:
        load_settings(Outer, p, "proc")
    assert str(p) in str(err.value) and key in str(err.value)


def test_range_check_becomes_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="count must be >= 0"):
        load_settings(Outer, _write(tmp_path, "[proc]\ncount = -1\n"), "proc")


def test_invalid_toml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(Outer, _write(tmp_path, "[proc\n"), "proc")
    with pytest.raises(ConfigError, match="not found"):
        load_settings(Outer, tmp_path / "nope.toml", "proc")


def test_overrides_win(tmp_path: Path) -> None:
    s = load_settings(Outer, _write(tmp_path, "[proc]\ncount = 5\n"), "proc", {"count": 9})
    assert s.count == 9


def test_written_toml_loads_back(tmp_path: Path) -> None:
    p = tmp_path / "w.toml"
    p.write_text(dumps({"proc": {"count": 2, "topics": ["x"], "maybe": None,
                                 "inner": {"rate_hz": 7.5, "name": 'q"uote'}}}))
    s = load_settings(Outer, p, "proc")
    assert s == Outer(count=2, topics=("x",), inner=Inner(7.5, 'q"uote'))


def test_relative_paths_are_relative_to_the_config_file(tmp_path: Path) -> None:
    @dataclass(frozen=True)
    class WithPaths:
        rois: str = path_field("")
        model: str = path_field("bundled")
        name: str = ""

    sub = tmp_path / "run"
    sub.mkdir()
    p = sub / "rig.toml"
    p.write_text("[proc]\nrois = 'rois.npz'\nmodel = 'bundled'\nname = 'rois.npz'\n")
    s = load_settings(WithPaths, p, "proc")
    assert s.rois == str(sub / "rois.npz")
    assert s.model == "bundled" and s.name == "rois.npz"
