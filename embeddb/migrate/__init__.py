"""Migrations: a folder of numbered SQL (or Python) files applied in order, on both backends.

Each migration runs in one transaction together with its row in the bookkeeping table
``embeddb_migrations``, so a failure leaves no trace and a fixed file simply applies next time.
"""

from .history import TABLE, current_version

__all__ = ["TABLE", "current_version"]
