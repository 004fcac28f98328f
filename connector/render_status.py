"""Text for people from the documents of `connector status`, `connector attention` and
`connector auth status` (their JSON is the documents themselves). No decisions here."""

from __future__ import annotations

import io
import shutil
import sys
from typing import Any

from rich import box
from rich.console import Console, RenderableType
from rich.table import Table


def _render(parts: list[RenderableType]) -> str:
    """Tables as text: the terminal's width on a terminal (in colour), 120 columns otherwise.
    Markup is off: reasons carry brackets ("[categories.x]") that are text, not styles."""
    terminal = sys.stdout.isatty()
    width = shutil.get_terminal_size((120, 24)).columns if terminal else 120
    buffer = io.StringIO()
    console = Console(
        file=buffer,
        width=width,
        force_terminal=terminal,
        no_color=not terminal,
        markup=False,
        emoji=False,
        highlight=False,
    )
    for index, part in enumerate(parts):
        if index:
            console.print()
        console.print(part)
    return buffer.getvalue().rstrip("\n")


def _table(title: str, *columns: str) -> Table:
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, show_edge=False)
    for column in columns:
        table.add_column(column, overflow="fold")
    return table


def _when(value: str | None) -> str:
    return "-" if not value else value.replace("T", " ").replace("+00:00", " UTC")


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    minutes, seconds = divmod(round(value), 60)
    return f"{minutes} min {seconds} s" if minutes else f"{seconds} s"


def auth_lines(doc: dict[str, Any]) -> list[str]:
    mode = (
        f"service account (client credentials, tenant {doc['tenant_id']})"
        if doc["mode"] == "client_credentials"
        else "refresh token (a person's login)"
    )
    lines = [f"{doc['system_name']}: {doc['message']}", f"  way in: {mode}"]
    if doc["access_token_valid_until"]:
        valid = "valid" if doc["access_token_valid"] else "expired"
        lines.append(f"  access token: {valid}, until {_when(doc['access_token_valid_until'])}")
    if doc["mode"] == "refresh_token":
        stored = (
            f"stored {_when(doc['stored_at'])}" if doc["refresh_token_stored"] else "not stored"
        )
        expires = doc["refresh_token_expires"]
        lines.append(
            f"  refresh token: {stored}" + (f", lasts until {_when(expires)}" if expires else "")
        )
    lines.append(
        f"  token file: {doc['token_file']}" + ("" if doc["token_file_exists"] else " (none)")
    )
    return lines


def auth_text(doc: dict[str, Any]) -> str:
    return "\n".join(auth_lines(doc))


def status_text(doc: dict[str, Any]) -> str:
    parts: list[RenderableType] = []
    bound = doc["bound"]
    head = [
        f"State directory {doc['state_dir']} (schema v{doc['schema_version']})",
        f"  invoices to: {doc['target_name']}"
        + ("" if bound["system"] else " (not recorded yet: no sync has written)")
        + (f" ({bound['company']})" if bound["company"] else ""),
        f"  ledger: {bound['ledger'] or '(not recorded yet)'}",
    ]
    if doc["running_pid"]:
        head.append(f"  a run is going on now (pid {doc['running_pid']})")
    problems = doc["needs_attention"]
    head.append("")
    head.append("Needs attention:" if problems else "Nothing needs attention.")
    head.extend(f"  - {p}" for p in problems)
    parts.append("\n".join(head))

    runs = _table("Last runs", "#", "command", "started", "took", "exit", "what it did")
    for run in doc["runs"]:
        exit_code = "-" if run["exit_code"] is None else str(run["exit_code"])
        if run["state"] != "finished":
            exit_code = run["state"]
        runs.add_row(
            str(run["id"]),
            run["command"],
            _when(run["started_at"]),
            _seconds(run["duration_seconds"]),
            exit_code,
            run["did"],
        )
    parts.append(runs if doc["runs"] else "No run recorded yet.")

    ledger = doc["ledger"]
    parts.append(
        "\n".join(
            [
                "Ledger",
                f"  entries mirrored: {ledger['entries']}"
                + (
                    f" (+{ledger['without_id']} without a usable id)"
                    if ledger["without_id"]
                    else ""
                ),
                f"  cursor: {ledger['cursor'] or '(start)'}, last advanced "
                f"{_when(ledger['cursor_advanced_at'])}",
                f"  last read to its end: {_when(ledger['read_to_end_at'])}; newest change "
                f"mirrored: {_when(ledger['newest_change'])}",
            ]
        )
    )

    invoices = doc["invoices"]
    counts = _table(f"Invoices ({invoices['total']})", "state", "count")
    labels = {
        "open": "open drafts",
        "not_created": "not created (refused or waiting)",
        "sent": "sent",
        "booked": "booked",
        "locked": "locked (changed by a person)",
        "cancelled": "cancelled or deleted",
        "pending_write": "write with unknown outcome",
        "refused": "refused by the accounting system",
    }
    for name, count in invoices["counts"].items():
        if count:
            counts.add_row(labels.get(name, name), str(count))
    parts.append(counts)

    attention = doc["attention"]
    if attention["invoices"]:
        table = _table("Invoices needing attention", "invoice", "since", "reason", "what to do")
        for item in attention["invoices"]:
            table.add_row(
                item["ref"], _when(item["first_seen"]), item["reason"], item["what_to_do"]
            )
        parts.append(table)
    if attention["entries_by_kind"]:
        table = _table("Entries needing attention", "kind", "count", "since", "e.g.")
        for group in attention["entries_by_kind"]:
            refs = group["refs"]
            table.add_row(
                group["label"],
                str(group["count"]),
                _when(group["since"]),
                ", ".join(refs[:3]) + (" ..." if len(refs) > 3 else ""),
            )
        parts.append(table)
    if attention["acknowledged"]:
        parts.append(
            f"{attention['acknowledged']} acknowledged item(s) not counted "
            "(connector attention --all)"
        )
    if doc["holds"]:
        table = _table("Held months", "customer", "month", "since", "why")
        for hold in doc["holds"]:
            table.add_row(
                hold["customer_number"], hold["period"], _when(hold["since"]), hold["reason"]
            )
        parts.append(table)
    parts.append("\n".join(["Authorisation", *("  " + line for line in auth_lines(doc["auth"]))]))
    return _render(parts)


def attention_text(doc: dict[str, Any]) -> str:
    counts = doc["counts"]
    if not doc["items"]:
        more = (
            f" ({counts['acknowledged']} acknowledged: connector attention --all)"
            if counts["acknowledged"]
            else ""
        )
        return f"Nothing needs attention in {doc['target_name']}'s records{more}."
    table = _table(
        f"Needing attention: {counts['open']}"
        + (f" (and {counts['acknowledged']} acknowledged)" if counts["acknowledged"] else ""),
        "id",
        "since",
        "what is wrong",
        "what to do",
    )
    for item in doc["items"]:
        ack = item["acknowledged"]
        todo = item["what_to_do"]
        if ack:
            todo = f"acknowledged by {ack['who']} {_when(ack['at'])}: {ack['why']}"
        table.add_row(item["ref"], _when(item["first_seen"]), item["reason"], todo)
    return _render([table])


def ack_text(item: dict[str, Any]) -> str:
    ack = item["acknowledged"]
    return (
        f"Acknowledged {item['ref']} ({item['kind_label']}) as {ack['who']}: {ack['why']}. "
        "It is listed again if its reason changes."
    )
