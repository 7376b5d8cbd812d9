"""Finding and reading migration files, and refusing a folder that is ambiguous.

Accepted names (version first, then a name of letters, digits, ``_`` and ``-``)::

    0001_create_users.up.sql  +  0001_create_users.down.sql
    0002_add_index.sql                  -- migrate:up / -- migrate:down sections
    0003_search.sqlite.up.sql           a variant: preferred over generic files on that backend
    0004_backfill.py                    up(db) and optionally down(db)

Every problem in the folder (duplicate version, a down without an up, a name that does not
parse) is reported before anything runs.
"""

from __future__ import annotations

import ast
import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import folders
from ..errors import MigrationError
from .script import normalize

ENV_DIRECTORY = folders.MIGRATIONS_ENV
DEFAULT_DIRECTORY = folders.MIGRATIONS_DEFAULT
NO_TRANSACTION = "-- embeddb:no-transaction"
_VARIANTS = {"sqlite": "sqlite", "postgres": "postgres", "postgresql": "postgres"}
_STEM = re.compile(r"^(?P<version>\d+)_(?P<name>[A-Za-z0-9][A-Za-z0-9_\-]*)$")
_FIRST_LINE = re.compile(r"\s*([^\n]*)")
_BOM = "\ufeff".encode()
_READ_SIZE = 1 << 16
_SECTION = re.compile(r"^--\s*migrate:(up|down)\b.*$", re.MULTILINE | re.IGNORECASE)


@dataclass
class Part:
    """One direction of a migration: SQL text (or a Python function) and how to run it.

    A separate ``.down.sql`` file is read only when it is needed (``down``, ``redo``).
    """

    directory: str
    filename: str
    body: str | None = None  # the SQL, read from the file on first use
    first_line: int = 1  # line of the file where the SQL starts
    default_transaction: bool = True
    python: bool = False
    foreign_keys_off: bool = False  # a Python part that sets ``foreign_keys = False``

    @property
    def path(self) -> Path:
        return Path(self.directory, self.filename)

    @property
    def sql(self) -> str | None:
        """The SQL to run; None for a Python migration."""
        if self.python:
            return None
        if self.body is None:
            self.body = _read(self.directory, self.filename)[0]
        return self.body

    @property
    def transaction(self) -> bool:
        """False when the part opts out with ``-- embeddb:no-transaction``."""
        known = self.__dict__.get("_transaction")  # computed once (cached_property locks)
        if known is None:
            directive = None if self.python else _directive(self.sql or "")
            known = self.default_transaction if directive is None else directive
            self.__dict__["_transaction"] = known
        return known


@dataclass
class Migration:
    """A version with its up part, optional down part and the checksum of what ``up`` runs."""

    version: int
    name: str
    label: str  # e.g. 0001_create_users
    up: Part
    down: Part | None
    checksum: str
    module: Any = field(default=None, repr=False)  # a loaded Python migration


@dataclass(slots=True)
class _File:
    filename: str
    version: int
    name: str
    variant: str | None
    direction: str | None  # "up", "down" or None (single file)
    ext: str

    @property
    def label(self) -> str:
        """e.g. 0001_create_users"""
        return self.filename.split(".", 1)[0]


def resolve_directory(directory: str | os.PathLike[str] | None, db: Any = None) -> Path:
    """The migrations folder by :func:`embeddb.folders.resolve`'s rule: the argument,
    $EMBEDDB_MIGRATIONS_DIR, ./migrations, or in an empty directory the reference app's.

    :raises MigrationError: the folder does not exist.
    """
    path = folders.migrations(directory, folders.entry_of(db))
    if not path.is_dir():
        raise MigrationError(
            f"no migrations folder at {path}: pass --migrations DIR "
            f"(or set ${ENV_DIRECTORY}), or create one with `embeddb migrate new NAME`"
        )
    return path


def checksum(text: str) -> str:
    """SHA-256 of the content with line endings normalized (CRLF and LF count as equal)."""
    return hashlib.sha256(normalize(text).encode()).hexdigest()


def _normalize_bytes(data: bytes) -> bytes:
    """:func:`normalize` on UTF-8 bytes (a BOM, CR and LF are the same bytes in any text)."""
    while data.startswith(_BOM):
        data = data[len(_BOM):]
    if b"\r" in data:
        data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    return data


def discover(directory: Path, variants: tuple[str, ...]) -> list[Migration]:
    """The migrations that apply to a backend whose variant names are ``variants``, in order.

    :raises MigrationError: anything ambiguous or malformed in the folder, all listed at once.
    """
    files, problems = _scan(directory)
    folder = os.fspath(directory)
    by_version: dict[int, list[_File]] = {}
    for item in files:
        by_version.setdefault(item.version, []).append(item)
    wanted = {_VARIANTS[v] for v in variants}
    migrations = []
    for version in sorted(by_version):
        group = by_version[version]
        problems += _check_version(group)
        chosen = _choose(group, wanted)
        if chosen and not any(f.direction in ("up", None) for f in chosen):
            problems.append(f"{chosen[0].filename} has no up migration for this database")
        elif chosen and not problems:
            migrations.append(_load(folder, chosen))
    if problems:
        raise MigrationError(f"{directory}: " + "; ".join(problems))
    return migrations


def highest_version(directory: Path) -> tuple[int, int]:
    """The highest version in the folder (0 if none) and the digit width its names use."""
    files, _ = _scan(directory)
    if not files:
        return 0, 4
    top = max(files, key=lambda f: f.version)
    return top.version, len(top.label.split("_", 1)[0])


def _scan(directory: Path) -> tuple[list[_File], list[str]]:
    files, problems = [], []
    with os.scandir(directory) as entries:
        names = sorted(e.name for e in entries if e.is_file())
    for name in names:
        if name.startswith((".", "_")) or name.rsplit(".", 1)[-1] not in ("sql", "py"):
            continue
        parsed = _parse_name(name)
        if isinstance(parsed, str):
            problems.append(parsed)
        else:
            files.append(parsed)
    return files, problems


def _parse_name(filename: str) -> _File | str:
    stem, *middle, ext = filename.split(".")
    direction = middle.pop() if middle and middle[-1] in ("up", "down") else None
    variant = middle.pop(0) if middle else None
    match = _STEM.match(stem)
    expected = "expected e.g. 0001_create_users.up.sql, 0001_name.sqlite.up.sql or 0001_name.py"
    if match is None or middle:
        return f"cannot parse the file name {filename}: {expected}"
    if variant is not None and variant not in _VARIANTS:
        return f"{filename}: unknown dialect {variant!r} (use sqlite or postgres)"
    if ext == "py" and direction:
        return f"{filename}: a Python migration is one file defining up(db) and down(db)"
    return _File(
        filename, int(match["version"]), match["name"],
        variant and _VARIANTS[variant], direction, ext,
    )


def _choose(group: list[_File], wanted: set[str]) -> list[_File]:
    """This backend's files of one version: its variant where there is one, else the generic
    file; a generic ``.down.sql`` also serves variant ``.up.sql`` files that have no down."""
    own = [f for f in group if f.variant in wanted]
    generic = [f for f in group if not f.variant]
    if not own:
        return generic
    if own[0].direction is not None and not any(f.direction == "down" for f in own):
        own += [f for f in generic if f.direction == "down"]
    return own


def _check_version(group: list[_File]) -> list[str]:
    if len(group) == 2:  # the usual up + down pair: nothing to report
        first, second = group
        if (first.variant == second.variant and first.label == second.label
                and {first.direction, second.direction} == {"up", "down"}):
            return []
    problems = []
    names = sorted({f.label for f in group})
    if len(names) > 1:
        problems.append(f"duplicate version {group[0].version}: {', '.join(names)}")
    has_variant_up = any(f.variant and f.direction == "up" for f in group)
    for variant in {f.variant for f in group}:
        files = [f for f in group if f.variant == variant]
        if variant is None and has_variant_up and [f.direction for f in files] == ["down"]:
            continue  # a generic down shared by the variants' ups
        problems += _check_variant(files)
    return problems


def _check_variant(files: list[_File]) -> list[str]:
    listed = ", ".join(f.filename for f in files)
    directions = [f.direction for f in files]
    if len(files) == 1 and directions == ["down"]:
        return [f"{files[0].filename} is a down migration without an up file"]
    if len(files) > 2 or (len(files) == 2 and sorted(map(str, directions)) != ["down", "up"]):
        return [f"duplicate version {files[0].version}: {listed}"]
    return []


def _load(folder: str, files: list[_File]) -> Migration:
    first = files[0]
    if first.ext == "py":
        return _load_python(folder, first)
    if first.direction is None:
        return _load_sections(folder, first)
    up = next(f for f in files if f.direction == "up")
    down = next((f for f in files if f.direction == "down"), None)
    up_text, up_checksum = _read(folder, up.filename)
    down_part = Part(folder, down.filename) if down is not None else None
    return Migration(up.version, up.name, up.label, Part(folder, up.filename, up_text), down_part,
                     up_checksum)


def _load_sections(folder: str, item: _File) -> Migration:
    text = _read(folder, item.filename)[0]
    markers = list(_SECTION.finditer(text))
    if not markers or markers[0].group(1).lower() != "up":
        raise MigrationError(
            f"{item.filename} has no '-- migrate:up' line before its SQL: add one "
            f"(and '-- migrate:down' for the revert), or name it {item.label}.up.sql"
        )
    whole_file = _directive(text) is False
    parts: dict[str, Part] = {}
    for index, marker in enumerate(markers):
        end = markers[index + 1].start() if index + 1 < len(markers) else len(text)
        direction = marker.group(1).lower()
        if direction in parts:
            raise MigrationError(f"{item.filename} has two '-- migrate:{direction}' sections")
        body = text[marker.end():end]
        first_line = text.count("\n", 0, marker.end()) + 1
        parts[direction] = Part(folder, item.filename, body, first_line, not whole_file)
    up_body = parts["up"].sql or ""
    return Migration(
        item.version, item.name, item.label, parts["up"], parts.get("down"), checksum(up_body)
    )


def _load_python(folder: str, item: _File) -> Migration:
    source, source_checksum = _read(folder, item.filename)
    try:
        tree = ast.parse(source, os.path.join(folder, item.filename))
    except SyntaxError as exc:
        raise MigrationError(f"{item.filename} line {exc.lineno}: {exc.msg}") from exc
    functions = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    if "up" not in functions:
        raise MigrationError(f"{item.filename} defines no up(db) function")
    transaction = not _sets_false(tree, "transaction")
    off = _sets_false(tree, "foreign_keys")
    up = Part(folder, item.filename, None, 1, transaction, python=True, foreign_keys_off=off)
    down = (Part(folder, item.filename, None, 1, transaction, python=True, foreign_keys_off=off)
            if "down" in functions else None)
    return Migration(item.version, item.name, item.label, up, down, source_checksum)


def _sets_false(tree: ast.Module, name: str) -> bool:
    """Whether the module assigns ``name = False`` at its top level."""
    return any(
        isinstance(n, ast.Assign)
        and any(isinstance(t, ast.Name) and t.id == name for t in n.targets)
        and isinstance(n.value, ast.Constant)
        and n.value.value is False
        for n in tree.body
    )


def _directive(text: str) -> bool | None:
    """False when the first non-blank line is the no-transaction directive, else None."""
    first = _FIRST_LINE.match(text)
    return False if first and first.group(1).strip().lower() == NO_TRANSACTION else None


def _read(folder: str, filename: str) -> tuple[str, str]:
    """A file's text with line endings normalized, and its :func:`checksum`.

    Read as bytes and hashed before decoding: the same digest as hashing the text, without
    a text-mode file object or a second normalization per file.
    """
    path = os.path.join(folder, filename)
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            chunks = []
            while chunk := os.read(fd, _READ_SIZE):
                chunks.append(chunk)
        finally:
            os.close(fd)
        data = _normalize_bytes(b"".join(chunks))
        return data.decode("utf-8"), hashlib.sha256(data).hexdigest()
    except (OSError, UnicodeDecodeError) as exc:
        raise MigrationError(f"cannot read {path}: {exc}") from exc


def write_generated(directory: str | os.PathLike[str] | None, slug: str,
                    files: dict[str, str]) -> list[Path]:
    """Write a migration embeddb generated (the outbox table, audit triggers) as the next
    version in the folder (created if missing): ``files`` maps a suffix such as
    ``sqlite.up.sql`` to its text. Returns the paths.

    :raises MigrationError: the folder or a file cannot be written (naming the folder).
    """
    folder = Path(directory or os.environ.get(ENV_DIRECTORY) or DEFAULT_DIRECTORY)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        top, width = highest_version(folder)
        paths = []
        for suffix, text in files.items():
            path = folder / f"{top + 1:0{width}d}_{slug}.{suffix}"
            with open(path, "x", encoding="utf-8") as fh:
                fh.write(text)
            paths.append(path)
    except OSError as exc:
        raise MigrationError(f"cannot write the {slug} migration into {folder}: "
                             f"{exc.strerror}") from exc
    return paths


def new(
    directory: str | os.PathLike[str] | None, name: str, dialect: str | None = None
) -> list[Path]:
    """Write the next-numbered ``.up.sql`` / ``.down.sql`` pair (a variant with ``dialect``).

    The folder is created if it does not exist. Returns the two paths.

    :raises MigrationError: the name has no usable characters, or ``dialect`` is unknown.
    """
    folder = Path(directory or os.environ.get(ENV_DIRECTORY) or DEFAULT_DIRECTORY)
    slug = re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")
    if not slug:
        raise MigrationError(f"migration name {name!r} has no letters or digits: e.g. add_users")
    if dialect is not None and dialect not in _VARIANTS:
        raise MigrationError(f"unknown dialect {dialect!r}: use sqlite or postgres")
    folder.mkdir(parents=True, exist_ok=True)
    top, width = highest_version(folder)
    stem = f"{top + 1:0{width}d}_{slug}"
    middle = f".{_VARIANTS[dialect]}" if dialect else ""
    paths = []
    for direction in ("up", "down"):
        path = folder / f"{stem}{middle}.{direction}.sql"
        with open(path, "x", encoding="utf-8") as fh:
            fh.write(f"-- {stem}: {direction} migration\n")
        paths.append(path)
    return paths
