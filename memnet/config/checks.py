"""Value checks for config.json settings: each takes the raw JSON value and the setting's key
(dotted, as the user writes it) and returns the value to use, or raises ConfigError with one
line naming the key and what is allowed. Pure: no I/O, no libp2p (the CLI reads the config for
every command, so parsing it must stay cheap)."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

import multiaddr

from memnet.errors import ConfigError, FormatError, UsageError

Check = Callable[[Any, str], Any]
MAX_SHOWN = 32  # characters of a bad value repeated in an error
MAX_ADDRS = 64

_AMOUNT = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*")
SIZE_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3,
              "gb": 1000**3, "t": 1000**4, "tb": 1000**4, "kib": 1024, "mib": 1024**2,
              "gib": 1024**3, "tib": 1024**4}
SECOND_UNITS = {"": 1, "s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def fail(key: str, what: str) -> ConfigError:
    return ConfigError(f"config.json: {key} {what}")


def shown(value: Any) -> str:
    return repr(value if not isinstance(value, str) else value[:MAX_SHOWN])[:MAX_SHOWN + 2]


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


# -- building blocks ---------------------------------------------------------------------------

def flag(value: Any, key: str) -> bool:
    if not isinstance(value, bool):
        raise fail(key, f"must be true or false, not {shown(value)}")
    return value


def whole(low: int, high: int | None = None, what: str = "") -> Check:
    """An integer in [low, high] (high None: no upper bound)."""
    span = f"from {low} to {high}" if high is not None else f"at least {low}"

    def check(value: Any, key: str) -> int:
        if not is_int(value) or value < low or (high is not None and value > high):
            raise fail(key, f"must be a whole number{what}, {span}")
        return value
    return check


count = whole(1)


def version(supported: int) -> Check:
    def check(value: Any, key: str) -> int:
        if not is_int(value) or value != supported:
            raise fail(key, f"is {shown(value)}: this memnet reads version {supported} config files")
        return value
    return check


def number(low: float = 0.0, high: float | None = None, *, above: bool = False, what: str = "") -> Check:
    """A finite number >= low (> low with above) and <= high."""
    def check(value: Any, key: str) -> float:
        if not is_number(value) or value < low or (above and value == low) or (high is not None and value > high):
            bound = f"above {low:g}" if above else f"at least {low:g}"
            raise fail(key, f"must be a finite number{what}, {bound}" + (f" and at most {high:g}" if high is not None else ""))
        return value
    return check


rate = number()                                   # 0 means "no cap"
seconds = number(0.0, above=True, what=" of seconds")


def choice(*allowed: str) -> Check:
    def check(value: Any, key: str) -> str:
        if value not in allowed:
            raise fail(key, f"must be {' or '.join(repr(a) for a in allowed)}, not {shown(value)}")
        return value
    return check


def optional(inner: Check) -> Check:
    """null, or what inner accepts."""
    def check(value: Any, key: str) -> Any:
        return None if value is None else inner(value, key)
    return check


def host_port(value: Any, key: str) -> str:
    """"HOST:PORT" for a TCP listener: an IPv4 address or a name, or [IPv6]; port 0-65535."""
    if isinstance(value, str):
        host, sep, port = value.rpartition(":")
        host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
        if sep and host and port.isdigit() and int(port) <= 65535 and " " not in host and len(value) <= 300:
            return value
    raise fail(key, 'must be "HOST:PORT", such as "127.0.0.1:8377"')


def text(max_len: int = 4096) -> Check:
    def check(value: Any, key: str) -> str:
        if not isinstance(value, str) or not value.strip() or len(value) > max_len:
            raise fail(key, f"must be a non-empty string of at most {max_len} characters")
        return value
    return check


def _amount(value: Any, key: str, units: dict[str, int], what: str) -> int:
    if is_int(value):
        amount, unit = value, ""
    elif isinstance(value, str) and len(value) <= MAX_SHOWN and (match := _AMOUNT.fullmatch(value)):
        amount, unit = float(match[1]), match[2].lower()
    else:
        amount, unit = None, None
    if amount is None or unit not in units or amount < 0:
        raise fail(key, f"must be {what}, not {shown(value)}")
    return int(amount * units[unit])


def size(value: Any, key: str) -> int:
    """Bytes from an int or text like "512 MiB" or "2GB"."""
    return _amount(value, key, SIZE_UNITS, 'a byte count such as 1073741824 or "1 GiB"')


def duration(value: Any, key: str) -> int:
    """Seconds (above 0) from an int or text like "30d", "12h", "15 min"."""
    seconds_ = _amount(value, key, SECOND_UNITS, 'a number of seconds such as 86400 or "30d"')
    if seconds_ <= 0:
        raise fail(key, "must be more than 0 seconds")
    return seconds_


def interval(value: Any, key: str) -> float:
    """Seconds above 0 as a number, or text like "2 min"."""
    if isinstance(value, str):
        value = duration(value, key)
    if not is_number(value) or value <= 0:
        raise fail(key, "must be a number of seconds above 0")
    return float(value)


def below(limit: float, what: str, inner: Check) -> Check:
    def check(value: Any, key: str) -> Any:
        value = inner(value, key)
        if value >= limit:
            raise fail(key, f"must be below {what}")
        return value
    return check


# -- addresses ---------------------------------------------------------------------------------

def _multiaddr(text_: str, key: str) -> multiaddr.Multiaddr:
    try:
        return multiaddr.Multiaddr(text_.strip())
    except Exception:  # multiaddr raises several unrelated types for bad text
        raise fail(key, f"has an entry that is not a multiaddr: {text_[:120]!r}") from None


def _addr_list(value: Any, key: str) -> tuple[str, ...]:
    if not isinstance(value, (list, tuple)) or not all(isinstance(a, str) for a in value) \
            or len(value) > MAX_ADDRS:
        raise fail(key, f"must be a list of at most {MAX_ADDRS} multiaddrs")
    return tuple(value)


def listen_addrs(value: Any, key: str) -> tuple[str, ...]:
    addrs = _addr_list(value, key)
    for addr in addrs:
        _multiaddr(addr, key)
    return addrs


def peer_addrs(value: Any, key: str) -> tuple[str, ...]:
    """Dialable peers: multiaddrs ending in /p2p/PEERID."""
    from memnet.cube import keys as cube_keys

    addrs = _addr_list(value, key)
    for addr in addrs:
        parsed = _multiaddr(addr, key)
        try:
            peer = parsed.value_for_protocol("p2p")
        except Exception:
            peer = None
        if not peer:
            raise fail(key, f"needs /p2p/PEERID at the end of {addr[:120]!r}")
        try:
            cube_keys.author_from_peer_id(peer)
        except FormatError:
            raise fail(key, f"has a bad PeerID in {addr[:120]!r}") from None
    return addrs


def layer_range(value: Any, key: str) -> str:
    """"A:B" with 0 <= A < B: layers [A, B) of a model."""
    if isinstance(value, str):
        start, sep, end = value.partition(":")
        if sep and start.strip().isdigit() and end.strip().isdigit() and int(start) < int(end):
            return f"{int(start)}:{int(end)}"
    raise fail(key, f"must be \"A:B\" with whole numbers 0 <= A < B (layers A to B-1), not {shown(value)}")


def hivemind_addrs(value: Any, key: str) -> tuple[str, ...]:
    """hivemind multiaddrs (p2pd's own; /p2p/PEERID allowed)."""
    return listen_addrs(value, key)


# -- trust -------------------------------------------------------------------------------------

def trust(value: Any, key: str):
    """The "trust" object: action -> list of entries ("self", "*" or a PeerID)."""
    from memnet.governance.trust import ACTIONS, MAX_ENTRIES, TrustPolicy, check_entry

    if not isinstance(value, dict):
        raise fail(key, "must be an object of action -> list of entries")
    unknown = sorted(set(value) - set(ACTIONS))
    if unknown:
        raise fail(key, f"has unknown trust action(s) {unknown}; known: {', '.join(ACTIONS)}")
    lists = {}
    for action, entries in value.items():
        if not isinstance(entries, list) or len(entries) > MAX_ENTRIES:
            raise fail(f"{key}.{action}", f"must be a list of at most {MAX_ENTRIES} entries")
        try:
            lists[action] = tuple(dict.fromkeys(check_entry(e) for e in entries))
        except UsageError as exc:
            raise fail(f"{key}.{action}", f"has a bad entry: {exc}") from None
    return TrustPolicy(**lists)
