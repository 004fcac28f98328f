"""The reading of attention reasons into kinds and "what to do" (connector/attention.py)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from connector.attention import OTHER, RULES, advise
from connector.mappings import Mappings
from connector.state import AttentionItem, StateStore
from tests.conftest import REPO
from tests.harness import TARGETS, make_world


def _documented_messages() -> list[str]:
    """The messages listed in docs/operations.md, "When something needs attention"."""
    text = (REPO / "docs" / "operations.md").read_text(encoding="utf-8")
    section = text.split("## When something needs attention", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^\| `([^`]+)` \|", section, flags=re.MULTILINE)


def test_every_documented_message_has_its_own_advice() -> None:
    messages = _documented_messages()
    assert len(messages) >= 20
    unread = [m for m in messages if advise(m, "Fortnox").kind == OTHER.kind]
    assert unread == []


def test_kinds_are_unique_and_every_rule_is_reached() -> None:
    kinds = [r.kind for r in RULES]
    assert len(kinds) == len(set(kinds))
    reached = {advise(m, "Fortnox").kind for m in _documented_messages()}
    # Every documented kind is read; the rest are readings of messages the docs leave to
    # docs/fortnox.md and docs/visma.md.
    assert len(reached) >= 20


@pytest.mark.parametrize(
    ("reason", "kind", "todo"),
    [
        (
            "customer 1042 does not exist in Fortnox",
            "customer_missing",
            "create customer 1042 in Fortnox (finance owns customers)",
        ),
        (
            "its invoice SK-1042-2026-08 was not sent: customer 1042 does not exist in Fortnox",
            "customer_missing",
            "create customer 1042 in Fortnox",
        ),
        (
            "unknown category 'onsite_visit': add it to the mapping files",
            "unknown_category",
            "add category 'onsite_visit' to the mappings ([categories.onsite_visit]",
        ),
        (
            "40 hours exceed CONNECTOR_LIMITS__MAX_HOURS (20): not invoiced until checked. "
            "Correct the ledger entry, or if it is right, confirm it with "
            "CONNECTOR_LIMITS__CONFIRMED=E7@3",
            "sanity_limit",
            "add E7@3 to CONNECTOR_LIMITS__CONFIRMED",
        ),
        (
            "held: draft 12 bills rows of unknown origin. Check that month in Fortnox, then: "
            "connector state release --customer 1004 --period 2026-09",
            "held",
            "connector state release --customer 1004 --period 2026-09",
        ),
        (
            "would be invoiced at price 0: article SK-PL has no sales price in Visma eAccounting"
            " and neither the ledger entry nor the mapping gives a price (set price for "
            "'project_management' in the mappings, or a sales price in Visma eAccounting)",
            "price_zero",
            "give article SK-PL a sales price in Visma eAccounting, or set price for "
            "'project_management'",
        ),
        (
            "article SK-X (category 'installation') does not exist or is inactive in Fortnox: "
            "create or activate it there, or change the mapping",
            "article_missing",
            "create or activate article SK-X in Fortnox, or change the mapping of category "
            "'installation'",
        ),
        (
            "invoice 12 (SK-1004-2026-09) was changed in Visma eAccounting by a person; the "
            "connector no longer changes it and sends later changes on a supplementary invoice",
            "locked_by_person",
            "once you have looked at it: connector attention ack ID --why",
        ),
        (
            "unknown category 'trainnig'; it stays on invoice SK-1004-2026-09 as written, "
            "because the ledger entry has not changed: correct the mappings, or re-invoice it "
            "on purpose",
            "mapping_drift",
            "correct the mappings",
        ),
        (
            "its invoice SK-1004-2026-09 was not sent: something else entirely",
            "invoice_not_sent",
            "see what invoice SK-1004-2026-09 needs",
        ),
    ],
)
def test_reasons_read_into_what_to_do(reason: str, kind: str, todo: str) -> None:
    advice = advise(reason, "Fortnox" if "Visma" not in reason else "Visma eAccounting", "ID")
    assert advice.kind == kind
    assert todo in advice.todo


def test_an_unknown_reason_gets_the_general_advice_with_the_ack_command() -> None:
    advice = advise("the moon is in the wrong phase", "Fortnox", "feed cursor v1.4, item 3")
    assert advice.kind == "other"
    # A feed position has spaces and commas: the command is quoted for a shell.
    assert "connector attention ack 'feed cursor v1.4, item 3' --why" in advice.todo


@pytest.mark.parametrize("target", TARGETS)
def test_every_reason_a_sample_sync_gives_is_read(
    target: str, tmp_path: Path, mappings: Mappings, sleeps: list[float]
) -> None:
    """What the sample's sync really says (both systems): every item has its own advice."""
    world = make_world(tmp_path, mappings, target=target)
    report = world.sync()
    reasons = [*report.invoice_attention.values(), *(r.reason for r in report.entry_attention())]
    assert reasons
    display = world.profile.display_name
    assert {r: advise(r, display).kind for r in reasons if advise(r, display).kind == "other"} == {}


def test_an_ack_survives_a_new_support_id_on_the_same_refusal(tmp_path: Path) -> None:
    """Visma names each refusal with a new ErrorId: the same refusal, retried the next night,
    keeps its acknowledgement; another refusal does not."""
    store = StateStore(tmp_path)
    first = "Visma eAccounting refuses row 2 (SK-RAD): unit (Visma ErrorId 1a2b)"
    store.replace_attention_items("visma", [AttentionItem("SK-1004-2026-09", first, "invoice")])
    store.acknowledge("visma", "SK-1004-2026-09", first, "kim", "known, fixed by hand")
    again = first.replace("1a2b", "9f8e")
    store.replace_attention_items("visma", [AttentionItem("SK-1004-2026-09", again, "invoice")])
    (item,) = store.attention_items("visma")
    assert item.ack is not None and item.item.reason == again
    other = "Visma eAccounting refuses row 3 (SK-X): account (Visma ErrorId 77)"
    store.replace_attention_items("visma", [AttentionItem("SK-1004-2026-09", other, "invoice")])
    (item,) = store.attention_items("visma")
    assert item.ack is None
    store.close()
