"""Config machinery: YAML files with a `base:` parent, dotted `key=value` overrides, typed frozen
dataclasses built and validated once, and the resolved config written back as YAML.

The dataclasses themselves live with the code they configure; this module only knows how to
read, merge, check and write them.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, NamedTuple, TypeVar, Union

import yaml

from cpcl.utils.errors import ConfigError

T = TypeVar("T")


def deep_merge(base: dict, override: dict) -> dict:
    """A new dict: `override` on top of `base`, merging nested dicts key by key."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_yaml(path: Path, _seen: tuple[Path, ...] = ()) -> dict:
    """Read a YAML mapping; a `base:` key names a parent file (relative to this one) merged under it."""
    path = Path(path).resolve()
    if path in _seen:
        raise ConfigError(f"{path}: `base:` chain loops back to itself")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as err:
        raise ConfigError(f"cannot read config file {path}: {err.strerror}") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1} column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{path}: malformed YAML{where}: {getattr(err, 'problem', err)}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of config fields, got {type(data).__name__}")
    parent = data.pop("base", None)
    if parent is None:
        return data
    return deep_merge(load_yaml(path.parent / parent, (*_seen, path)), data)


def apply_overrides(data: dict, overrides: Sequence[str]) -> dict:
    """Apply dotted `section.field=value` overrides; values are parsed as YAML (3, 1e-5, true, [1, 2])."""
    values = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override '{item}' is not of the form key=value (e.g. train.epochs=5)")
        try:
            values[key.strip()] = yaml.safe_load(raw)
        except yaml.YAMLError:
            values[key.strip()] = raw
    return set_values(data, values)


def set_values(data: dict, values: Mapping[str, Any]) -> dict:
    """A new dict: `data` with each dotted `section.field` of `values` set to its value (checked later, by `build`)."""
    result = dict(data)
    for key, value in values.items():
        parts = key.split(".")
        nested: dict = {}
        cursor = nested
        for part in parts[:-1]:
            cursor = cursor.setdefault(part, {})
        cursor[parts[-1]] = value
        result = deep_merge(result, nested)
    return result


YAML_BOOL_WORDS = {True: ("on", "yes", "true"), False: ("off", "no", "false")}  # words YAML reads as bools


def _check(value: Any, annotation: Any, where: str) -> Any:
    """Check (and gently coerce: int -> float, list -> tuple) `value` against a type annotation."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if dataclasses.is_dataclass(annotation):
        if not isinstance(value, dict):
            raise ConfigError(f"config field '{where}' must be a mapping, got {value!r}")
        return build(annotation, value, where)
    if origin is Literal:
        if isinstance(value, bool) and value not in args:  # YAML 1.1 reads on/off, yes/no as booleans
            value = next((a for a in args if a in YAML_BOOL_WORDS[value]), value)
        if value not in args:
            raise ConfigError(f"config field '{where}' must be one of {', '.join(map(str, args))}; got {value!r}")
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in (a for a in args if a is not type(None)):
            try:
                return _check(value, option, where)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0] if len(errors) == 1 else f"config field '{where}' has an invalid value {value!r}")
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config field '{where}' must be a list, got {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(f"config field '{where}' must have {len(args)} items, got {len(value)}")
            items = [_check(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args))]
        else:
            item_type = args[0] if args else Any
            items = [_check(v, item_type, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if annotation is Any:
        return value
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if annotation is float and isinstance(value, str):  # YAML 1.1 reads "1e-5" as a string
        try:
            return float(value)
        except ValueError:
            pass
    if annotation in (int, float) and isinstance(value, bool):
        raise ConfigError(f"config field '{where}' must be {annotation.__name__}, got {value!r}")
    if not isinstance(value, annotation):
        raise ConfigError(f"config field '{where}' must be {annotation.__name__}, got {value!r}")
    return value


class Range(NamedTuple):
    """Where a numeric config field may lie: `low` / `high` bounds (None: unbounded), each inclusive unless open."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False  # value must be > low (else >= low)
    high_open: bool = False  # value must be < high (else <= high)

    def holds(self, value: float) -> bool:
        """Whether `value` lies in the range; NaN and infinities never do."""
        if not math.isfinite(value):
            return False
        above = self.low is None or (value > self.low if self.low_open else value >= self.low)
        below = self.high is None or (value < self.high if self.high_open else value <= self.high)
        return above and below

    def describe(self) -> str:
        def number(value: float) -> str:
            return str(int(value)) if float(value).is_integer() else repr(value)

        parts = [f"{'>' if self.low_open else '>='} {number(self.low)}"] if self.low is not None else []
        parts += [f"{'<' if self.high_open else '<='} {number(self.high)}"] if self.high is not None else []
        return " and ".join(parts) or "finite"


def check_ranges(section: Any, prefix: str, ranges: Mapping[str, Range]) -> None:
    """ConfigError naming the first field of `section` (dotted under `prefix`; "" for the top level) outside
    its range. A tuple field is checked item by item."""
    for name, bounds in ranges.items():
        value = getattr(section, name)
        for item in value if isinstance(value, tuple) else (value,):
            if not bounds.holds(item):
                key = f"{prefix}.{name}" if prefix else name
                raise ConfigError(f"config field '{key}' must be {bounds.describe()}, got {value!r}")


def _bool_key(key: Any, fields: Mapping[str, Any]) -> Any:
    """A key YAML 1.1 read as a boolean (`on:` is True) back as the field it names, if one does."""
    if isinstance(key, bool):
        return next((word for word in YAML_BOOL_WORDS[key] if word in fields), key)
    return key


def build(cls: type[T], data: dict, where: str = "") -> T:
    """Build dataclass `cls` from a mapping, checking every field; unknown keys are errors."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    data = {_bool_key(key, fields): value for key, value in data.items()}
    unknown = sorted(set(data) - set(fields))
    retired = getattr(cls, "RETIRED", {})  # a section's retired keys: name -> why, and where its numbers are
    for key in unknown:
        if key in retired:
            raise ConfigError(f"config field '{where + '.' if where else ''}{key}' {retired[key]}")
    if unknown:
        name = f"{where}.{unknown[0]}" if where else unknown[0]
        raise ConfigError(f"unknown config field '{name}'; valid fields{' of ' + where if where else ''}: "
                          f"{', '.join(fields)}")
    values = {key: _check(value, hints[key], f"{where}.{key}" if where else key) for key, value in data.items()}
    try:
        return cls(**values)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"config{' ' + where if where else ''}: {err}") from None
    except ConfigError as err:  # a section's own check: say which section, unless it names its key already
        if not where or str(err).startswith("config field"):
            raise
        raise ConfigError(f"config field '{where}': {err}") from None


def to_dict(config: Any) -> dict:
    """Plain-type dict of a (nested) config dataclass; tuples become lists (YAML/JSON friendly)."""
    def plain(value: Any) -> Any:
        if dataclasses.is_dataclass(value):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        return value
    return plain(config)


def load_config(cls: type[T], path: Path | None, overrides: Sequence[str] = (),
                values: Mapping[str, Any] | None = None) -> T:
    """The resolved config: dataclass defaults <- YAML file (with bases) <- dotted `key=value` overrides <- dotted
    `values` (Python values, as `cpcl.train` takes them)."""
    data = load_yaml(path) if path is not None else {}
    return build(cls, set_values(apply_overrides(data, overrides), values or {}))


def save_config(config: Any, path: Path, header: str = "") -> None:
    """Write the resolved config as YAML (every field, defaults included), after `header`'s lines
    as YAML comments."""
    comments = "".join(f"# {line}\n" for line in header.splitlines())
    Path(path).write_text(comments + yaml.safe_dump(to_dict(config), sort_keys=False), encoding="utf-8")
