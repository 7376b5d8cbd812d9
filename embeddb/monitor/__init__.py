"""See every query: statistics per statement, slow log, N+1 detection, EXPLAIN and advice.

Off by default; on with ``connect(url, monitor=True)``, ``?monitor=1``, ``$EMBEDDB_MONITOR`` or
``[monitor] enabled = true`` in embeddb.toml (``"strict"``: N+1 findings raise). Then
``db.monitor.stats()``, ``db.monitor.slow_queries()``, ``with db.monitor.unit("name"):``.
"""

from .core import Monitor, Query, QueryLog, assert_max_queries
from .nplusone import Finding, NPlusOneWarning
from .statements import fingerprint, normalize

__all__ = ["Finding", "Monitor", "NPlusOneWarning", "Query", "QueryLog", "assert_max_queries", "fingerprint",
           "normalize"]
