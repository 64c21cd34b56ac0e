"""TOML config -> frozen settings dataclasses, validated on load.

Every process has one frozen dataclass of settings. A config file holds one
table per process (``[daq]``, ``[decoder]``, ``[display]``, ``[record]``, ...);
:func:`settings_from_table` turns a table into its dataclass, checking every
key and type, and raises :class:`ConfigError` naming the file and the bad key.
Nested dataclasses map to sub-tables (``[daq.sim]``).
"""

from __future__ import annotations

import dataclasses
import sys
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

T = TypeVar("T")


class ConfigError(ValueError):
    """A config file or value is wrong; the message names the file and the key."""


def load_toml(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    try:
        with p.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError as exc:
        raise ConfigError(f"{p}: config file not found") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: not valid TOML: {exc}") from exc


def _check_type(value: Any, hint: Any, where: str) -> Any:
    """Return value (converted where lossless: int->float, list->tuple) or raise."""
    origin = typing.get_origin(hint)
    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        errors = []
        for option in typing.get_args(hint):
            if option is type(None):
                if value is None:
                    return None
                continue
            try:
                return _check_type(value, option, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{where}: unexpected value {value!r}")
    if origin is typing.Literal:
        if value not in typing.get_args(hint):
            raise ConfigError(f"{where}: must be one of {list(typing.get_args(hint))}, got {value!r}")
        return value
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__}")
        args = typing.get_args(hint)
        item = args[0] if args else Any
        return tuple(_check_type(v, item, f"{where}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a table, got {type(value).__name__}")
        return dict(value)
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a table, got {type(value).__name__}")
        return _build(hint, value, where)
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    return value


def _build(cls: type[T], table: dict[str, Any], where: str) -> T:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(table) - set(fields))
    if unknown:
        raise ConfigError(
            f"{where}: unknown key {unknown[0]!r} (known keys: {', '.join(sorted(fields))})"
        )
    kwargs = {k: _check_type(v, hints[k], f"{where}.{k}") for k, v in table.items()}
    try:
        obj = cls(**kwargs)
    except (TypeError, ValueError) as exc:  # __post_init__ range checks
        raise ConfigError(f"{where}: {exc}") from exc
    return obj


def settings_from_table(cls: type[T], table: dict[str, Any], where: str = "config") -> T:
    """Build a frozen settings dataclass from a (possibly partial) TOML table."""
    return _build(cls, table, where)


#: Keys whose string values are file paths: relative ones in a config file are taken
#: relative to that file's folder (so a run folder can be moved and `up` run from anywhere).
PATH_KEYS = frozenset({"rois", "model", "recording", "eval_mask", "out", "save", "stats_out",
                       "run_dir", "reference", "session_stats", "clip_library", "log_file",
                       "log", "target", "mask", "folder"})


def resolve_paths(table: dict[str, Any], config_path: str | Path) -> dict[str, Any]:
    """A copy of ``table`` with relative PATH_KEYS values made relative to the config's folder.

    Sub-tables (``[decoder.motion]``, ``[daq.tiff]``, ...) are resolved the same way.
    """
    base = Path(config_path).resolve().parent
    out = dict(table)
    for key, value in table.items():
        if isinstance(value, dict):
            out[key] = resolve_paths(value, config_path)
        elif key in PATH_KEYS and isinstance(value, str) and value and value != "bundled" \
                and not Path(value).is_absolute() and "://" not in value:
            out[key] = str(base / value)
    return out


def load_settings(cls: type[T], path: str | Path | None, section: str,
                  overrides: dict[str, Any] | None = None) -> T:
    """Load ``[section]`` of ``path`` (missing file -> defaults) into ``cls``.

    ``overrides`` (from command-line flags) win over the file.
    """
    table: dict[str, Any] = {}
    where = section
    if path is not None:
        data = load_toml(path)
        where = f"{path}: [{section}]"
        raw = data.get(section, {})
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: [{section}] must be a table")
        table = resolve_paths(raw, path)
    for key, value in (overrides or {}).items():
        if value is not None:
            table[key] = value
    return settings_from_table(cls, table, where)
