"""The prepaid hours balance ("timbanken"): what each customer bought, drew and has left.

Pure ledger arithmetic, independent of the mappings and of any accounting system, used by the
planner (overdraws, the balance row) and by `connector balance`. The rules are written up in
docs/planning.md, Prepaid hours:

- Bought: every active top-up's hours. Drawn: every active debit's `prepaid_hours`.
- The account is walked in time order: by `performed_on`; on the same day top-ups first (a
  package bought that day covers that day's work), then by entry id (as text).
- A draw larger than what is left at that point is an overdraw of the difference; the balance
  then stands at 0. A top-up dated later never covers an earlier draw, so the balance never
  goes below 0 and an overdraw stays one until the ledger changes (a back-dated top-up, a
  corrected draw).
"""

from __future__ import annotations

import calendar
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Literal

from connector.ledger import Entry, Kind, Status

ZERO = Decimal(0)
OverdrawPolicy = Literal["attention", "invoice"]


@dataclass(frozen=True)
class Prepaid:
    """How the planner treats the prepaid balance (CONNECTOR_PREPAID__*)."""

    # attention: an overdraw needs attention and its hours are not invoiced;
    # invoice: they are invoiced as ordinary hours of the entry's category.
    overdraw: OverdrawPolicy = "attention"
    # Each invoice of a customer with a prepaid account ends with the balance at month end.
    balance_row: bool = False


@dataclass(frozen=True)
class Movement:
    """One entry behind the figures: a top-up (+hours) or a draw (the prepaid hours taken)."""

    entry_id: str
    performed_on: date
    kind: Kind
    hours: Decimal  # the top-up's hours, or the prepaid hours the debit draws
    balance_after: Decimal
    overdraw: Decimal = ZERO  # a draw's hours beyond what was left


@dataclass
class Account:
    customer_number: str
    movements: list[Movement] = field(default_factory=list)

    @property
    def topups(self) -> list[Movement]:
        return [m for m in self.movements if m.kind is Kind.TOPUP]

    @property
    def draws(self) -> list[Movement]:
        return [m for m in self.movements if m.kind is Kind.DEBIT]

    @property
    def overdraws(self) -> list[Movement]:
        return [m for m in self.movements if m.overdraw > 0]

    @property
    def bought(self) -> Decimal:
        return sum((m.hours for m in self.topups), ZERO)

    @property
    def drawn(self) -> Decimal:
        return sum((m.hours for m in self.draws), ZERO)

    @property
    def overdrawn(self) -> Decimal:
        return sum((m.overdraw for m in self.movements), ZERO)

    @property
    def remaining(self) -> Decimal:
        return self.movements[-1].balance_after if self.movements else ZERO

    def balance_on(self, day: date) -> Decimal:
        """What is left at the end of `day`."""
        left = ZERO
        for movement in self.movements:
            if movement.performed_on > day:
                break
            left = movement.balance_after
        return left

    def balance_at_month_end(self, period: str) -> Decimal:
        year, month = (int(part) for part in period.split("-"))
        return self.balance_on(date(year, month, calendar.monthrange(year, month)[1]))


def _order(entry: Entry) -> tuple[date, int, str]:
    return (entry.performed_on, 0 if entry.kind is Kind.TOPUP else 1, entry.id)


def accounts(entries: Iterable[Entry]) -> dict[str, Account]:
    """Every customer's prepaid account, from the current revision of each entry. Customers
    with neither a top-up nor a draw have none."""
    by_customer: dict[str, list[Entry]] = defaultdict(list)
    for entry in entries:
        if entry.status is not Status.ACTIVE:
            continue
        if entry.kind is Kind.TOPUP or entry.prepaid_hours > 0:
            by_customer[entry.customer_number].append(entry)
    found: dict[str, Account] = {}
    for customer, chosen in sorted(by_customer.items()):
        account = Account(customer)
        left = ZERO
        for entry in sorted(chosen, key=_order):
            if entry.kind is Kind.TOPUP:
                left += entry.hours
                account.movements.append(
                    Movement(entry.id, entry.performed_on, entry.kind, entry.hours, left)
                )
                continue
            over = max(ZERO, entry.prepaid_hours - left)
            left = max(ZERO, left - entry.prepaid_hours)
            account.movements.append(
                Movement(entry.id, entry.performed_on, entry.kind, entry.prepaid_hours, left, over)
            )
        found[customer] = account
    return found


def overdraws(found: Mapping[str, Account]) -> dict[str, Movement]:
    """Entry id -> its draw, for every draw beyond what was left."""
    return {m.entry_id: m for a in found.values() for m in a.overdraws}


def swedish_hours(value: Decimal) -> str:
    """1.50 -> '1,5': hours as a Swedish reader writes them."""
    text = format(value.normalize(), "f")
    return text.replace(".", ",")


def overdraw_reason(customer: str, movement: Movement) -> str:
    """The plain words for an overdraw (the hours written the Swedish way, as finance reads
    them on the invoice)."""
    return (
        f"customer {customer} drew {swedish_hours(movement.overdraw)} h more prepaid hours "
        f"than bought on {movement.performed_on.isoformat()}"
    )
