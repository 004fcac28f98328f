"""`connector mappings show` and `check`: the mapping as it takes effect, and whether the
accounting system can invoice it (docs/mappings.md, Administrator commands).

`show` reads the files only. `check` reads the files, the target's article register (and its
units where rows carry one) and the local ledger mirror; it sends no write request anywhere.
The comparison itself (`find_problems`) is pure, so every rule is tested without a network.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any

from connector import targets
from connector.errors import RemoteSetupError, ScopeDeniedError
from connector.mappings import Category, Mappings
from connector.planning import PREPAID_CATEGORY, clean
from connector.settings import Settings
from connector.targets.base import RegisterArticle, TargetProfile

# How many ledger entry ids an unmapped category's message names.
EXAMPLES = 5


def split_source(source: str) -> tuple[str, int | None]:
    """`path:line` (Category.source) as (path, line)."""
    path, _, line = source.rpartition(":")
    if not path or not line.isdigit():
        return source, None
    return path, int(line)


def price_history(category: Category) -> list[dict[str, str | None]]:
    """The prices in the order they apply: the base price (from no date), then each change."""
    history: list[dict[str, str | None]] = []
    if category.price is not None:
        history.append({"from": None, "price": str(category.price)})
    history.extend({"from": since.isoformat(), "price": str(p)} for since, p in category.prices)
    return history


def category_json(category: Category, profile: TargetProfile) -> dict[str, Any]:
    path, line = split_source(category.source)
    return {
        "category": category.slug,
        "name": category.name,
        "billable": category.billable,
        "article": category.article_for(profile.name) if category.billable else None,
        "article_overridden": profile.name in category.overrides,
        "unit": category.unit,
        # Visma puts the article's own unit on a row: the mapping's must match it.
        "unit_from_article": not profile.row_units,
        "price": None if category.price is None else str(category.price),
        "prices": price_history(category),
        "free": category.free,
        "rounding": {
            "increment": str(category.rounding.increment),
            "mode": category.rounding.mode,
        },
        "file": path,
        "line": line,
    }


def show_document(mappings: Mappings, names: list[str]) -> dict[str, Any]:
    """One JSON document: the defaults and, per target, one entry per category."""
    defaults = mappings.defaults
    return {
        "files": [str(f) for f in mappings.files],
        "defaults": {
            "unit": defaults.unit,
            "show_prepaid_rows": defaults.show_prepaid_rows,
            "rounding": {
                "increment": str(defaults.rounding.increment),
                "mode": defaults.rounding.mode,
            },
        },
        "counts": {
            "categories": len(mappings.categories),
            "billable": mappings.billable_count,
        },
        "targets": [
            {
                "target": name,
                "target_name": targets.profile(name).display_name,
                "categories": [
                    category_json(c, targets.profile(name))
                    for c in sorted(mappings.categories.values(), key=_order)
                ],
            }
            for name in names
        ],
    }


def _order(category: Category) -> tuple[bool, str]:
    """Billable first, then by slug: the order an administrator reads a price list in."""
    return (not category.billable, category.slug)


# --- check --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    kind: str
    category: str
    # file:line of the category, or None (a category no file maps).
    where: str | None
    message: str
    article: str | None = None

    def to_json(self) -> dict[str, Any]:
        path, line = split_source(self.where) if self.where else (None, None)
        return {
            "kind": self.kind,
            "category": self.category,
            "article": self.article,
            "file": path,
            "line": line,
            "message": self.message,
        }


def find_problems(
    mappings: Mappings,
    profile: TargetProfile,
    register: dict[str, RegisterArticle],
    units: set[str] | None,
    unmapped: dict[str, list[str]] | None = None,
) -> list[Problem]:
    """Every way the accounting system (its `register` and `units`) would fail the mappings,
    and the categories the ledger uses (`unmapped`: category -> entry ids) that no file maps."""
    system = profile.display_name
    found: list[Problem] = []
    for category in sorted(mappings.categories.values(), key=lambda c: c.slug):
        if not category.billable:
            continue  # included in the fee: never invoiced, so nothing to check there
        article = category.article_for(profile.name)
        if article is None:  # the validator refuses this; kept for the type checker
            continue
        problem = _recorder(found, category, article)
        known = register.get(article)
        if known is None:
            problem(
                "article_missing",
                f"article {article} of category '{category.slug}' does not exist in {system}: "
                "create it there, or map the category to an existing article",
            )
            continue
        if not known.active:
            problem(
                "article_inactive",
                f"article {article} of category '{category.slug}' is inactive in {system}: "
                "activate it there, or map the category to an active article",
            )
        if profile.row_units:
            if units is not None and category.unit not in units:
                problem(
                    "unit_missing",
                    f"unit '{category.unit}' of category '{category.slug}' does not exist in "
                    f"{system}: add it to {system}'s units, or change unit in the mappings",
                )
        elif known.unit is not None and known.unit.casefold() != category.unit.casefold():
            problem(
                "unit_mismatch",
                f"article {article} has unit '{known.unit}' in {system}, but the mappings say "
                f"'{category.unit}' for category '{category.slug}': {system} puts the "
                "article's unit on every row, so change the article's unit there or set "
                f'unit = "{known.unit}" on the category',
            )
        message = _price_problem(category, article, known, system)
        if message:
            problem("no_price", message)
    for slug, refs in sorted((unmapped or {}).items()):
        shown = ", ".join(refs[:EXAMPLES]) + (", ..." if len(refs) > EXAMPLES else "")
        many = "entry" if len(refs) == 1 else "entries"
        found.append(
            Problem(
                "unmapped_category",
                slug,
                None,
                f"category '{slug}' is used by {len(refs)} ledger {many} ({shown}) but no "
                f"mapping file maps it: add it (connector mappings set {slug} --article NUMBER)",
            )
        )
    return found


def _recorder(found: list[Problem], category: Category, article: str) -> Callable[[str, str], None]:
    def record(kind: str, message: str) -> None:
        found.append(Problem(kind, category.slug, category.source, message, article))

    return record


def _price_problem(
    category: Category, article: str, known: RegisterArticle, system: str
) -> str | None:
    """Why some hours of the category would go out at price 0 (and so need attention), or
    None. A ledger entry's own unit_price still wins; this is about entries without one."""
    if category.free:
        return None  # given away on purpose
    zero = [p for p in (category.price, *(p for _, p in category.prices)) if p == 0]
    if zero:
        return (
            f"the mappings price category '{category.slug}' at 0: its hours would need "
            "attention instead of being invoiced; set free = true if they are given away on "
            "purpose, or a price"
        )
    if category.slug == PREPAID_CATEGORY:
        return None  # a top-up's price is agreed: never the register's (docs/planning.md)
    if category.price is not None or (known.price is not None and known.price != 0):
        return None
    first: date | None = category.prices[0][0] if category.prices else None
    when = f"work performed before {first}" if first else "its hours"
    return (
        f"article {article} has no sales price in {system} and the mappings give category "
        f"'{category.slug}' none for {when}: entries without their own unit_price would be "
        f"invoiced at 0, so they need attention instead; set price in the mappings, a sales "
        f"price in {system}, or free = true"
    )


def unmapped_categories(settings: Settings, mappings: Mappings) -> dict[str, list[str]] | None:
    """Categories in the local ledger mirror that no file maps (category -> entry ids), or
    None when there is no mirror yet."""
    from connector.state import DB_NAME, StateStore
    from connector.sync import load_entries

    if not (settings.state_dir / DB_NAME).is_file():
        return None
    store = StateStore(settings.state_dir)
    try:
        entries, _ = load_entries(store)
    finally:
        store.close()
    used: dict[str, list[str]] = defaultdict(list)
    for entry in entries:
        if entry.category not in mappings.categories:
            used[clean(entry.category)].append(entry.id)
    return {slug: sorted(refs) for slug, refs in used.items()}


def check_document(
    mappings: Mappings,
    profile: TargetProfile,
    register: dict[str, RegisterArticle],
    units: set[str] | None,
    unmapped: dict[str, list[str]] | None,
) -> dict[str, Any]:
    problems = find_problems(mappings, profile, register, units, unmapped)
    notes: list[str] = []
    if unmapped is None:
        notes.append(
            "no local ledger mirror yet (CONNECTOR_STATE_DIR): categories in use were not "
            "checked; run connector plan first"
        )
    if not profile.row_units:
        notes.append(
            f"{profile.display_name} takes each row's unit from its article: the mappings' "
            "unit is compared with the article's"
        )
    return {
        "target": profile.name,
        "target_name": profile.display_name,
        "files": [str(f) for f in mappings.files],
        "counts": {
            "categories": len(mappings.categories),
            "billable": mappings.billable_count,
            "articles_in_register": len(register),
            "problems": len(problems),
        },
        "units_checked": profile.row_units and units is not None,
        "ledger_checked": unmapped is not None,
        "ok": not problems,
        "problems": [p.to_json() for p in problems],
        "notes": notes,
    }


def run_check(settings: Settings, mappings: Mappings) -> dict[str, Any]:
    """Read the configured target's register (and units) and the ledger mirror; compare."""
    unmapped = unmapped_categories(settings, mappings)
    spec = targets.spec(settings.target)
    target = spec.open(settings)
    units: set[str] | None = None
    unknown: list[str] = []
    try:
        register = target.article_register()
        if spec.profile.row_units:
            try:
                units = target.unit_codes()
            except (ScopeDeniedError, RemoteSetupError) as exc:
                # The rest of the check stands; the unit is then checked by the first invoice.
                unknown.append(f"units not checked: {exc}")
    finally:
        target.close()
    document = check_document(mappings, spec.profile, register, units, unmapped)
    document["notes"] = unknown + document["notes"]
    return document


def price_text(history: list[dict[str, str | None]], free: bool, category: str = "") -> str:
    """`995.00; 1050.00 from 2027-01-01`, or where the price comes from when none is given."""
    parts = []
    for item in history:
        price = Decimal(str(item["price"]))
        parts.append(f"{price} from {item['from']}" if item["from"] else f"{price}")
    before = "0 (free)" if free else "article's sales price"
    if category == PREPAID_CATEGORY and not free:
        before = "the top-up's own (ledger)"  # never the register's for a package
    if not parts:
        return before
    if history[0]["from"] is not None:
        parts.insert(0, before)
    return "; ".join(parts)
