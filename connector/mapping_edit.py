"""`connector mappings set`: change one category's article or price in the mapping files,
keeping every comment and the layout (tomlkit), and only when the whole set still validates.

A price change on a category that already has a price is a price change from a date (the price
history, docs/planning.md): rows already on invoices keep the price they were written with, and
work performed from that day on gets the new one. Re-pricing back months is what the history
exists to prevent, so such a change needs --from. The file is replaced atomically: a reader (a
sync starting now) sees the old file or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import difflib
import os
import re
import stat
import tempfile
import tomllib
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import tomlkit
import tomlkit.exceptions
from tomlkit.items import AoT, Array, InlineTable, Table

from connector import targets
from connector.errors import ConfigError, MappingError
from connector.mappings import (
    MONEY_PLACES,
    Mappings,
    _syntax_problem,
    load_mappings,
    read_mapping_file,
)

_SLUG = re.compile(r"^[a-z][a-z0-9_]*$")
_PRICE = re.compile(r"^\d+(\.\d+)?$")


@dataclass(frozen=True)
class Change:
    """What a person asked for. None: leave as it is."""

    category: str
    article: str | None = None
    price: str | None = None
    since: str | None = None  # --from, YYYY-MM-DD
    target: str | None = None  # the article is this target's override
    file: Path | None = None  # for a new category
    name: str | None = None  # for a new category


@dataclass
class Outcome:
    path: Path
    category: str
    created_category: bool
    created_file: bool
    changed: bool
    written: bool
    old_text: str
    new_text: str
    mappings: Mappings
    notes: list[str] = field(default_factory=list)

    @property
    def diff(self) -> str:
        return "".join(
            difflib.unified_diff(
                self.old_text.splitlines(keepends=True),
                self.new_text.splitlines(keepends=True),
                fromfile=f"{self.path} (before)",
                tofile=f"{self.path} (after)",
            )
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "file": str(self.path),
            "category": self.category,
            "new_category": self.created_category,
            "new_file": self.created_file,
            "changed": self.changed,
            "written": self.written,
            "diff": self.diff,
            "notes": self.notes,
        }


def _usage(message: str) -> ConfigError:
    return ConfigError(f"mappings set: {message}")


def _price(text: str) -> Decimal:
    """--price as the files write it: a non-negative decimal with at most 2 decimals."""
    value = text.strip()
    try:
        number = Decimal(value) if _PRICE.fullmatch(value) else None
    except InvalidOperation:
        number = None
    if number is None:
        raise _usage(f"--price must be a decimal number such as 1250.00, got {text!r}")
    if -number.as_tuple().exponent > MONEY_PLACES:  # type: ignore[operator]
        raise _usage(f"--price may have at most {MONEY_PLACES} decimals, got {text!r}")
    return number.quantize(Decimal(1).scaleb(-MONEY_PLACES))


def _day(text: str) -> date:
    try:
        return date.fromisoformat(text.strip())
    except ValueError:
        raise _usage(f"--from must be a date YYYY-MM-DD, got {text!r}") from None


def _check_request(change: Change) -> tuple[Decimal | None, date | None]:
    if not _SLUG.match(change.category):
        raise _usage(
            f"category {change.category!r} must be the ledger's category: lower-case letters, "
            "digits and _"
        )
    if change.since is not None and change.price is None:
        raise _usage("--from needs --price: it says from which day the new price applies")
    if change.article is None and change.price is None:
        raise _usage("nothing to set: give --article, --price, or both")
    if change.target is not None and change.target not in targets.TARGETS:
        raise _usage(f"--target must be one of {', '.join(targets.TARGETS)}")
    price = _price(change.price) if change.price is not None else None
    since = _day(change.since) if change.since is not None else None
    return price, since


@dataclass
class _File:
    path: Path
    text: str
    doc: tomlkit.TOMLDocument


def _read_folder(folder: Path) -> tuple[list[_File], list[str]]:
    """Every mapping file, parsed with tomlkit; problems for the ones that cannot be."""
    if not folder.is_dir():
        raise MappingError([f"{folder}: mappings folder not found (CONNECTOR_MAPPINGS_DIR)"])
    files: list[_File] = []
    problems: list[str] = []
    for path in sorted(folder.glob("*.toml")):
        text, problem = read_mapping_file(path)
        if problem is not None or text is None:
            problems.append(problem or f"{path}: cannot be read")
            continue
        try:
            tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            problems.append(_syntax_problem(path, exc))
            continue
        try:
            files.append(_File(path, text, tomlkit.parse(text)))
        except tomlkit.exceptions.ParseError as exc:  # pragma: no cover - tomllib read it
            problems.append(f"{path}:{exc.line}: TOML syntax error: {exc}")
    return files, problems


def _categories(doc: tomlkit.TOMLDocument) -> Any:
    table = doc.get("categories")
    return table if isinstance(table, Table | InlineTable) else None


def _choose(files: list[_File], change: Change, folder: Path) -> tuple[_File, bool, bool]:
    """The file to edit, whether the category is new, and whether the file is."""
    defining = [f for f in files if (t := _categories(f.doc)) is not None and change.category in t]
    if len(defining) > 1:
        where = ", ".join(str(f.path) for f in defining)
        raise _usage(
            f"category '{change.category}' is defined in more than one file ({where}); "
            "connector mappings validate shows where"
        )
    if change.file is not None:
        wanted = change.file if change.file.parent != Path() else folder / change.file
        if wanted.suffix != ".toml" or wanted.resolve().parent != folder.resolve():
            raise _usage(
                f"--file {change.file} is not a *.toml file in the mappings folder {folder}; "
                "only those are read"
            )
        if defining and defining[0].path.resolve() != wanted.resolve():
            raise _usage(
                f"category '{change.category}' is defined in {defining[0].path}, not in "
                f"{change.file}: leave out --file, or move it there by hand"
            )
        for f in files:
            if f.path.resolve() == wanted.resolve():
                return f, not defining, False
        if wanted.exists():
            raise _usage(f"--file {wanted} cannot be used; connector mappings validate says why")
        return _File(wanted, "", tomlkit.document()), True, True
    if defining:
        return defining[0], False, False
    if len(files) == 1:
        return files[0], True, False
    names = ", ".join(f.path.name for f in files) or "none"
    raise _usage(
        f"category '{change.category}' is new and the mappings folder has {len(files)} files "
        f"({names}): say which one with --file NAME.toml"
    )


def _snippet(text: str, *, line: bool = False) -> Any:
    """A TOML value written the way docs/mappings.md writes it (`{ from = ..., price = ... }`).
    `line`: a key's value, which must end its line (else the blank line after it is taken)."""
    return tomlkit.parse(f"x = {text}" + ("\n" if line else ""))["x"]


def _sub_table(parent: Any) -> Any:
    """A new table under `parent`, inline when the parent is."""
    if isinstance(parent, InlineTable):
        return tomlkit.inline_table()
    return tomlkit.table()


def _end_blank(table: Any) -> None:
    # A [categories.x.target] header written after x's last key: keep a blank line before the
    # table that follows, as the files are laid out.
    if isinstance(table, Table):
        table.add(tomlkit.nl())


def _has_price(table: Any) -> bool:
    prices = table.get("prices")
    return "price" in table or (isinstance(prices, Array | AoT) and len(prices) > 0)


def _apply(file: _File, change: Change, price: Decimal | None, since: date | None) -> str:
    doc = file.doc
    categories = _categories(doc)
    if categories is None:
        categories = tomlkit.table(is_super_table=True)
        doc["categories"] = categories
    slug = change.category
    created = slug not in categories
    if created:
        table = tomlkit.table()
        if change.name is not None:
            table["name"] = change.name
        categories[slug] = table
    table = categories[slug]
    if not isinstance(table, Table | InlineTable):
        raise _usage(f"[categories.{slug}] in {file.path} is not a table; fix it by hand")
    if change.name is not None and not created:
        table["name"] = change.name
    if table.get("billable", True) is False:
        raise _usage(
            f"category '{slug}' is not billable (included in the monthly fee, {file.path}): "
            "an article or price would invoice nothing. Set billable = true in the file first "
            "if its hours are to be invoiced"
        )
    if change.article is not None:
        if change.target is None:
            table["article"] = change.article
        else:
            override = table.get(change.target)
            if override is None:
                override = _sub_table(table)
                override["article"] = change.article
                _end_blank(override)
                table[change.target] = override
            else:
                override["article"] = change.article
    if price is not None:
        text = f"{price}"
        if since is None:
            if not created and _has_price(table):
                raise _usage(
                    f"category '{slug}' already has a price in {file.path}; a new price needs "
                    "--from YYYY-MM-DD, the first day of work it applies to. Without a date it "
                    "would re-price every entry not yet invoiced, back to the oldest open month "
                    "(rows already on invoices keep their price either way)"
                )
            table["price"] = text
        else:
            item = _snippet(f'{{ from = "{since.isoformat()}", price = "{text}" }}')
            prices = table.get("prices")
            # A value in an inline table must not end its line; a key's in a table must.
            line = isinstance(table, Table)
            if prices is None:
                table["prices"] = _snippet(f"[{item.as_string()}]", line=line)
            elif isinstance(prices, Array):
                _add_change(prices, item, since, file.path, slug)
                if "\n" not in prices.as_string():
                    # One line: written anew as docs/mappings.md writes it (tomlkit's own
                    # insert leaves "},{"); a multi-line list keeps its comments as edited.
                    changes = ", ".join(e.as_string().strip() for e in prices)
                    table["prices"] = _snippet(f"[{changes}]", line=line)
            else:
                raise _usage(
                    f"prices of category '{slug}' in {file.path} are not written as a list "
                    '[{ from = "...", price = "..." }]; change them by hand'
                )
    return tomlkit.dumps(doc)


def _add_change(prices: Array, item: Any, since: date, path: Path, slug: str) -> None:
    """Add a price change in date order; one from the same day is replaced."""
    position = len(prices)
    for index, existing in enumerate(prices):
        if not isinstance(existing, InlineTable | dict):
            raise _usage(f"prices of category '{slug}' in {path} hold something else than changes")
        day = existing.get("from")
        day = day if isinstance(day, date) else _day(str(day))
        if day == since:
            existing["price"] = item["price"]
            return
        if day > since:
            position = index
            break
    prices.insert(position, item)


def validate_with(folder: Path, path: Path, text: str) -> Mappings:
    """Validate the folder as `connector mappings validate` would, with `path` holding `text`."""
    return load_mappings(folder, edited=(path, text))


def write_atomically(path: Path, text: str, expected: bytes | None) -> None:
    """Replace `path` with `text`: a temporary file in the same folder (not *.toml, so never
    read as a mapping), flushed to disk, given the file's mode, then renamed over it.
    `expected` is the content read before the edit (None: a new file): a file changed by
    someone else meanwhile is not overwritten."""
    if path.is_symlink():
        path = path.resolve()  # replace the file the link points to, not the link
    folder = path.parent
    mode = 0o644
    owner: tuple[int, int] | None = None
    if expected is not None:
        try:
            current = path.read_bytes()
            status = path.stat()
            mode = stat.S_IMODE(status.st_mode)
            owner = (status.st_uid, status.st_gid)
        except OSError as exc:
            raise ConfigError(f"{path}: cannot be read again ({exc.strerror or exc})") from None
        if current != expected:
            raise ConfigError(
                f"{path} changed while it was being edited; nothing was written: run the "
                "command again"
            )
    elif path.exists():
        raise ConfigError(f"{path} appeared while it was being edited; nothing was written")
    handle, temporary = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(text.encode("utf-8"))
            out.flush()
            os.fsync(out.fileno())
        os.chmod(temporary, mode)
        if owner is not None and hasattr(os, "chown"):
            with contextlib.suppress(OSError):  # only root may give a file away
                os.chown(temporary, *owner)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    # The rename itself must survive a power cut too.
    with contextlib.suppress(OSError):
        directory = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)


def set_mapping(folder: Path, change: Change, *, today: date, dry_run: bool = False) -> Outcome:
    """Edit, validate the whole folder with the edit, then write (unless `dry_run`)."""
    price, since = _check_request(change)
    files, problems = _read_folder(folder)
    if problems:
        raise MappingError(problems)
    chosen, created_category, created_file = _choose(files, change, folder)
    old_text = chosen.text
    new_text = _apply(chosen, change, price, since)
    if "\r\n" in old_text and old_text.count("\r\n") == old_text.count("\n"):
        # A file saved on Windows stays CRLF throughout: tomlkit writes new lines with LF.
        new_text = re.sub(r"(?<!\r)\n", "\r\n", new_text)
    try:
        mappings = validate_with(folder, chosen.path, new_text)
    except MappingError as exc:
        exc.message = (
            f"the change was not written: the mapping files would have {len(exc.problems)} "
            "problem(s)"
        )
        raise
    _confirm_effect(mappings, change, price, since)
    changed = new_text != old_text
    outcome = Outcome(
        path=chosen.path,
        category=change.category,
        created_category=created_category,
        created_file=created_file,
        changed=changed,
        written=False,
        old_text=old_text,
        new_text=new_text,
        mappings=mappings,
    )
    category = mappings.categories[change.category]
    if changed and change.article is not None and change.target is None:
        for name, number in sorted(category.overrides.items()):
            outcome.notes.append(
                f"{targets.profile(name).display_name} keeps its own article {number} for "
                f"'{change.category}' ([categories.{change.category}.{name}])"
            )
    if changed and since is not None and since < today:
        outcome.notes.append(
            f"the new price applies to work performed from {since}, a day already past: "
            "entries from then on that are not yet on an invoice get it; rows already on "
            "invoices keep their price"
        )
    if changed and not dry_run:
        expected = None if created_file else chosen.text.encode("utf-8")
        write_atomically(chosen.path, new_text, expected)
        outcome.written = True
    return outcome


def _confirm_effect(
    mappings: Mappings, change: Change, price: Decimal | None, since: date | None
) -> None:
    """The files, read back, say what was asked: a layout tomlkit misread must not slip by."""
    category = mappings.categories.get(change.category)
    wrong = category is None
    if category is not None and change.article is not None:
        names = [change.target] if change.target else list(targets.TARGETS)
        if change.target is None:
            names = [n for n in names if n not in category.overrides]
        wrong |= any(category.article_for(n) != change.article for n in names)
    if category is not None and price is not None:
        if since is None:
            wrong |= category.price != price
        else:
            wrong |= (since, price) not in category.prices
    if wrong:
        raise ConfigError(
            f"mappings set: the edited file does not read back as asked for category "
            f"'{change.category}'; nothing was written: change the file by hand"
        )
