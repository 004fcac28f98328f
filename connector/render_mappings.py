"""Text for people from the `connector mappings show` and `check` documents. No decisions here."""

from __future__ import annotations

import io
import shutil
import sys
from typing import Any

from connector.mapping_check import price_text


def table_text(title: str, headers: list[str], rows: list[list[str]]) -> str:
    """A plain rich table: no colours (it may go to a file or a mail) and as wide as the
    terminal, or wide enough not to wrap when standard output is not a terminal."""
    from rich import box
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table(title=Text(title), title_justify="left", box=box.SIMPLE_HEAD)
    for header in headers:
        table.add_column(Text(header), overflow="fold")
    for row in rows:
        # Text, not markup: a category or file name with [brackets] is shown as it is.
        table.add_row(*(Text(cell) for cell in row))
    # Not a terminal (a file, grep, a mail): one line per row, however long.
    width = shutil.get_terminal_size((120, 24)).columns if sys.stdout.isatty() else 1000
    out = io.StringIO()
    Console(file=out, width=width, color_system=None, markup=False, highlight=False).print(table)
    return "\n".join(line.rstrip() for line in out.getvalue().rstrip().splitlines())


def show_text(doc: dict[str, Any]) -> str:
    defaults = doc["defaults"]
    rounding = defaults["rounding"]
    prepaid = "shown" if defaults["show_prepaid_rows"] else "hidden"
    lines = [
        f"Mapping files: {', '.join(doc['files'])}",
        f"{doc['counts']['categories']} categories ({doc['counts']['billable']} billable); "
        f"defaults: unit {defaults['unit']}, rounding {rounding['increment']} "
        f"{rounding['mode']}, prepaid rows {prepaid}",
    ]
    for target in doc["targets"]:
        rows = []
        for c in target["categories"]:
            billable = c["billable"]
            unit = c["unit"] + (" (must be the article's)" if c["unit_from_article"] else "")
            article = c["article"] or "-"
            if c["article_overridden"]:
                article += f" (for {target['target_name']} only)"
            rows.append(
                [
                    c["category"],
                    "billable" if billable else "included in the fee",
                    article,
                    unit if billable else "-",
                    price_text(c["prices"], c["free"], c["category"]) if billable else "-",
                    "yes" if c["free"] else "",
                    f"{c['file']}:{c['line']}",
                ]
            )
        lines.append("")
        lines.append(
            table_text(
                f"{target['target_name']} ({target['target']})",
                ["category", "billing", "article", "unit", "price", "free", "defined at"],
                rows,
            )
        )
    return "\n".join(lines)


def check_text(doc: dict[str, Any]) -> str:
    counts = doc["counts"]
    system = doc["target_name"]
    lines: list[str] = []
    if doc["ok"]:
        lines.append(
            f"OK: {counts['billable']} billable categories checked against {system} "
            f"({counts['articles_in_register']} articles in its register): every article "
            "exists and is active, every unit fits, every category has a price"
        )
    else:
        lines.append(
            f"{counts['problems']} problem(s) checking {counts['billable']} billable "
            f"categories against {system}:"
        )
        rows = [
            [
                f"{p['file']}:{p['line']}" if p["file"] else "(no file)",
                p["category"],
                p["message"],
            ]
            for p in doc["problems"]
        ]
        lines.append(table_text("", ["where", "category", "problem"], rows))
    for note in doc["notes"]:
        lines.append(f"note: {note}")
    return "\n".join(lines)


def set_text(doc: dict[str, Any]) -> str:
    lines: list[str] = []
    if not doc["changed"]:
        lines.append(f"Nothing to change: {doc['file']} already says so.")
    else:
        lines.append(doc["diff"].rstrip("\n"))
        verb = "Written" if doc["written"] else "Not written (--dry-run)"
        what = "new category" if doc["new_category"] else "category"
        lines.append(f"{verb}: {doc['file']} ({what} '{doc['category']}'); the files validate.")
    lines.extend(f"note: {n}" for n in doc["notes"])
    return "\n".join(lines)
