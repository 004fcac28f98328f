"""Mapping files: service category -> article, price and rounding (docs/mappings.md).

Every `*.toml` file in the mappings folder is read. Validation is strict and collects every
problem, each naming the file and line, so an administrator fixes them all in one pass.
tomllib does not report positions for valid keys, so `_KeyLines` finds them by scanning the text.
"""

from __future__ import annotations

import difflib
import re
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import ROUND_CEILING, ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any, Literal

from connector import targets
from connector.errors import MappingError
from connector.targets.base import TargetProfile

RoundingMode = Literal["up", "half_up"]
_ROUNDING_MODES: dict[str, str] = {"up": ROUND_CEILING, "half_up": ROUND_HALF_UP}
MONEY_PLACES = 2
QUANTITY_PLACES = 2

DEFAULT_KEYS = {"unit", "show_prepaid_rows", "rounding"}
CATEGORY_KEYS = {
    "name", "article", "billable", "free", "price", "prices", "rounding", "unit", *targets.TARGETS,
}  # fmt: skip
PRICE_CHANGE_KEYS = {"from", "price"}
OVERRIDE_KEYS = {"article"}
ROUNDING_KEYS = {"increment", "mode"}
TOP_KEYS = {"defaults", "categories"}
_SLUG = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclass(frozen=True)
class Rounding:
    increment: Decimal = Decimal("0.01")
    mode: RoundingMode = "half_up"

    def apply(self, value: Decimal) -> Decimal:
        """Round a non-negative quantity to a multiple of the increment."""
        steps = (value / self.increment).to_integral_value(rounding=_ROUNDING_MODES[self.mode])
        return (steps * self.increment).quantize(self.increment)


@dataclass(frozen=True)
class Defaults:
    unit: str = "h"
    show_prepaid_rows: bool = True
    rounding: Rounding = Rounding()


@dataclass(frozen=True)
class Category:
    slug: str
    name: str
    billable: bool
    article: str | None
    price: Decimal | None
    rounding: Rounding
    unit: str
    overrides: dict[str, str] = field(default_factory=dict)
    source: str = ""
    # Rows of this category may go out at price 0 (hours given away but shown on the invoice);
    # otherwise a row priced 0 needs attention instead of being sent.
    free: bool = False
    # Price changes: (first day, price), ascending. They apply to work performed from that day;
    # rows already on invoices keep their price unless their entry changes.
    prices: tuple[tuple[date, Decimal], ...] = ()

    def article_for(self, target: str) -> str | None:
        return self.overrides.get(target, self.article)

    def price_on(self, day: date) -> Decimal | None:
        """The mapping's price for work performed on `day`: the latest change in effect, else
        `price`."""
        price = self.price
        for since, value in self.prices:
            if since <= day:
                price = value
        return price


@dataclass(frozen=True)
class Mappings:
    defaults: Defaults
    categories: dict[str, Category]
    files: tuple[Path, ...] = ()

    @property
    def billable_count(self) -> int:
        return sum(1 for c in self.categories.values() if c.billable)

    def articles(self, target: str) -> dict[str, str]:
        """Article number -> category slug, for the billable categories of one target."""
        return {
            article: c.slug
            for c in self.categories.values()
            if c.billable and (article := c.article_for(target))
        }


class _KeyLines:
    """Line of each key path in a TOML text: tables, `key = value` lines and inline tables."""

    _HEADER = re.compile(r"^\s*\[\[?\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
    _ASSIGN = re.compile(r'^\s*([A-Za-z0-9_\-."\' ]+?)\s*=')
    _INLINE_KEY = re.compile(r'[{,]\s*([A-Za-z0-9_\-"\']+)\s*=')

    def __init__(self, text: str) -> None:
        self.lines: dict[tuple[str, ...], int] = {}
        table: tuple[str, ...] = ()
        in_multiline = False
        for number, line in enumerate(text.splitlines(), start=1):
            if line.count('"""') % 2 or line.count("'''") % 2:
                in_multiline = not in_multiline
                if not in_multiline:
                    continue
            if in_multiline:
                continue
            header = self._HEADER.match(line)
            if header:
                table = self._split(header.group(1))
                self.lines.setdefault(table, number)
                continue
            assign = self._ASSIGN.match(line)
            if assign:
                path = table + self._split(assign.group(1))
                self.lines.setdefault(path, number)
                rest = line[assign.end() :]
                if rest.lstrip().startswith("{"):
                    for key in self._INLINE_KEY.findall(rest):
                        self.lines.setdefault((*path, key.strip("\"'")), number)

    @staticmethod
    def _split(dotted: str) -> tuple[str, ...]:
        return tuple(part.strip().strip("\"'") for part in dotted.split("."))

    def line(self, *path: str) -> int:
        """The key's line, else its nearest enclosing table's, else 1."""
        for end in range(len(path), 0, -1):
            if path[:end] in self.lines:
                return self.lines[path[:end]]
        return 1


class _Checker:
    def __init__(self, path: Path, text: str) -> None:
        self.path = path
        self.where = _KeyLines(text)
        self.problems: list[str] = []

    def at(self, *key: str) -> str:
        return f"{self.path}:{self.where.line(*key)}"

    def problem(self, key: tuple[str, ...], message: str) -> None:
        self.problems.append(f"{self.at(*key)}: {message}")

    def unknown_keys(self, table: dict[str, Any], allowed: set[str], key: tuple[str, ...]) -> None:
        label = "[" + ".".join(key) + "]" if key else "the top level"
        for name in table:
            if name not in allowed:
                hint = difflib.get_close_matches(name, sorted(allowed), n=1)
                suggestion = f" (did you mean '{hint[0]}'?)" if hint else ""
                expected = ", ".join(sorted(allowed))
                self.problem(
                    (*key, name),
                    f"unknown key '{name}' in {label}{suggestion}; expected one of: {expected}",
                )

    def decimal(
        self, value: object, key: tuple[str, ...], what: str, *, positive: bool = False
    ) -> Decimal | None:
        if isinstance(value, float):
            self.problem(
                key, f'{what} must be a quoted decimal, e.g. "{value}" (floats are inexact)'
            )
            return None
        if isinstance(value, bool) or not isinstance(value, str | int):
            self.problem(key, f"{what} must be a quoted decimal string, got {type(value).__name__}")
            return None
        text = str(value).strip()
        if not re.fullmatch(r"-?\d+(\.\d+)?", text):
            self.problem(key, f"{what} must be a decimal number, got {value!r}")
            return None
        number = Decimal(text)
        if number < 0 or (positive and number == 0):
            sign = "greater than 0" if positive else "0 or more"
            self.problem(key, f"{what} must be {sign}, got {text}")
            return None
        if -number.as_tuple().exponent > MONEY_PLACES:  # type: ignore[operator]
            self.problem(key, f"{what} must have at most {MONEY_PLACES} decimals, got {text}")
            return None
        return number

    def rounding(self, value: object, key: tuple[str, ...], fallback: Rounding) -> Rounding:
        if not isinstance(value, dict):
            self.problem(key, 'rounding must be a table, e.g. { increment = "0.25", mode = "up" }')
            return fallback
        self.unknown_keys(value, ROUNDING_KEYS, key)
        increment = fallback.increment
        if "increment" in value:
            parsed = self.decimal(
                value["increment"], (*key, "increment"), "rounding increment", positive=True
            )
            increment = parsed if parsed is not None else increment
        mode = value.get("mode", fallback.mode)
        if mode not in _ROUNDING_MODES:
            self.problem(
                (*key, "mode"),
                f"unknown rounding mode {mode!r}; expected one of: {', '.join(_ROUNDING_MODES)}",
            )
            mode = fallback.mode
        return Rounding(increment=increment, mode=mode)

    def text(self, value: object, key: tuple[str, ...], what: str) -> str | None:
        if not isinstance(value, str) or not value.strip():
            self.problem(key, f"{what} must be a non-empty string")
            return None
        return value


def _read_defaults(check: _Checker, raw: object) -> Defaults:
    if not isinstance(raw, dict):
        check.problem(("defaults",), "[defaults] must be a table")
        return Defaults()
    check.unknown_keys(raw, DEFAULT_KEYS, ("defaults",))
    base = Defaults()
    unit = base.unit
    if "unit" in raw:
        unit = check.text(raw["unit"], ("defaults", "unit"), "unit") or unit
    show = base.show_prepaid_rows
    if "show_prepaid_rows" in raw:
        if isinstance(raw["show_prepaid_rows"], bool):
            show = raw["show_prepaid_rows"]
        else:
            check.problem(
                ("defaults", "show_prepaid_rows"), "show_prepaid_rows must be true or false"
            )
    rounding = base.rounding
    if "rounding" in raw:
        rounding = check.rounding(raw["rounding"], ("defaults", "rounding"), base.rounding)
    return Defaults(unit=unit, show_prepaid_rows=show, rounding=rounding)


def _read_category(check: _Checker, slug: str, raw: object, defaults: Defaults) -> Category | None:
    key = ("categories", slug)
    if not isinstance(raw, dict):
        check.problem(key, f"[categories.{slug}] must be a table")
        return None
    if not _SLUG.match(slug):
        check.problem(key, f"category slug {slug!r} must be lower-case letters, digits and _")
    check.unknown_keys(raw, CATEGORY_KEYS, key)
    before = len(check.problems)
    name = check.text(raw.get("name", slug), (*key, "name"), "name") or slug
    billable = raw.get("billable", True)
    if not isinstance(billable, bool):
        check.problem((*key, "billable"), "billable must be true or false")
        billable = True
    free = raw.get("free", False)
    if not isinstance(free, bool):
        check.problem((*key, "free"), "free must be true or false")
        free = False
    article = None
    if "article" in raw:
        article = check.text(raw["article"], (*key, "article"), "article")
    overrides: dict[str, str] = {}
    for target in targets.TARGETS:
        if target not in raw:
            continue
        table = raw[target]
        if not isinstance(table, dict):
            check.problem((*key, target), f"[categories.{slug}.{target}] must be a table")
            continue
        check.unknown_keys(table, OVERRIDE_KEYS, (*key, target))
        if "article" in table:
            value = check.text(table["article"], (*key, target, "article"), "article")
            if value:
                overrides[target] = value
    price = None
    if "price" in raw:
        price = check.decimal(raw["price"], (*key, "price"), "price")
    prices: list[tuple[date, Decimal]] = []
    if "prices" in raw:
        prices = _read_price_changes(check, raw["prices"], (*key, "prices"))
    rounding = defaults.rounding
    if "rounding" in raw:
        rounding = check.rounding(raw["rounding"], (*key, "rounding"), defaults.rounding)
    unit = defaults.unit
    if "unit" in raw:
        unit = check.text(raw["unit"], (*key, "unit"), "unit") or unit
    if billable:
        _check_articles(check, slug, article, overrides)
    if len(check.problems) > before:
        return None
    return Category(
        slug=slug,
        name=name,
        billable=billable,
        article=article,
        price=price,
        rounding=rounding,
        unit=unit,
        overrides=overrides,
        source=check.at(*key),
        free=free,
        prices=tuple(prices),
    )


def _read_price_changes(
    check: _Checker, raw: object, key: tuple[str, ...]
) -> list[tuple[date, Decimal]]:
    """prices = [{ from = "2027-01-01", price = "1250.00" }, ...]: each from a date on."""
    example = 'prices = [{ from = "2027-01-01", price = "1250.00" }]'
    if not isinstance(raw, list) or not all(isinstance(item, dict) for item in raw):
        check.problem(key, f"prices must be a list of price changes, e.g. {example}")
        return []
    changes: list[tuple[date, Decimal]] = []
    for item in raw:
        check.unknown_keys(item, PRICE_CHANGE_KEYS, key)
        since = item.get("from")
        if isinstance(since, str):
            try:
                since = date.fromisoformat(since.strip())
            except ValueError:
                since = None
        if not isinstance(since, date) or isinstance(since, datetime):
            check.problem(key, f"each price change needs from = a date YYYY-MM-DD: {example}")
            continue
        if "price" not in item:
            check.problem(key, f"the price change from {since} has no price: {example}")
            continue
        value = check.decimal(item["price"], key, f"price from {since}")
        if value is not None:
            changes.append((since, value))
    days = [since for since, _ in changes]
    if len(set(days)) != len(days):
        check.problem(key, "two price changes start on the same day")
    return sorted(changes)


def _check_articles(
    check: _Checker, slug: str, article: str | None, overrides: dict[str, str]
) -> None:
    key = ("categories", slug)
    for profile in (spec.profile for spec in targets.specs()):
        target = profile.name
        chosen = overrides.get(target, article)
        where = (*key, target, "article") if target in overrides else (*key, "article")
        if chosen is None:
            if article is None and not overrides:
                check.problem(key, f"category '{slug}' is billable but has no article")
                return
            check.problem(
                key,
                f"category '{slug}' is billable but has no article for {profile.display_name}"
                f" (add article, or [categories.{slug}.{target}] article)",
            )
            continue
        problem = profile.article_problem(chosen)
        if problem:
            hint = "" if target in overrides else f" (or set [categories.{slug}.{target}] article)"
            check.problem(where, problem + hint)


def load_mappings(directory: Path, edited: tuple[Path, str] | None = None) -> Mappings:
    """Read and validate every *.toml file in `directory`; MappingError lists all problems.
    `edited` is one file's text as it would be saved (`connector mappings set` validates an
    edit before writing it)."""
    if not directory.is_dir():
        raise MappingError([f"{directory}: mappings folder not found (CONNECTOR_MAPPINGS_DIR)"])
    files = sorted({*directory.glob("*.toml"), *([edited[0]] if edited else [])})
    if not files:
        raise MappingError([f"{directory}: no *.toml mapping files"])
    problems: list[str] = []
    sources: list[tuple[Path, str]] = []
    for path in files:
        if edited is not None and path == edited[0]:
            sources.append(edited)
            continue
        text, problem = read_mapping_file(path)
        if problem is not None:
            problems.append(problem)
        elif text is not None:
            sources.append((path, text))
    try:
        mappings = parse_mapping_files(sources, require_categories=not problems)
    except MappingError as exc:
        raise MappingError(problems + exc.problems) from None
    if problems:
        raise MappingError(problems)
    return mappings


def read_mapping_file(path: Path) -> tuple[str | None, str | None]:
    """(text, None), or (None, why the file cannot be used) naming it: every way a file can
    be unreadable is a problem to fix, never a crash."""
    if path.is_dir():
        return None, f"{path}: is a folder, not a mapping file; rename it or move it away"
    try:
        data = path.read_bytes()
    except OSError as exc:
        return None, f"{path}: cannot be read ({exc.strerror or exc}); check its permissions"
    if data.startswith(b"\xef\xbb\xbf"):
        return None, (
            f"{path}:1: starts with a byte-order mark; save it as UTF-8 without BOM "
            "(in most editors: encoding 'UTF-8', not 'UTF-8 with BOM')"
        )
    if not data.strip():
        return None, f"{path}: is empty; add [categories.<slug>] tables or remove the file"
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        return None, (
            f"{path}:{line}: is not UTF-8 (byte {data[exc.start]:#04x}); save it as UTF-8, "
            "for example from Notepad or Excel choose 'UTF-8' rather than 'ANSI' or 'Windows-1252'"
        )
    if "\x00" in text:
        return None, f"{path}: contains NUL characters; it is not a text file"
    return text, None


def parse_mapping_files(
    sources: Iterable[tuple[Path, str]], *, require_categories: bool = True
) -> Mappings:
    problems: list[str] = []
    parsed: list[tuple[_Checker, dict[str, Any]]] = []
    paths: list[Path] = []
    for path, text in sources:
        paths.append(path)
        check = _Checker(path, text)
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            problems.append(_syntax_problem(path, exc))
            continue
        check.unknown_keys(data, TOP_KEYS, ())
        parsed.append((check, data))

    defaults = Defaults()
    defaults_from: str | None = None
    for check, data in parsed:
        if "defaults" in data:
            if defaults_from is not None:
                check.problem(("defaults",), f"[defaults] is also defined at {defaults_from}")
                continue
            defaults_from = check.at("defaults")
            defaults = _read_defaults(check, data["defaults"])

    categories: dict[str, Category] = {}
    first_seen: dict[str, str] = {}
    for check, data in parsed:
        table = data.get("categories", {})
        if not isinstance(table, dict):
            check.problem(("categories",), "categories must be tables: [categories.<slug>]")
            continue
        for slug, raw in table.items():
            if slug in first_seen:
                check.problem(
                    ("categories", slug),
                    f"category '{slug}' is defined twice (first at {first_seen[slug]})",
                )
                continue
            first_seen[slug] = check.at("categories", slug)
            category = _read_category(check, slug, raw, defaults)
            if category is not None:
                categories[slug] = category
    for check, _ in parsed:
        problems.extend(check.problems)
    if not categories and not problems and require_categories:
        problems.append("no categories defined: add [categories.<slug>] tables")
    if problems:
        raise MappingError(problems)
    return Mappings(defaults=defaults, categories=categories, files=tuple(paths))


def _syntax_problem(path: Path, exc: tomllib.TOMLDecodeError) -> str:
    message = str(exc)
    found = re.search(r"\(at line (\d+), column (\d+)\)", message)
    if found:
        reason = message[: found.start()].strip()
        return f"{path}:{found.group(1)}: TOML syntax error: {reason} (column {found.group(2)})"
    return f"{path}:1: TOML syntax error: {message}"


def check_articles_exist(
    mappings: Mappings, profile: TargetProfile, existing: set[str]
) -> list[str]:
    """Problems for billable categories whose article is missing in the accounting system."""
    return [
        f"{category.source}: article {article!r} of category '{category.slug}' does not exist"
        f" in {profile.display_name}"
        for category in mappings.categories.values()
        if category.billable
        and (article := category.article_for(profile.name)) is not None
        and article not in existing
    ]
