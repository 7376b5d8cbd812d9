"""The reference application: a web3 service marketplace that exercises every part of embeddb.

Its schema ships as numbered migrations in the repository's ``migrations/`` folder, its models
in :mod:`embeddb.reference.models`, its domain queries in :mod:`embeddb.reference.repositories`.
"""
