"""Per-tier counters: hits, misses, sets, evictions, errors and the hit ratio.

Counters are plain integers updated without a lock: under heavy threading a count can be off
by a few, which statistics tolerate and a lock on every hit would not.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass
class TierStats:
    """What one tier (L1 or L2) has seen since the cache was created or reset."""

    hits: int = 0
    misses: int = 0
    sets: int = 0
    evictions: int = 0
    errors: int = 0
    stale: int = 0  # entries found but invalidated by a newer generation

    @property
    def hit_ratio(self) -> float:
        lookups = self.hits + self.misses
        return round(self.hits / lookups, 4) if lookups else 0.0

    def as_dict(self) -> dict[str, float]:
        return {**asdict(self), "hit_ratio": self.hit_ratio}

    def reset(self) -> None:
        for name in asdict(self):
            setattr(self, name, 0)


@dataclass
class LoadStats:
    """What happened on misses: loader runs, waits behind another loader, refused stores."""

    loads: int = 0
    lock_waits: int = 0
    races: int = 0  # values not stored because an invalidation landed while they loaded
    bypassed: int = 0  # reads served straight from the loader (in a transaction, cache broken)

    def as_dict(self) -> dict[str, int]:
        return asdict(self)

    def reset(self) -> None:
        for name in asdict(self):
            setattr(self, name, 0)
