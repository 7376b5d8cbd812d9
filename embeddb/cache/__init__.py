"""The cache tier: L1 in process memory, L2 (diskcache) shared by the processes of a machine,
and optionally Redis shared by many machines (:mod:`embeddb.cache.remote`).

Entry points:

- :class:`Cache` (``Cache.for_database(db)``): get / set / delete, ``get_or_set`` (read-through,
  stampede-protected), ``invalidate`` and ``invalidate_after_commit`` (keys and tags, O(1)),
  ``refresh_after_commit`` (write-through), ``memoize``, ``warm``, ``stats``, ``clear``,
  ``get_row`` / ``get_instance`` / ``get_or_set_query`` for models.
- :class:`CacheInvalidation`: a model mixin whose writes invalidate what they change, after the
  transaction commits.

Freshness: every entry carries the generation counters of its key and tags, read before its
value was loaded; invalidations bump those counters in a file every process maps. So once a
write's transaction has returned, no process serves the value from before it, from L1 or L2.
With Redis, the counters live there too and every machine applies a bump before the write
returns: the same promise across machines, while Redis is reachable.
"""

from .families import DEFAULT_TTLS
from .models import CacheInvalidation, list_tag, model_tag, query_tags, row_key
from .tiered import Cache

__all__ = [
    "DEFAULT_TTLS",
    "Cache",
    "CacheInvalidation",
    "list_tag",
    "model_tag",
    "query_tags",
    "row_key",
]
