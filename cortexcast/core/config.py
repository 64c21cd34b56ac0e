"""TOML config -> frozen settings dataclasses, validated on load.

Every process has one frozen dataclass of settings. A config file holds one
table per process (``[daq]``, ``[decoder]``, ``[display]``, ``[record]``, ...);
:func:`settings_from_table` turns a table into its dataclass, checking every
key and type, and raises :class:`ConfigError` naming the file and the bad key.
Nested dataclasses map to sub-tables (``[daq.sim]``).
"""

from __future__ import annotations

from cortexcast.core.errors import CortexcastError
from cortexcast.core.platform import is_absolute_path, join_path
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


class ConfigError(CortexcastError, ValueError):
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


def path_field(default: Any = "", **kwargs: Any) -> Any:
    """A settings field that holds a file path (``rois: str = path_field("")``).

    In a config file a relative path is taken relative to that file's folder, so a run
    folder can be moved and ``up`` run from anywhere; a path given as a flag stays
    relative to the working directory. ``"bundled"`` and URLs (``x://...``) are kept.
    """
    return dataclasses.field(default=default, metadata={**kwargs.pop("metadata", {}),
                                                        "path": True}, **kwargs)


def _nested_dataclass(hint: Any) -> Any:
    """The settings dataclass a field's type holds (itself, in a tuple or Optional), or None."""
    if dataclasses.is_dataclass(hint):
        return hint
    for arg in typing.get_args(hint):
        found = _nested_dataclass(arg)
        if found is not None:
            return found
    return None


def _resolve_path(value: Any, base: Path, os_name: str | None = None) -> Any:
    """``value`` joined onto ``base`` if it is a relative path by the rules of ``os_name``'s
    OS (default: this one), so ``C:\\data\\x.npz`` and ``D:/clips`` stay as given on Windows."""
    if isinstance(value, str) and value and value != "bundled" \
            and not is_absolute_path(value, os_name) and "://" not in value:
        return join_path(base, value, os_name)
    return value


def resolve_paths(cls: type, table: dict[str, Any], config_path: str | Path, *,
                  os_name: str | None = None) -> dict[str, Any]:
    """A copy of ``table`` with its relative path fields made relative to the config's folder.

    Which keys are paths is read from ``cls`` (:func:`path_field`); sub-tables
    (``[daq.tiff]``) and arrays of tables (``[[loop.rules]]``) follow their own dataclass.
    Keys ``cls`` does not know are left for :func:`settings_from_table` to report.
    ``os_name`` (``"nt"``, ``"posix"``; default this OS) picks the path rules, for tests.
    """
    base = Path(config_path).resolve().parent
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    out = dict(table)
    for key, value in table.items():
        f = fields.get(key)
        if f is None:
            continue
        if f.metadata.get("path"):
            out[key] = _resolve_path(value, base, os_name)
            continue
        sub = _nested_dataclass(hints[key])
        if sub is not None and isinstance(value, dict):
            out[key] = resolve_paths(sub, value, config_path, os_name=os_name)
        elif sub is not None and isinstance(value, list):
            out[key] = [resolve_paths(sub, v, config_path, os_name=os_name)
                        if isinstance(v, dict) else v for v in value]
    return out


def merge_overrides(table: dict[str, Any], overrides: dict[str, Any] | None) -> dict[str, Any]:
    """``table`` with the values of ``overrides`` that are not None on top.

    A dict value overrides keys of the sub-table (``{"sim": {"seed": 3}}`` changes
    ``[daq.sim] seed`` only); one whose values are all None changes nothing.
    """
    out = dict(table)
    for key, value in (overrides or {}).items():
        if isinstance(value, dict):
            inner = out.get(key)
            merged = merge_overrides(inner if isinstance(inner, dict) else {}, value)
            if merged != (inner if isinstance(inner, dict) else {}):
                out[key] = merged
        elif value is not None:
            out[key] = value
    return out


def load_table(path: str | Path, section: str) -> dict[str, Any]:
    """The raw ``[section]`` table of ``path`` ({} when absent); ConfigError if not a table.

    A dotted section (``daq.sim``) names a sub-table.
    """
    raw: Any = load_toml(path)
    for part in section.split("."):
        raw = raw.get(part, {})
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: [{section}] must be a table")
    return raw


def load_settings(cls: type[T], path: str | Path | None, section: str,
                  overrides: dict[str, Any] | None = None) -> T:
    """Load ``[section]`` of ``path`` (no file -> defaults) into ``cls``: the one loader.

    Relative path fields of the file resolve against its folder; ``overrides`` (from
    command-line flags; None = not given, dicts go into sub-tables) win over the file.
    """
    table: dict[str, Any] = {}
    where = section
    if path is not None:
        where = f"{path}: [{section}]"
        table = resolve_paths(cls, load_table(path, section), path)
    return settings_from_table(cls, merge_overrides(table, overrides), where)
