"""The model layer: field types that behave the same on both backends, and base models.

- :class:`BaseModel`: a UUIDv7 primary key, ``created_at`` / ``updated_at`` kept in UTC.
- :class:`SoftDeleteModel`: ``delete_instance()`` hides the row instead of removing it.
- :class:`VersionedModel`: optimistic concurrency; saving a stale copy raises ConflictError.

Bind models to a database the peewee way: ``db.bind([User, Order])`` or ``Meta.database``.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterable
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any, Self

import peewee

from .errors import ConfigurationError, ConflictError, NotFoundError
from .ids import new_id

UTC = UTC


def utcnow() -> datetime:
    """The current time as an aware UTC datetime."""
    return datetime.now(UTC)


_UUID_NEW = object.__new__
_UUID_SET = object.__setattr__


def _uuid_from_hex(value: str) -> uuid.UUID:
    """uuid.UUID(hex) without re-validating a value the database already holds (2x faster)."""
    result = _UUID_NEW(uuid.UUID)
    _UUID_SET(result, "int", int(value, 16))
    _UUID_SET(result, "is_safe", uuid.SafeUUID.unknown)
    return result


class IdField(peewee.UUIDField):
    """A UUIDv7 primary key: unique across processes and sorted by creation time."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("primary_key", True)
        kwargs.setdefault("default", new_id)
        super().__init__(**kwargs)

    def python_value(self, value: Any) -> uuid.UUID | None:
        if isinstance(value, str) and len(value) == 32:
            return _uuid_from_hex(value)
        return super().python_value(value)


class UTCDateTimeField(peewee.Field):
    """An aware UTC datetime: ``timestamptz`` on PostgreSQL, sortable ISO-8601 text on SQLite.

    Naive datetimes are taken to be UTC; values come back aware, in UTC.
    """

    field_type = "TIMESTAMPTZ"
    _memo: tuple[Any, str | None] = (None, None)

    def db_value(self, value: Any) -> str | None:
        if value is None:
            return None
        memo = self._memo  # rows often repeat one datetime (created_at == updated_at)
        if memo[0] is value:
            return memo[1]
        if type(value) is datetime and value.tzinfo is UTC:
            text = value.isoformat(" ", "microseconds")
        else:
            text = self._to_text(value)
        if isinstance(value, datetime):
            UTCDateTimeField._memo = (value, text)
        return text

    def _to_text(self, value: Any) -> str:
        if isinstance(value, str):
            value = datetime.fromisoformat(value)
        elif isinstance(value, date) and not isinstance(value, datetime):
            value = datetime(value.year, value.month, value.day)
        if not isinstance(value, datetime):
            raise TypeError(f"{self.name}: expected a datetime, got {type(value).__name__}")
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        elif value.tzinfo is not UTC:
            value = value.astimezone(UTC)
        # Fixed width (always microseconds) keeps text order equal to time order.
        return value.isoformat(" ", "microseconds")

    def python_value(self, value: Any) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, str):
            value = datetime.fromisoformat(value)
        tz = value.tzinfo
        if tz is UTC:
            return value
        if tz is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


#: Built once: ``json.dumps`` with options makes a new encoder on every call.
_to_json = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


class JSONField(peewee.Field):
    """Any JSON-serialisable value: ``jsonb`` on PostgreSQL, TEXT on SQLite."""

    field_type = "JSON"

    def db_value(self, value: Any) -> str | None:
        if value is None:
            return None
        return _to_json(value)

    #: db_value for a value known not to be None, for generated row code (templates may use
    #: {v} the value, {x} and {u} scratch names, {w} the field's db_value)
    inline_write = ("_to_json({v})", {"_to_json": _to_json})

    def python_value(self, value: Any) -> Any:
        if isinstance(value, (str, bytes)):
            return json.loads(value)
        return value


_MINOR_LIMIT = 2**63  # BIGINT / SQLite INTEGER range


class MoneyField(peewee.Field):
    """An exact amount stored as integer minor units (cents for ``decimal_places=2``).

    Python sees :class:`~decimal.Decimal`. Floats are refused: ``0.1 + 0.2`` is not money.
    """

    field_type = "MONEY_MINOR"

    def __init__(self, decimal_places: int = 2, **kwargs: Any) -> None:
        self.decimal_places = decimal_places
        super().__init__(**kwargs)

    @property
    def inline_write(self) -> tuple[str, dict[str, Any]]:
        """db_value's Decimal case for generated row code (a value known not to be None), at
        the scale the field has when the code is built: anything it does not accept goes
        through db_value, which converts or says why not."""
        return (
            f"{{u}} if type({{v}}) is _Decimal and {{v}}.is_finite() and ({{u}} := int("
            f"{{x}} := {{v}}.scaleb({int(self.decimal_places)}))) == {{x}} and -_MINOR_LIMIT "
            f"< {{u}} < _MINOR_LIMIT else {{w}}({{v}})",
            {"_Decimal": Decimal, "_MINOR_LIMIT": _MINOR_LIMIT})

    def db_value(self, value: Any) -> int | None:
        if value is None:
            return None
        if type(value) is Decimal and value.is_finite():  # the common case, fewer steps
            minor = value.scaleb(self.decimal_places)
            units = int(minor)
            if units == minor and -_MINOR_LIMIT < units < _MINOR_LIMIT:
                return units
        if isinstance(value, (float, bool)) or not isinstance(value, (int, str, Decimal)):
            raise TypeError(
                f"{self.name}: money must be a Decimal, int or str, not {type(value).__name__}"
            )
        try:
            minor = Decimal(value).scaleb(self.decimal_places)
        except InvalidOperation:
            raise ValueError(f"{self.name}: {value!r} is not an amount") from None
        if not minor.is_finite():
            raise ValueError(f"{self.name}: {value!r} is not an amount")
        if abs(minor) >= _MINOR_LIMIT:
            raise ValueError(f"{self.name}: {value} is too large for this field "
                             f"({self.decimal_places} decimal places in a 64-bit integer)")
        if minor != minor.to_integral_value():
            raise ValueError(
                f"{self.name}: {value} has more than {self.decimal_places} decimal places"
            )
        return int(minor)

    def python_value(self, value: Any) -> Decimal | None:
        if value is None:
            return None
        return Decimal(int(value)).scaleb(-self.decimal_places)


class MadeOnFirstUse:
    """A per-object attribute created on first read (``factory()``), for what peewee gives every
    object (``_dirty``, ``__rel__``) but most loaded objects never touch: objects made from rows
    skip making them (a non-data descriptor: once made, the object's own value is found
    first)."""

    def __init__(self, name: str, factory: Callable[[], Any]) -> None:
        self.name = name
        self.factory = factory

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        if obj is None:
            return self
        value = obj.__dict__[self.name] = self.factory()
        return value


_MADE_ON_FIRST_USE = (MadeOnFirstUse("_dirty", set), MadeOnFirstUse("__rel__", dict))


class _ModelBase(peewee.ModelBase):
    """Makes each model's ``DoesNotExist`` an :class:`~embeddb.errors.NotFoundError` too, and
    its objects' ``_dirty`` and ``__rel__`` made on first use (peewee sets ``__rel__`` to None on
    every class it builds, so this comes after)."""

    def __new__(mcs, name: str, bases: tuple[type, ...], attrs: dict[str, Any]) -> Any:
        cls = super().__new__(mcs, name, bases, attrs)
        for made in _MADE_ON_FIRST_USE:
            setattr(cls, made.name, made)
        if not issubclass(cls.DoesNotExist, NotFoundError):
            cls.DoesNotExist = type(
                cls.DoesNotExist.__name__,
                (cls.DoesNotExist, NotFoundError),
                {"__module__": cls.__module__},
            )
        return cls


class BaseModel(peewee.Model, metaclass=_ModelBase):
    """Base for application models: UUIDv7 ``id`` and UTC audit timestamps.

    ``save()`` inserts a new instance and updates a loaded one, even though the id is assigned
    up front (plain peewee would issue an UPDATE that matches nothing).
    """

    id = IdField()
    created_at = UTCDateTimeField(default=utcnow)
    updated_at = UTCDateTimeField(default=utcnow)
    if TYPE_CHECKING:  # peewee's, missing from its type stubs
        DoesNotExist: type[NotFoundError]
        _pk: Any
        _dirty: set[str]

        @classmethod
        def _normalize_data(cls, data: Any, kwargs: dict[str, Any]) -> dict[Any, Any]: ...

        def _prune_fields(self, field_dict: dict[str, Any], only: Any) -> dict[str, Any]: ...

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._persisted = bool(kwargs.get("__no_default__"))  # peewee's marker for loaded rows
        super().__init__(*args, **kwargs)

    def save(self, force_insert: bool = False, only: Iterable[Any] | None = None) -> int:
        if force_insert or not self._persisted:
            rows = super().save(force_insert=True, only=only)
        else:
            self.updated_at = utcnow()
            if only is not None:
                only = [*only, type(self).updated_at]
            rows = super().save(only=only)
        self._persisted = True
        return rows

    @classmethod
    def update(cls, __data: Any = None, **update: Any) -> peewee.ModelUpdate:
        """An UPDATE query that also stamps ``updated_at`` unless the caller sets it."""
        data = cls._normalize_data(__data, update)
        data.setdefault(cls.updated_at, utcnow())
        return peewee.ModelUpdate(cls, data)


class SoftDeleteModel(BaseModel):
    """Rows are hidden, not removed: ``select()``/``get()`` skip rows whose ``deleted_at`` is set.

    ``select_with_deleted()`` and ``deleted()`` reach hidden rows; ``restore()`` brings one back;
    ``delete_instance(permanent=True)`` really deletes. Class-level ``delete()`` and joins from
    other models are plain SQL and do not filter.
    """

    deleted_at = UTCDateTimeField(null=True)

    @classmethod
    def select(cls, *fields: Any) -> peewee.ModelSelect[Self]:
        return super().select(*fields).where(cls.deleted_at.is_null())

    @classmethod
    def select_with_deleted(cls, *fields: Any) -> peewee.ModelSelect[Self]:
        return super().select(*fields)

    @classmethod
    def deleted(cls, *fields: Any) -> peewee.ModelSelect[Self]:
        """Only the soft-deleted rows."""
        return cls.select_with_deleted(*fields).where(cls.deleted_at.is_null(False))

    @property
    def is_deleted(self) -> bool:
        return self.deleted_at is not None

    def delete_instance(  # type: ignore[override]  # adds ``permanent`` before peewee's options
        self, permanent: bool = False, **kwargs: Any
    ) -> int:
        if permanent:
            return super().delete_instance(**kwargs)
        self.deleted_at = utcnow()
        return self.save(only=[type(self).deleted_at])

    def restore(self) -> int:
        self.deleted_at = None
        return self.save(only=[type(self).deleted_at])


class VersionedModel(BaseModel):
    """Optimistic concurrency: every update checks and bumps ``version``.

    Saving an instance whose row was changed (or deleted) since it was read raises
    :class:`~embeddb.errors.ConflictError` and writes nothing; reload and try again.
    """

    version = peewee.IntegerField(default=1)

    @classmethod
    def update(cls, __data: Any = None, **update: Any) -> peewee.ModelUpdate:
        """Class-level UPDATEs bump ``version`` too, so a copy read before them conflicts."""
        query = super().update(__data, **update)
        query._update.setdefault(cls.version, cls.version + 1)  # type: ignore[attr-defined]
        return query

    def save(self, force_insert: bool = False, only: Iterable[Any] | None = None) -> int:
        if force_insert or not self._persisted:
            return super().save(force_insert=True, only=only)
        cls = type(self)
        expected = self.version
        self.updated_at = utcnow()
        data = dict(self.__data__)
        data.pop(primary_key(cls).name, None)
        if only is not None:
            data = self._prune_fields(data, [*only, cls.updated_at])
        data["version"] = expected + 1
        rows = (
            cls.update(**data)
            .where((cls._meta.primary_key == self._pk) & (cls.version == expected))
            .execute()
        )
        if rows == 0:
            raise ConflictError(
                f"{cls.__name__} {self._pk} was changed or deleted since it was read "
                f"(expected version {expected}): reload it and retry"
            )
        self.version = expected + 1
        self._dirty.clear()
        return rows


def primary_key(model: type[peewee.Model]) -> peewee.Field:
    """The primary key field of ``model`` (every embeddb model has one).

    :raises ConfigurationError: the model has none (a composite or no key).
    """
    field = model._meta.primary_key
    if field is False:
        raise ConfigurationError(f"{model.__name__} has no single-column primary key")
    return field


__all__ = [
    "BaseModel",
    "IdField",
    "JSONField",
    "MoneyField",
    "SoftDeleteModel",
    "UTCDateTimeField",
    "VersionedModel",
    "new_id",
    "primary_key",
    "utcnow",
]
