"""Exact record-time arithmetic in integer microseconds.

Scan's record times carry microseconds and neighbouring updates can be 1 us apart, so every
cursor computation here stays in integers: a float or a millisecond type loses rows (see
field-lessons.md, lesson 1).
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ISO = re.compile(r"^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(Z|[+-]\d{2}:\d{2})$")
_DAYS_TO_EPOCH = (datetime(1970, 1, 1) - datetime(1, 1, 1)).days
DAY_US = 86_400_000_000
MIN_US = -_DAYS_TO_EPOCH * 86_400_000_000  # 0001-01-01T00:00:00Z, Scan's import-update time
EPOCH_DAY = date(1970, 1, 1)


def utc_day(t_us: int) -> date:
    """The UTC day of a record time (import updates, at MIN_US, fall on 0001-01-01)."""
    return EPOCH_DAY + timedelta(days=t_us // DAY_US)


class TimestampError(ValueError):
    """A timestamp that is not an ISO-8601 UTC date-time."""


def parse_us(text: str) -> int:
    """Microseconds since the Unix epoch of an ISO-8601 string, exactly (no float on the way)."""
    m = _ISO.match(text)
    if m is None:
        raise TimestampError(f"not an ISO-8601 date-time: {text!r}")
    year, month, day, hh, mm, ss, frac, tz = m.groups()
    if frac and len(frac) > 6 and int(frac[6:]) != 0:
        raise TimestampError(f"sub-microsecond precision is not representable: {text!r}")
    try:
        base = datetime(int(year), int(month), int(day), int(hh), int(mm), int(ss))
    except ValueError as exc:
        raise TimestampError(f"invalid date-time {text!r}: {exc}") from None
    days = (base - datetime(1970, 1, 1)).days
    secs = days * 86400 + base.hour * 3600 + base.minute * 60 + base.second
    micros = int((frac or "0")[:6].ljust(6, "0"))
    us = secs * 1_000_000 + micros
    if tz != "Z":
        sign = 1 if tz[0] == "+" else -1
        us -= sign * (int(tz[1:3]) * 3600 + int(tz[4:6]) * 60) * 1_000_000
    return us


def format_us(us: int) -> str:
    """The Scan record-time form: always 6 fractional digits and `Z`."""
    secs, micros = divmod(us, 1_000_000)
    dt = datetime(1970, 1, 1) + timedelta(seconds=secs)
    return f"{dt.year:04d}-{dt.month:02d}-{dt.day:02d}T{dt:%H:%M:%S}.{micros:06d}Z"


def format_instant(us: int) -> str:
    """Java `Instant.toString`: fraction in groups of 3 digits (0, 3 or 6), as in `effective_at`."""
    secs, micros = divmod(us, 1_000_000)
    dt = datetime(1970, 1, 1) + timedelta(seconds=secs)
    head = f"{dt.year:04d}-{dt.month:02d}-{dt.day:02d}T{dt:%H:%M:%S}"
    if micros == 0:
        return head + "Z"
    if micros % 1000 == 0:
        return f"{head}.{micros // 1000:03d}Z"
    return f"{head}.{micros:06d}Z"


def format_trimmed(us: int) -> str:
    """An ISO instant with trailing zeros of the fraction trimmed (`.5528`, `.13`, none at all), as
    Scan prints `created_at` and migration-info's `min`/`max`: parse such strings, never echo them."""
    secs, micros = divmod(us, 1_000_000)
    dt = datetime(1970, 1, 1) + timedelta(seconds=secs)
    head = f"{dt.year:04d}-{dt.month:02d}-{dt.day:02d}T{dt:%H:%M:%S}"
    frac = f"{micros:06d}".rstrip("0")
    return f"{head}.{frac}Z" if frac else head + "Z"


def us_to_dt(us: int) -> datetime:
    """A timezone-aware datetime holding exactly `us` (datetime has microsecond resolution)."""
    return EPOCH + timedelta(microseconds=us)


def dt_to_us(dt: datetime) -> int:
    delta = dt - EPOCH
    return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds


def now_us() -> int:
    """The wall clock in microseconds since the epoch (for "now" in a command, never for a cursor)."""
    return dt_to_us(datetime.now(UTC))
