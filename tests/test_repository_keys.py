"""Primary keys given as ``uuid.UUID`` reach the database as the key field's own db_value:
32-digit hex only for embeddb's IdField / peewee's UUIDField form, bytes for a
BinaryUUIDField, the text of a CharField holding ``str(uuid)``, a subclass's own form."""

from __future__ import annotations

import uuid
from typing import Any

import peewee
import pytest

from embeddb.cache import Cache
from embeddb.models import SoftDeleteModel
from embeddb.repository import Repository


class DashedUUIDField(peewee.UUIDField):
    """A UUID key stored as its dashed text (a UUIDField subclass with its own db_value)."""

    field_type = "TEXT"

    def db_value(self, value: Any) -> str | None:
        if value is None:
            return None
        return str(value if isinstance(value, uuid.UUID) else uuid.UUID(str(value)))


class BinaryKey(SoftDeleteModel):
    id = peewee.BinaryUUIDField(primary_key=True, default=uuid.uuid4)
    name = peewee.TextField()


class TextKey(SoftDeleteModel):
    id = peewee.CharField(primary_key=True, max_length=36, default=lambda: str(uuid.uuid4()))
    name = peewee.TextField()


class DashedKey(SoftDeleteModel):
    id = DashedUUIDField(primary_key=True, default=uuid.uuid4)
    name = peewee.TextField()


MODELS = [BinaryKey, TextKey, DashedKey]


@pytest.fixture(params=MODELS, ids=lambda m: m.__name__)
def model(request, db):
    db.bind(MODELS)
    db.create_tables(MODELS)
    yield request.param
    db.drop_tables(MODELS)


@pytest.fixture(params=["no_cache", "cache"])
def repo(request, model, db, tmp_path):
    if request.param == "no_cache":
        yield Repository(model, db)
        return
    cache = Cache(str(tmp_path / "cache"), db=db)
    yield Repository(model, db, cache=cache)
    cache.close()


def _row(model: type[Any]) -> tuple[Any, uuid.UUID]:
    """A row made through peewee, and its key as a uuid.UUID."""
    obj = model.create(name="first")
    key = obj.id if isinstance(obj.id, uuid.UUID) else uuid.UUID(obj.id)
    return obj, key


def _name(model: type[Any], obj: Any) -> str:
    return model.select_with_deleted().where(model.id == obj.id).get().name


def test_get_by_uuid_finds_what_peewee_finds(repo, model):
    obj, key = _row(model)
    assert model.get_or_none(model.id == key) is not None
    found = repo.get_or_none(key)
    assert found is not None and found.name == "first"
    assert repo.get(key).id == obj.id
    assert repo.get_or_none(uuid.uuid4()) is None


def test_update_by_uuid_and_by_object(repo, model):
    obj, key = _row(model)
    assert repo.update(key, name="second").name == "second"
    assert _name(model, obj) == "second"
    loaded = repo.get(key)
    repo.update(loaded, name="third")
    assert _name(model, obj) == "third"
    assert repo.get(key).name == "third"  # the cached row was dropped too


def test_delete_and_restore_by_uuid(repo, model):
    obj, key = _row(model)
    repo.get(key)  # cached, where there is a cache
    assert repo.delete(key) is True
    assert repo.get_or_none(key) is None
    assert model.select_with_deleted().where(model.id == obj.id).exists()
    assert repo.restore(key).name == "first"
    assert repo.get(key).name == "first"
    assert repo.delete(key, permanent=True) is True
    assert not model.select_with_deleted().where(model.id == obj.id).exists()
    assert repo.delete(key) is False


def test_a_key_given_as_text_is_found_or_not_found_never_an_error(repo, model):
    """The dashed text of a key finds its row; text that is no key of this kind is simply not
    found (get_or_none None, get NotFoundError), never a raw exception from the field."""
    from embeddb.errors import NotFoundError

    obj, key = _row(model)
    assert repo.get_or_none(str(key)).name == "first"
    for text in ("not-a-uuid", "", "1" * 40):
        assert repo.get_or_none(text) is None
        with pytest.raises(NotFoundError):
            repo.get(text)
