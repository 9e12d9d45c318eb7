"""Typed configuration shared by `llm_jepa` and `vljepa`.

Data flow: a dataclass tree gives the defaults -> a YAML recipe overrides some fields ->
`--set a.b=c` CLI overrides override the recipe -> the resolved tree is written into the
run folder as `config.yaml`. Unknown keys are an error that names the key and the valid
ones (no silent `.get(key, default)`), and values are coerced to the field's type, so a
typo or a wrong type fails before any model is built.

    cfg = load_config(TrainConfig, "recipes/llm_jepa/tiny_cpu.yaml", ["jepa.lam=0.5"])
    save_config(cfg, run_dir / "config.yaml")
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A recipe or override that does not fit the config schema."""


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Convert a YAML/CLI value to the annotated type `tp`, or raise ConfigError."""
    tp, optional = _unwrap_optional(tp)
    if value is None:
        if optional or tp is Any:
            return None
        raise ConfigError(f"{where}: null is not allowed (expected {getattr(tp, '__name__', tp)})")
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping for section {tp.__name__}, got {value!r}")
        return from_dict(tp, value, prefix=where)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        try:
            return tp(value)
        except ValueError:
            valid = ", ".join(str(m.value) for m in tp)
            raise ConfigError(f"{where}: {value!r} is not one of: {valid}") from None
    origin = typing.get_origin(tp)
    if origin in (list, tuple):
        if isinstance(value, str):
            try:
                value = yaml.safe_load(value) if value.strip().startswith("[") else [value]
            except yaml.YAMLError:
                raise ConfigError(f"{where}: {value!r} is not a YAML list; write e.g. [a, b]") from None
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        (item_tp, *_) = typing.get_args(tp) or (Any,)
        items = [_coerce(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    return _coerce_scalar(value, tp, where)


def _coerce_scalar(value: Any, tp: Any, where: str) -> Any:
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if tp in (int, float):
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected {tp.__name__}, got a boolean")
        try:
            out = tp(value)
        except (TypeError, ValueError, OverflowError):
            raise ConfigError(f"{where}: expected {tp.__name__}, got {value!r}") from None
        if tp is int and isinstance(value, float) and not value.is_integer():
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return out
    if tp is str:
        if isinstance(value, dict | list):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return str(value)
    return value


def from_dict(cls: type[T], data: dict[str, Any], prefix: str = "") -> T:
    """Build dataclass `cls` from a nested dict, rejecting unknown keys by name."""
    types_ = _field_types(cls)
    unknown = sorted(map(str, set(data) - set(types_)))
    if unknown:
        where = f" in section '{prefix}'" if prefix else ""
        raise ConfigError(
            f"unknown config key(s) {unknown}{where}; valid keys are: {sorted(types_)}"
        )
    kwargs = {k: _coerce(v, types_[k], f"{prefix}.{k}" if prefix else k) for k, v in data.items()}
    try:
        return cls(**kwargs)
    except ValueError as e:  # a section's own checks (__post_init__) name the problem
        if isinstance(e, ConfigError):
            raise
        raise ConfigError(f"{prefix or cls.__name__}: {e}") from None


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain-dict (YAML-safe) view of a config tree; enums become their values."""

    def conv(v: Any) -> Any:
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            return {f.name: conv(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, enum.Enum):
            return v.value
        if isinstance(v, list | tuple):
            return [conv(x) for x in v]
        if isinstance(v, dict):
            return {k: conv(x) for k, x in v.items()}
        if isinstance(v, Path):
            return str(v)
        return v

    return conv(cfg)


def parse_override(text: str) -> tuple[list[str], Any]:
    """`a.b=c` -> (['a', 'b'], parsed c). The value is parsed as YAML (numbers, bools, lists)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like section.key=value")
    key, raw = text.split("=", 1)
    parts = key.strip().split(".")
    if not all(parts):
        raise ConfigError(f"override {text!r} has an empty key or section name")
    if not raw.strip():
        return parts, ""
    try:
        return parts, yaml.safe_load(raw)
    except yaml.YAMLError as e:
        problem = str(getattr(e, "problem", None) or e).splitlines()[0]
        raise ConfigError(f"override {text!r}: the value is not valid YAML ({problem}); quote it, e.g. "
                          f"--set \"{key.strip()}='...'\"") from None


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `a.b=c` strings onto a nested dict (schema checks happen in from_dict)."""
    for text in overrides:
        path, value = parse_override(text)
        node = data
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {text!r}: '{part}' is not a section")
        node[path[-1]] = value
    return data


def load_config(cls: type[T], path: str | Path | None = None, overrides: list[str] | None = None) -> T:
    """Defaults of `cls` <- YAML recipe at `path` <- `overrides` (list of `a.b=c`)."""
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"recipe {path} does not exist; pass --config with a YAML file under recipes/")
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"recipe {path} is not valid YAML: {' '.join(str(e).split())}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"recipe {path} must be a YAML mapping at the top level")
        data = loaded
    data = apply_overrides(data, list(overrides or []))
    return from_dict(cls, data)


def config_keys(cls: type, prefix: str = "") -> list[tuple[str, str, Any]]:
    """(dotted key, type name, default) of every leaf field of a config dataclass tree."""
    out: list[tuple[str, str, Any]] = []
    defaults = cls()
    for name, tp in _field_types(cls).items():
        key, value = f"{prefix}{name}", getattr(defaults, name)
        inner, _ = _unwrap_optional(tp)
        if dataclasses.is_dataclass(inner):
            out += config_keys(inner, key + ".")
            continue
        type_name = "|".join(str(m.value) for m in inner) if isinstance(inner, type) and issubclass(inner, enum.Enum) \
            else getattr(inner, "__name__", str(inner).replace("typing.", ""))
        out.append((key, type_name, to_dict(value)))
    return out


def config_help(cls: type) -> str:
    """Text listing every `--set` key of `cls` with its type and default (for argparse epilogs)."""
    rows = config_keys(cls)
    width = max(len(k) for k, _, _ in rows)
    return "config keys (--set KEY=VALUE):\n" + "\n".join(f"  {k:<{width}}  {t} = {d!r}" for k, t, d in rows)


def save_config(cfg: Any, path: str | Path) -> Path:
    """Write the resolved config as YAML (atomically); `load_config(type(cfg), path)` inverts it."""
    from jepa_common.io import atomic_write_text

    return atomic_write_text(Path(path), yaml.safe_dump(to_dict(cfg), sort_keys=False))
