"""Subclasses of embeddb's fields that change ``db_value`` are written the way they say by
every repository write (create, bulk_create, upsert, upsert_many, upsert_batches): the
generated row code inlines only embeddb's own conversions, never one a subclass replaced."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import peewee
import pytest

from embeddb.models import BaseModel, JSONField, MoneyField
from embeddb.repository import Repository


class SealedJSONField(JSONField):
    """JSON behind an ``enc:`` prefix, as an encrypting subclass would store it."""

    field_type = "TEXT"  # not valid JSON: jsonb would refuse it

    def db_value(self, value: Any) -> str | None:
        text = super().db_value(value)
        return None if text is None else "enc:" + text

    def python_value(self, value: Any) -> Any:
        if value is None:
            return None
        if not value.startswith("enc:"):
            raise ValueError(f"not sealed: {value!r}")
        return super().python_value(value[4:])


class TenthsMoneyField(MoneyField):
    """Money stored at ten times the declared scale (another scale than the base class's)."""

    def db_value(self, value: Any) -> int | None:
        units = super().db_value(value)
        return None if units is None else units * 10

    def python_value(self, value: Any) -> Decimal | None:
        return None if value is None else super().python_value(int(value) // 10)


class ThousandthsMoneyField(MoneyField):
    """Keeps MoneyField's db_value but sets its scale after ``__init__``."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.decimal_places = 3


class Vault(BaseModel):
    sku = peewee.TextField(unique=True)
    secret = SealedJSONField(null=True)
    price = TenthsMoneyField(null=True)
    fine = ThousandthsMoneyField(null=True)


SECRET = {"a": 1}
PRICE = Decimal("12.34")
FINE = Decimal("1.23")
#: what each field's own db_value makes of the values above
STORED = ('enc:{"a":1}', 12340, 1230)


@pytest.fixture
def repo(db):
    db.bind([Vault])
    db.create_tables([Vault])
    yield Repository(Vault, db)
    db.drop_tables([Vault])


def _stored(db, sku: str) -> tuple[Any, ...]:
    sql = f'SELECT "secret", "price", "fine" FROM "vault" WHERE "sku" = {db.param}'
    return tuple(db.execute_sql(sql, (sku,)).fetchone())


def _row(sku: str) -> dict[str, Any]:
    return {"sku": sku, "secret": SECRET, "price": PRICE, "fine": FINE}


def _write_create(repo):
    repo.create(**_row("x"))


def _write_bulk_create(repo):
    repo.bulk_create([_row("x")])


def _write_bulk_create_model(repo):
    repo.bulk_create([Vault(**_row("x"))])


def _write_upsert(repo):
    repo.upsert(_row("x"), ["sku"])


def _write_upsert_many(repo):
    repo.upsert_many([_row("x")], ["sku"])


def _write_upsert_batches(repo):
    repo.write_batches(repo.upsert_batches([_row("x")], ["sku"]))


WRITES = [_write_create, _write_bulk_create, _write_bulk_create_model, _write_upsert,
          _write_upsert_many, _write_upsert_batches]


@pytest.mark.parametrize("write", WRITES, ids=lambda f: f.__name__[len("_write_"):])
def test_every_write_stores_what_the_subclass_db_value_makes(repo, db, write):
    write(repo)
    assert _stored(db, "x") == STORED
    got = repo.find(sku="x")[0]
    assert (got.secret, got.price, got.fine) == (SECRET, PRICE, FINE)


@pytest.mark.parametrize("write", [_write_upsert, _write_upsert_many],
                         ids=["upsert", "upsert_many"])
def test_upserting_an_existing_row_writes_the_subclass_form(repo, db, write):
    repo.create(sku="x", secret={"old": 0}, price=Decimal("1"), fine=Decimal("0.001"))
    write(repo)
    assert _stored(db, "x") == STORED
    assert repo.find(sku="x")[0].secret == SECRET


def test_bulk_create_with_keys_left_out_uses_the_subclass_form(repo, db):
    """The per-shape row code (keys given in a fixed order, some left out) too."""
    repo.bulk_create([{"sku": "x", "secret": SECRET}, {"sku": "y", "secret": SECRET}])
    assert _stored(db, "x")[0] == _stored(db, "y")[0] == STORED[0]
    repo.bulk_create([{"secret": SECRET, "sku": "z", "price": PRICE, "fine": FINE}])
    assert _stored(db, "z") == STORED


def test_embeddb_own_fields_keep_the_inline_form():
    """The inlined conversion is still used for the fields it was written for."""
    class Plain(BaseModel):
        data = JSONField(null=True)
        amount = MoneyField(null=True)

    source = Repository(Plain, peewee.SqliteDatabase(":memory:"))._compile_writer(
        ("data", "amount"))
    names = source.__code__.co_names
    assert "_to_json" in names and "_Decimal" in names
