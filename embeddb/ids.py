"""Time-ordered unique ids (UUID version 7, RFC 9562).

48 bits of Unix milliseconds, a 12-bit counter that keeps ids from one process strictly
increasing within a millisecond, and 62 random bits that keep processes and machines apart.
They sort by creation time as text (SQLite) and as ``uuid`` (PostgreSQL), so inserts append to
the primary-key index instead of scattering like UUID4.
"""

from __future__ import annotations

import os
import threading
import time
import uuid

_lock = threading.Lock()
_last_ms = 0
_counter = 0
_COUNTER_MAX = 0xFFF


def new_id() -> uuid.UUID:
    """A new UUIDv7, greater than every id this process made before."""
    global _last_ms, _counter
    now = time.time_ns() // 1_000_000
    with _lock:
        if now > _last_ms:
            _last_ms = now
            # Start low in the counter's range so a burst within one millisecond has room.
            _counter = int.from_bytes(os.urandom(2), "big") & 0x1FF
        else:
            _counter += 1
            if _counter > _COUNTER_MAX:  # more than ~3,500 ids in one ms: borrow the next ms
                _last_ms += 1
                _counter = 0
        ms, counter = _last_ms, _counter
    rand = int.from_bytes(os.urandom(8), "big") & ((1 << 62) - 1)
    value = (ms << 80) | (0x7 << 76) | (counter << 64) | (0b10 << 62) | rand
    return uuid.UUID(int=value)


def id_time(value: uuid.UUID) -> float:
    """The Unix time (seconds) a UUIDv7 was made at."""
    return (value.int >> 80) / 1000.0
