"""The sample ledger: realistic, deterministic service-account entries for the sandbox and demo.

`python -m connector.sandbox.sample` rewrites `data/sample-ledger.jsonl`; a test checks that the
shipped file equals what this module generates, so the two never drift. Benchmarks call
`generate()` with more customers.
"""

from __future__ import annotations

import json
import random
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

SAMPLE_PATH = Path(__file__).parent / "data" / "sample-ledger.jsonl"
FIRST_CUSTOMER = 1003
# Customer the sandbox's Fortnox does not know, to show the attention path.
MISSING_CUSTOMER = "1042"

_WORK: dict[str, list[str]] = {
    "installation": [
        "Installation av integrationen mot affärssystemet",
        "Installation och uppsättning av testmiljö",
        "Driftsättning av ny version hos kund",
    ],
    "training": [
        "Utbildning för ekonomiavdelningen",
        "Introduktionsutbildning för nya användare",
        "Workshop: arbetsflöden i integrationen",
    ],
    "configuration": [
        "Konfiguration av artikelmappning",
        "Konfiguration av kundregister och momskoder",
        "Uppsättning av automatiska körningar",
    ],
    "configuration_change": [
        "Ändring av kontomappning efter ny kontoplan",
        "Nya betalvillkor i konfigurationen",
        "Ändrad synkroniseringsfrekvens",
    ],
    "customer_caused_fault": [
        "Felsökning efter kundens ändring av artikelregister",
        "Felsökning: borttaget fält i kundens webbutik",
        "Återställning efter ändrade behörigheter hos kund",
    ],
    "project": [
        "Förstudie: koppling mot lagersystem",
        "Utveckling av plugin för orderexport",
        "Leverans och test av plugin",
    ],
    "project_management": [
        "Projektledning, avstämning med partner",
        "Samordning mellan partner inför lansering",
    ],
    "data_maintenance": [
        "Rensning av dubblettkunder",
        "Massuppdatering av artikelpriser",
    ],
    "business_advisory": [
        "Rådgivning kring fakturaflöde",
        "Genomgång av processer för månadsbokslut",
    ],
    "guidance": [
        "Vägledning via telefon",
        "Svar på fråga i helpdesk",
    ],
    "product_fault": [
        "Felrättning i vår produkt",
    ],
    "partner_api_update": [
        "Anpassning efter partners API-ändring",
    ],
    "account_admin": [
        "Administration av användarkonton",
    ],
}
_BILLABLE = [
    "installation",
    "training",
    "configuration",
    "configuration_change",
    "customer_caused_fault",
    "project",
    "project_management",
    "data_maintenance",
    "business_advisory",
]
_INCLUDED = ["guidance", "product_fault", "partner_api_update", "account_admin"]
_PRICES = [Decimal("1150.00"), Decimal("1095.00"), Decimal("1250.00"), Decimal("980.00")]
_PACKAGES = [(Decimal("10"), Decimal("10500.00")), (Decimal("20"), Decimal("19800.00"))]


def _entry(
    entry_id: str,
    customer: str,
    category: str,
    hours: Decimal,
    performed_on: date,
    description: str,
    *,
    kind: str = "debit",
    prepaid: Decimal = Decimal(0),
    unit_price: Decimal | None = None,
    reference: str | None = None,
    revision: int = 1,
    status: str = "active",
    changed_at: datetime | None = None,
) -> dict[str, Any]:
    changed = changed_at or datetime.combine(performed_on, datetime.min.time(), UTC) + timedelta(
        hours=17
    )
    return {
        "id": entry_id,
        "revision": revision,
        "kind": kind,
        "status": status,
        "customer_number": customer,
        "category": category,
        "hours": str(hours),
        "prepaid_hours": str(prepaid),
        "unit_price": None if unit_price is None else str(unit_price),
        "currency": "SEK",
        "performed_on": performed_on.isoformat(),
        "description": description,
        "reference": reference,
        "changed_at": changed.isoformat().replace("+00:00", "Z"),
    }


def generate(
    customers: int = 40,
    months: tuple[str, ...] = ("2026-08", "2026-09", "2026-10"),
    seed: int = 2026,
    specials: bool = True,
) -> list[dict[str, Any]]:
    """Entries in feed order (by changed_at); revisions of earlier entries come last."""
    rng = random.Random(seed)
    entries: list[dict[str, Any]] = []
    counter = 0

    def next_id() -> str:
        nonlocal counter
        counter += 1
        return f"E{counter:06d}"

    for n in range(customers):
        customer = str(FIRST_CUSTOMER + n)
        prepaid_customer = n % 4 == 0
        agreed_price = rng.choice(_PRICES) if n % 3 else None
        balance = Decimal(0)
        for month_index, month in enumerate(months):
            year, mon = (int(p) for p in month.split("-"))
            if prepaid_customer and month_index == 0:
                hours, price = rng.choice(_PACKAGES)
                entries.append(
                    _entry(
                        next_id(),
                        customer,
                        "prepaid_hours",
                        hours,
                        date(year, mon, 1),
                        f"Timbank {hours} timmar",
                        kind="topup",
                        unit_price=price / hours,
                        reference=f"ORDER-{year}{mon:02d}-{n:03d}",
                    )
                )
                balance += hours
            for _ in range(rng.randint(2, 5)):
                included = rng.random() < 0.3
                category = rng.choice(_INCLUDED if included else _BILLABLE)
                hours = Decimal(rng.choice([25, 50, 75, 100, 150, 200, 300, 450])) / 100
                day = date(year, mon, rng.randint(1, 28))
                prepaid = Decimal(0)
                if prepaid_customer and not included and balance > 0:
                    prepaid = min(balance, hours)
                    balance -= prepaid
                reference = f"ÄR-{year}-{rng.randint(1000, 9999)}" if rng.random() < 0.5 else None
                entries.append(
                    _entry(
                        next_id(),
                        customer,
                        category,
                        hours,
                        day,
                        rng.choice(_WORK[category]),
                        prepaid=prepaid,
                        unit_price=agreed_price,
                        reference=reference,
                    )
                )
    entries.sort(key=lambda e: (e["changed_at"], e["id"]))
    if specials:
        entries.extend(_specials(entries, months[-1]))
    return entries


def _specials(entries: list[dict[str, Any]], last_month: str) -> list[dict[str, Any]]:
    """The cases a demo must show: a revision, a void, an unknown category, a malformed entry."""
    year, mon = (int(p) for p in last_month.split("-"))
    later = datetime(year, mon, 28, 9, 0, tzinfo=UTC) + timedelta(days=5)
    billable = [e for e in entries if e["category"] in _BILLABLE and e["prepaid_hours"] == "0"]
    revised = dict(billable[3], revision=2, hours="3.5")
    revised["changed_at"] = later.isoformat().replace("+00:00", "Z")
    voided = dict(billable[7], revision=2, status="void")
    voided["changed_at"] = (later + timedelta(minutes=5)).isoformat().replace("+00:00", "Z")
    day = date(year, mon, 15)
    unknown = _entry(
        "E900001",
        str(FIRST_CUSTOMER + 5),
        "onsite_visit",
        Decimal("4"),
        day,
        "Besök på plats hos kund",
        changed_at=later + timedelta(minutes=10),
    )
    malformed = _entry(
        "E900002",
        str(FIRST_CUSTOMER + 6),
        "training",
        Decimal("1"),
        day,
        "Utbildning, registrerad med felaktiga timmar",
        changed_at=later + timedelta(minutes=15),
    )
    malformed["hours"] = "två"
    missing = _entry(
        "E900003",
        MISSING_CUSTOMER,
        "installation",
        Decimal("2"),
        day,
        "Installation hos ny kund",
        unit_price=Decimal("1150.00"),
        changed_at=later + timedelta(minutes=20),
    )
    return [revised, voided, unknown, malformed, missing]


def write(path: Path = SAMPLE_PATH) -> None:
    lines = [json.dumps(e, ensure_ascii=False) for e in generate()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def load(path: Path = SAMPLE_PATH) -> list[object]:
    """Entries of a JSON-lines file, exactly as written (numbers stay Decimal)."""
    entries: list[object] = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            entries.append(json.loads(line, parse_float=Decimal))
        except ValueError as exc:
            raise ValueError(f"{path}:{number}: not JSON: {exc}") from None
    return entries


if __name__ == "__main__":
    write()
