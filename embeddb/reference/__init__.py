"""The reference application: a web3 service marketplace that exercises every part of embeddb.

Its schema ships as numbered migrations in ``embeddb/reference/migrations`` (``./migrations``
in the repository links there), its seed sets in ``embeddb/reference/seeds``, its models in
:mod:`embeddb.reference.models`, its domain queries in :mod:`embeddb.reference.repositories`.
"""

from pathlib import Path

#: The reference schema's migrations and seed sets, installed with the package.
MIGRATIONS = Path(__file__).parent / "migrations"
SEEDS = Path(__file__).parent / "seeds"
