"""The daemon's control commands: an explicit table of named commands, each with a frozen
dataclass of typed arguments that a request's args map is checked against before its handler
runs. A request with an unknown command, an unknown or missing argument, or a value of the
wrong type is answered with one line naming what is wrong; the handler never sees it.

A service offers its commands from commands(); the daemon gathers them into one table.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from memnet.errors import UsageError

Progress = Callable[[int, int], None]
MAX_LIST = 4096       # items in any list argument
MAX_TEXT = 4096       # characters in any string argument
MAX_DEPTH = 3


@dataclass(frozen=True)
class NoArgs:
    """For commands that take no arguments."""


@dataclass(frozen=True)
class Command:
    name: str
    handler: Callable[[Any, Progress], Awaitable[Any]]  # (typed args, progress) -> result
    args: type = NoArgs  # a frozen dataclass; dict: the handler takes the map as sent and checks it
    doc: str = ""


class Table:
    def __init__(self, commands: Iterable[Command] = ()):
        self._commands: dict[str, Command] = {}
        for command in commands:
            self.add(command)

    def add(self, command: Command) -> None:
        if command.name in self._commands:
            raise ValueError(f"two daemon commands named {command.name!r}")
        self._commands[command.name] = command

    def names(self) -> list[str]:
        return sorted(self._commands)

    def resolve(self, name: Any, raw_args: Any) -> tuple[Command, Any]:
        """The command and its checked arguments; UsageError with one line otherwise."""
        command = self._commands.get(name) if isinstance(name, str) else None
        if command is None:
            raise UsageError(f"unknown daemon command {str(name)[:40]!r}")
        return command, parse_args(command, raw_args)

    async def run(self, name: Any, raw_args: Any, progress: Progress | None = None) -> Any:
        command, args = self.resolve(name, raw_args)
        return await command.handler(args, progress or _ignore)


def _ignore(done: int, total: int) -> None:
    pass


def parse_args(command: Command, raw: Any) -> Any:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise UsageError(f"{command.name}: arguments must be a map of names to values, not "
                         f"{type(raw).__name__}")
    if command.args is dict:
        return raw
    hints = typing.get_type_hints(command.args)
    fields = {f.name: f for f in dataclasses.fields(command.args)}
    unknown = sorted(str(k)[:40] for k in raw if k not in fields)
    if unknown:
        raise UsageError(f"{command.name}: unknown argument(s) {unknown}")
    values = {}
    for name, f in fields.items():
        if name in raw:
            values[name] = _check(raw[name], hints[name], f"{command.name}: {name}", 0)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise UsageError(f"{command.name}: missing argument {name!r}")
    return command.args(**values)


def _describe(kind: Any) -> str:
    return getattr(kind, "__name__", None) or str(kind).replace("typing.", "")


def _check(value: Any, kind: Any, where: str, depth: int) -> Any:
    """value if it is of the (limited) type kind, else UsageError naming where."""
    if kind is Any:
        return value
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(kind):
            if option is type(None) and value is None:
                return None
        for option in typing.get_args(kind):
            if option is not type(None):
                try:
                    return _check(value, option, where, depth)
                except UsageError:
                    continue
        raise UsageError(f"{where} must be {_describe(kind)}")
    if origin is list:
        (item,) = typing.get_args(kind)
        if not isinstance(value, list) or len(value) > MAX_LIST or depth >= MAX_DEPTH:
            raise UsageError(f"{where} must be a list of at most {MAX_LIST} items")
        return [_check(v, item, f"{where}[{i}]", depth + 1) for i, v in enumerate(value)]
    if origin is dict:
        key_kind, value_kind = typing.get_args(kind)
        if not isinstance(value, dict) or len(value) > MAX_LIST or depth >= MAX_DEPTH:
            raise UsageError(f"{where} must be a map")
        return {_check(k, key_kind, where, depth + 1): _check(v, value_kind, f"{where}.{k}", depth + 1)
                for k, v in value.items()}
    if kind is bool:
        ok = isinstance(value, bool)
    elif kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif kind is str:
        ok = isinstance(value, str) and len(value) <= MAX_TEXT
    elif kind is bytes:
        ok = isinstance(value, bytes)
    else:
        raise TypeError(f"daemon command argument type {kind!r} is not supported")
    if not ok:
        raise UsageError(f"{where} must be {_describe(kind)}, not {type(value).__name__}")
    return value
