"""config.json <-> Config: parse (every key checked, unknown keys refused), the effective values
as JSON, and settings addressed by their dotted keys ("daemon.limits.idle_timeout") for
`memnet config get/set`. Pure: memnet/config/file.py does the reading and writing."""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

from memnet.config import checks
from memnet.config.sections import Config
from memnet.errors import ConfigError
from memnet.governance.trust import TrustPolicy


@dataclass(frozen=True)
class Setting:
    key: str                 # dotted, as in config.json
    path: tuple[str, ...]    # attributes from Config down to it
    field: dataclasses.Field

    @property
    def live(self) -> bool:
        return self.field.metadata["live"]

    @property
    def doc(self) -> str:
        return self.field.metadata["doc"]


def _walk(cls: type, prefix: str = "", path: tuple[str, ...] = ()) -> Iterator[Setting]:
    for f in dataclasses.fields(cls):
        meta = f.metadata
        if "section" in meta:
            sub_prefix = prefix if meta["flat"] else f"{prefix}{f.name}."
            yield from _walk(meta["section"], sub_prefix, path + (f.name,))
        elif "check" in meta:
            yield Setting(prefix + f.name, path + (f.name,), f)


SETTINGS: dict[str, Setting] = {s.key: s for s in _walk(Config)}


def _level_keys(cls: type) -> set[str]:
    """The config.json keys of one object level: its settings, its sections, and the keys of
    its flat sections."""
    keys = set()
    for f in dataclasses.fields(cls):
        meta = f.metadata
        if meta.get("flat"):
            keys |= _level_keys(meta["section"])
        elif "section" in meta or "check" in meta:
            keys.add(f.name)
    return keys


def _parse(cls: type, raw: dict[str, Any], prefix: str) -> Any:
    unknown = sorted(set(raw) - _level_keys(cls))
    if unknown:
        where = f" {prefix.rstrip('.')}" if prefix else ""
        raise ConfigError(f"config.json: unknown{where} setting(s) {[str(k)[:40] for k in unknown[:8]]}")
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        meta = f.metadata
        if meta.get("flat"):
            values[f.name] = _parse(meta["section"], {k: v for k, v in raw.items()
                                                      if k in _level_keys(meta["section"])}, prefix)
        elif "section" in meta:
            key = prefix + f.name
            sub = raw.get(f.name, {})
            if sub is None and not prefix:  # "daemon": null at the top: the defaults
                sub = {}
            if not isinstance(sub, dict):
                raise ConfigError(f"config.json: {key} must be an object")
            values[f.name] = _parse(meta["section"], sub, key + ".")
        elif "check" in meta and f.name in raw:
            values[f.name] = meta["check"](raw[f.name], prefix + f.name)
    return cls(**values)


def parse(raw: Any) -> Config:
    """The typed config of a config.json object; ConfigError (one line, naming the key) if any
    key is unknown, of the wrong type or out of range."""
    if not isinstance(raw, dict):
        raise ConfigError("config.json must hold a JSON object")
    config = _parse(Config, raw, "")
    # the memory manager's promote_after is the planner's too
    return replace(config, ask=replace(config.ask, promote_after=config.lifecycle.promote_after))


def _json(value: Any) -> Any:
    if isinstance(value, TrustPolicy):
        return value.to_config()
    if isinstance(value, tuple):
        return list(value)
    return value


def value_of(config: Config, setting: Setting) -> Any:
    value: Any = config
    for name in setting.path:
        value = getattr(value, name)
    return _json(value)


def effective(config: Config) -> dict[str, Any]:
    """Every setting's value in force, keyed by its dotted key."""
    return {key: value_of(config, s) for key, s in SETTINGS.items()}


def lookup(key: str) -> Setting:
    setting = SETTINGS.get(key)
    if setting is None:
        near = [k for k in SETTINGS if k.startswith(key + ".")]
        hint = f" (it is a section: {', '.join(near[:6])}{', …' if len(near) > 6 else ''})" if near else \
            " (`memnet config show` lists them)"
        raise ConfigError(f"no setting {key[:80]!r}{hint}")
    return setting


UNSET = object()


def with_value(raw: dict[str, Any], key: str, value: Any) -> dict[str, Any]:
    """A copy of raw with one setting set (UNSET: removed, so its default applies)."""
    lookup(key)
    out = copy.deepcopy(raw)
    *parents, leaf = key.split(".")
    level = out
    for name in parents:
        nxt = level.get(name)
        if not isinstance(nxt, dict):
            if value is UNSET:
                return out
            nxt = level[name] = {}
        level = nxt
    if value is UNSET:
        level.pop(leaf, None)
    else:
        level[leaf] = value
    return out


def changed(old: Config, new: Config) -> list[Setting]:
    """The settings whose values differ."""
    return [s for s in SETTINGS.values() if value_of(old, s) != value_of(new, s)]


__all__ = ["SETTINGS", "Setting", "UNSET", "changed", "checks", "effective", "lookup", "parse", "value_of",
           "with_value"]
