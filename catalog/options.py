"""Parsing of option values (attach, mount and storage options): one place, one wording."""

from __future__ import annotations

import math
from collections.abc import Mapping

from catalog.exceptions import InvalidOptionError


def seconds_option(options: Mapping[str, str], key: str, default: float | None, *,
                   minimum: float, maximum: float, zero_ok: bool = False) -> float | None:
    """``options[key]`` as finite seconds (``30`` or ``30s``) within ``[minimum, maximum]``
    (or 0 when ``zero_ok``); ``default`` when absent."""
    raw = options.get(key)
    if raw is None:
        return default
    try:
        value = float(str(raw).strip().rstrip("s"))
    except ValueError as e:
        raise InvalidOptionError(f"{key} must be seconds, got '{raw}'") from e
    if not math.isfinite(value):
        raise InvalidOptionError(f"{key} must be a finite number of seconds, got '{raw}'")
    if not (minimum <= value <= maximum or (zero_ok and value == 0)):
        also = " (0 disables)" if zero_ok else ""
        raise InvalidOptionError(
            f"{key} must be between {minimum:g} and {maximum:g} seconds{also}, got '{raw}'")
    return value
