"""The audit's comparison alone (`audit.audit_month`, pure), over the sample ledger: books that
are exactly the plan agree; a changed quantity on any article row is reported as exactly that
difference, on exactly that customer, article and price; a missing invoice's entries are listed
as not invoiced. Hypothesis picks the row and the change."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal
from functools import cache
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connector import targets
from connector.audit import AuditReport, audit_month
from connector.ledger import Entry, InvalidEntry, parse_entry
from connector.mappings import Mappings, load_mappings
from connector.planning import Invoiced, InvoiceKey, Plan, plan, record_write
from connector.sandbox import build_app
from connector.sandbox.sample import load
from connector.targets.base import RemoteInvoice, RemoteRow, RemoteState
from tests.conftest import MAPPINGS_DIR
from tests.harness import TARGETS, driver_for

PERIOD = "2026-09"


@cache
def _world(target: str) -> tuple[list[Entry], Mappings, dict[str, Decimal | None], Invoiced, Plan]:
    """The sample ledger planned and 'written' (record_write), then planned again: every
    invoice unchanged, as after a clean sync."""
    latest: dict[str, Entry] = {}
    for raw in load():
        try:
            entry = parse_entry(raw)
        except InvalidEntry:
            continue
        if entry.id not in latest or entry.revision > latest[entry.id].revision:
            latest[entry.id] = entry
    entries = list(latest.values())
    mappings = load_mappings(MAPPINGS_DIR)
    profile = targets.profile(target)
    register = driver_for(build_app(), target).register()
    first = plan(entries, mappings, profile, Invoiced(), (), register)
    invoiced = Invoiced()
    for number, invoice in enumerate(first.invoices, start=1):
        invoiced = record_write(invoiced, invoice, remote_id=f"R{number}", number=str(number))
    return (
        entries,
        mappings,
        register,
        invoiced,
        plan(entries, mappings, profile, invoiced, (), register),
    )


def _books(the_plan: Plan) -> list[tuple[InvoiceKey, RemoteInvoice]]:
    books = []
    for invoice in the_plan.invoices:
        if invoice.key.period != PERIOD or invoice.remote_id is None:
            continue
        rows = tuple(
            RemoteRow(r.article, r.description, r.quantity, r.price, r.unit) for r in invoice.rows
        )
        books.append(
            (
                invoice.key,
                RemoteInvoice(
                    invoice.remote_id, invoice.display_number, invoice.key.text,
                    invoice.key.customer_number, RemoteState.OPEN, currency=invoice.currency,
                    rows=rows, vat_included=False,
                ),
            )
        )  # fmt: skip
    return books


def _audit(target: str, books: list[tuple[InvoiceKey, RemoteInvoice]]) -> AuditReport:
    entries, mappings, register, invoiced, the_plan = _world(target)
    return audit_month(
        period=PERIOD,
        customer=None,
        profile=targets.profile(target),
        books=books,
        entries=entries,
        rejected=[],
        mappings=mappings,
        register=register,
        invoiced=invoiced,
        the_plan=the_plan,
        invoice_attention={},
    )


@pytest.mark.parametrize("target", TARGETS)
def test_books_equal_to_the_plan_agree(target: str) -> None:
    report = _audit(target, _books(_world(target)[4]))
    assert report.agrees, [line.to_json() for line in report.differences]
    assert report.lines and report.listed("invoiced")


@pytest.mark.parametrize("target", TARGETS)
@settings(deadline=None)  # the first example plans the whole sample ledger (then cached)
@given(data=st.data())
def test_a_changed_quantity_is_exactly_the_difference(target: str, data: Any) -> None:
    books = _books(_world(target)[4])
    spots = [
        (n, i)
        for n, (_, remote) in enumerate(books)
        for i, row in enumerate(remote.rows or ())
        if row.article
    ]
    n, i = data.draw(st.sampled_from(spots))
    quarters = data.draw(st.integers(-40, 40).filter(bool))
    delta = Decimal(quarters) / 4
    key, remote = books[n]
    rows = list(remote.rows or ())
    row = rows[i]
    assert row.quantity is not None and row.price is not None
    rows[i] = RemoteRow(row.article, row.description, row.quantity + delta, row.price, row.unit)
    books[n] = (key, replace(remote, rows=tuple(rows)))
    report = _audit(target, books)
    assert not report.agrees
    assert [
        (d.customer, d.article, d.price, d.hours_difference, d.amount_difference)
        for d in report.differences
    ] == [(remote.customer_number, row.article, row.price, delta, delta * row.price)]
    assert not report.listed("not_invoiced")


@pytest.mark.parametrize("target", TARGETS)
@settings(deadline=None)  # the first example plans the whole sample ledger (then cached)
@given(data=st.data())
def test_a_missing_invoice_lists_its_entries_as_not_invoiced(target: str, data: Any) -> None:
    books = _books(_world(target)[4])
    n = data.draw(st.integers(0, len(books) - 1))
    key, removed = books.pop(n)
    report = _audit(target, books)
    missing = {e.ref for e in report.listed("not_invoiced")}
    on_it = {
        row.entry_id for inv in _world(target)[4].invoices if inv.key == key for row in inv.rows
    }
    assert missing == {e for e in on_it if e} and missing
    billed = sum((r.quantity * r.price for r in removed.rows or () if r.article and r.quantity
                  and r.price), Decimal(0))  # fmt: skip
    assert sum(d.amount_difference for d in report.differences) == -billed
