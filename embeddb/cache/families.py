"""Key families: a name that prefixes keys and gives them a default time to live.

The defaults follow how fast each kind of data changes and how costly a stale read would be
(staleness here only matters for writes the cache cannot see, e.g. from another machine; writes
through embeddb invalidate at once).
"""

from __future__ import annotations

DEFAULT_FAMILY = "default"

DEFAULT_TTLS: dict[str, float] = {
    # Sessions are checked on every request and change on login/logout only.
    "sessions": 3600.0,
    # Profiles change rarely; five minutes bounds what a write from elsewhere can leave behind.
    "users": 300.0,
    # Marketplace listings: edited by providers, read constantly.
    "services": 60.0,
    # Prices move; a quote older than ten seconds is not worth showing.
    "prices": 10.0,
    # Portfolios are recomputed from prices and balances.
    "portfolios": 30.0,
    # Tool schemas are versioned artefacts and change on deploys.
    "tool_schemas": 86400.0,
    # Anything else.
    DEFAULT_FAMILY: 300.0,
}
