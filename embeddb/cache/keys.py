"""The names the cache gives a model's rows and queries: key family, row key, tags.

For a model ``M`` (table ``t``) in family ``M.cache_family`` (the default family otherwise):
a row is keyed ``t:<pk>`` and tagged ``model:t``; a cached query over ``M`` is tagged ``list:t``.
"""

from __future__ import annotations

import uuid
from typing import Any

import peewee

from ..models import primary_key


def table_of(model: type[peewee.Model]) -> str:
    return model._meta.table_name


def family_of(model: type[peewee.Model]) -> str | None:
    """The key family of ``model``'s rows: its ``cache_family`` attribute, if any."""
    return getattr(model, "cache_family", None)


def row_prefix(model: type[peewee.Model]) -> str:
    """What every row key of ``model`` starts with."""
    return f"{table_of(model)}:"


def uuid_keyed(field: peewee.Field) -> bool:
    """Whether the Python values of ``field`` are UUIDs (keyed by their hex)."""
    return isinstance(field, (peewee.UUIDField, peewee.BinaryUUIDField))


class NoKey(uuid.UUID):
    """A type no primary key has (never made): what a "keys of this type are UUIDs" test is
    given for a field whose keys are not (they go through the field's own conversion)."""


def pk_text(field: peewee.Field, pk: Any) -> str:
    """The primary key ``pk`` of ``field`` as key text, equal for every spelling of it."""
    if isinstance(pk, uuid.UUID):
        # a text key holding str(uuid) is spelt as its rows have it, so that the key its
        # objects carry (the text) and a UUID naming the same row meet in one entry
        return pk.hex if uuid_keyed(field) else str(pk)
    if isinstance(field, peewee.UUIDField) and isinstance(pk, str):
        return pk.replace("-", "").lower()
    if isinstance(field, peewee.IntegerField) and isinstance(pk, str):
        return str(int(pk))
    return str(pk)


def row_key(model: type[peewee.Model], pk: Any) -> str:
    """The cache key of one row; equal for every spelling of the same primary key."""
    return row_prefix(model) + pk_text(primary_key(model), pk)


def model_tag(model: type[peewee.Model]) -> str:
    """Tag on every cached row of ``model``."""
    return f"model:{table_of(model)}"


def list_tag(model: type[peewee.Model]) -> str:
    """Tag on every cached query result over ``model``."""
    return f"list:{table_of(model)}"


def query_tags(*models: type[peewee.Model]) -> list[str]:
    """Tags for a cached query result that reads ``models``."""
    return [list_tag(m) for m in models]
