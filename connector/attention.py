"""What needs a person: the stored attention list in plain words, what to do about each item,
and acknowledgements (`connector attention`, `connector attention ack`).

The reason texts come from the planner, the sync and the targets' refusals. `RULES` reads them
back into a kind (to group them) and a short "what to do"; it is the one place that knows the
messages (docs/operations.md, "When something needs attention", lists the same), and
tests/test_attention.py holds it to every message the docs list.
"""

from __future__ import annotations

import getpass
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from connector import targets
from connector.errors import ConfigError
from connector.planning import clean
from connector.settings import Settings
from connector.state import BOUND_SYSTEM, StateStore, StoredAttention

# The answer to "what do I do?" for an item that cannot be fixed where it comes from.
ACK_HINT = "connector attention ack {ref} --why '...'"


@dataclass(frozen=True)
class Advice:
    kind: str  # stable name of the kind of problem, for grouping and for programs
    label: str  # the kind in plain words
    todo: str  # what to do, in one or two sentences


# (values found in the reason, the target's display name, the item's ref) -> what to do
Todo = Callable[[dict[str, str], str, str], str]


@dataclass(frozen=True)
class Rule:
    kind: str
    label: str
    pattern: re.Pattern[str]
    todo: Todo


def _quoted(ref: str) -> str:
    # Feed positions carry spaces and commas ("feed cursor v1.40, item 3"): quote for a shell.
    return ref if re.fullmatch(r"[\w.@:/-]+", ref) else "'" + ref.replace("'", "'\\''") + "'"


def _ack(ref: str) -> str:
    return ACK_HINT.format(ref=_quoted(ref))


def _rule(kind: str, label: str, pattern: str, todo: Todo) -> Rule:
    return Rule(kind, label, re.compile(pattern, re.DOTALL), todo)


def _or(value: str | None, default: str) -> str:
    return value if value else default


# First match wins: the specific readings come before the general ones.
RULES: tuple[Rule, ...] = (
    _rule(
        "mapping_drift",
        "mapping change would re-plan an invoiced entry",
        r"it stays on invoice (?P<key>\S+) as written",
        lambda m, s, r: (
            "nothing was changed: the mapping files would now plan this invoiced "
            "entry differently (often a typo); correct the mappings (connector mappings validate "
            "shows what they would do), or re-invoice it on purpose"
        ),
    ),
    _rule(
        "held",
        "month held",
        r"^held: |until released",
        lambda m, s, r: (
            "check that customer's invoices of the month in "
            f"{s}, correct what is wrong, then: connector state release "
            f"--customer {_or(m.get('customer'), 'N')} --period {_or(m.get('period'), 'YYYY-MM')}"
        ),
    ),
    _rule(
        "unknown_invoice",
        "invoice the state does not know",
        r"that the state directory .* does not know",
        lambda m, s, r: (
            "restore the right state directory (check CONNECTOR_STATE_DIR), or "
            "rebuild this one from the accounting system and the ledger: connector state rebuild"
        ),
    ),
    _rule(
        "locked_by_person",
        "invoice changed by a person",
        r"was changed in .+ by a person|is locked: a person changed it",
        lambda m, s, r: (
            f"nothing required: the connector leaves that invoice alone in {s} and "
            "puts later changes on a supplementary invoice; once you have looked at it: " + _ack(r)
        ),
    ),
    _rule(
        "stored_differently",
        "invoice stored differently from what was sent",
        r"stored invoice (?P<number>\S+) \((?P<key>[^)]+)\) differently",
        lambda m, s, r: (
            f"check invoice {m['number']} in {s} and correct it by hand (the "
            f"connector no longer changes it); please report it: {s} did something unexpected"
        ),
    ),
    _rule(
        "duplicate_invoices",
        "several live invoices with one reference",
        r"has several live invoices with reference (?P<key>\S+)(?: \((?P<numbers>[^)]+)\))?",
        lambda m, s, r: (
            "cancel (delete, for Visma drafts) all but one of "
            + _or(m.get("numbers"), "them")
            + f" in {s}; nothing is sent for {m['key']} meanwhile"
        ),
    ),
    _rule(
        "private_person",
        "customer is a private person",
        r"customer (?P<customer>\S+) is a private person in",
        lambda m, s, r: (
            f"invoice customer {m['customer']}'s hours by hand, or register the "
            f"customer as a company in {s} if it is one"
        ),
    ),
    _rule(
        "customer_currency",
        "customer invoiced in another currency",
        r"customer (?P<customer>\S+) is invoiced in (?P<currency>\S+) in .*but these hours",
        lambda m, s, r: (
            f"change customer {m['customer']}'s currency in {s}, or the "
            "entries' currency in the ledger"
        ),
    ),
    _rule(
        "customer_missing",
        "customer missing in the accounting system",
        r"customer (?P<customer>\S+) does not exist in",
        lambda m, s, r: (
            f"create customer {m['customer']} in {s} (finance owns customers); "
            "the next sync sends the invoice"
        ),
    ),
    _rule(
        "something_missing",
        "customer or article missing",
        r"names does not exist in",
        lambda m, s, r: (
            f"create in {s} what the message names (the customer or the "
            "articles), or change the mapping; the next sync sends it"
        ),
    ),
    _rule(
        "article_missing",
        "article missing or inactive",
        r"articles? (?P<article>.+?) (?:\(category '(?P<category>[^']+)'\) )?"
        r"(?:does|do) not exist or (?:is|are) inactive",
        lambda m, s, r: (
            f"create or activate article {m['article']} in {s}, or change the "
            + (f"mapping of category '{m['category']}'" if m.get("category") else "mapping")
            + "; the next sync sends it"
        ),
    ),
    _rule(
        "price_zero",
        "would be invoiced at price 0",
        r"would be invoiced at price 0(?:.*?article (?P<article>\S+) has no sales price)?"
        r"(?:.*?(?:set price for|price is 0 for) '(?P<category>[^']+)')?",
        lambda m, s, r: (
            "give article "
            + _or(m.get("article"), "the article")
            + f" a sales price in {s}, or set price for '"
            + _or(m.get("category"), "the category")
            + "' in the mappings, or the entry's unit_price; if the hours are given away on "
            "purpose, set free = true on the category"
        ),
    ),
    _rule(
        "unit_missing",
        "unit missing in the accounting system",
        r"unit (?P<unit>.+?) does not exist in",
        lambda m, s, r: (
            f"add the unit {m['unit']} in {s} (Settings > Units), or change unit in the mappings"
        ),
    ),
    _rule(
        "period_locked",
        "invoice date in a locked period",
        r"refuses the invoice date",
        lambda m, s, r: (
            f"unlock the period in {s}, or set CONNECTOR_INVOICE__DATE=next_month_start"
        ),
    ),
    _rule(
        "outcome_unknown",
        "a create's outcome not known yet",
        r"had an unknown outcome and .* does not list it yet",
        lambda m, s, r: "nothing: a later run looks again and adopts or sends it",
    ),
    _rule(
        "read_refused",
        "last write cannot be checked",
        r"cannot check what became of the last write to (?P<key>\S+)",
        lambda m, s, r: f"look at invoice {m['key']} in {s}; the next runs try again",
    ),
    _rule(
        "withdrawn_by_person",
        "invoice gone from the accounting system",
        r"is no longer in .+: taken as",
        lambda m, s, r: (
            "nothing, if a person withdrew it on purpose (its entries are not "
            f"invoiced again); if it was a mistake, check the invoices in {s}. Once looked at: "
            + _ack(r)
        ),
    ),
    _rule(
        "invoice_not_found",
        "invoice not found",
        r"is not found in .+ where invoices cannot be deleted",
        lambda m, s, r: (
            "check that the connector is set to the right company and address "
            f"(CONNECTOR_TARGET and the {s} settings); nothing is sent for it until it is found"
        ),
    ),
    _rule(
        "invoice_not_listed_yet",
        "invoice not listed yet",
        r"is not found in .+ now",
        lambda m, s, r: "nothing: a later run looks again",
    ),
    _rule(
        "sanity_limit",
        "beyond a sanity limit",
        r"CONNECTOR_LIMITS__\w+.*?not invoiced until checked"
        r"(?:.*?CONNECTOR_LIMITS__CONFIRMED=(?P<confirm>\S+))?",
        lambda m, s, r: (
            "correct the entry in the ledger, or if it is right add "
            + _or(m.get("confirm"), "ID@REVISION")
            + " to CONNECTOR_LIMITS__CONFIRMED"
        ),
    ),
    _rule(
        "priced_by_target",
        "row priced by an earlier version",
        r"was priced by .+an earlier version of the connector",
        lambda m, s, r: f"correct that invoice by hand in {s}",
    ),
    _rule(
        "currency",
        "currency differs from the invoice's",
        r"currency (?P<currency>\S+) differs from|currency changed from",
        lambda m, s, r: "correct the entry's currency in the ledger, or invoice it by hand",
    ),
    _rule(
        "unknown_category",
        "category not in the mappings",
        r"unknown category '(?P<category>[^']+)'",
        lambda m, s, r: (
            f"add category '{m['category']}' to the mappings "
            f"([categories.{m['category']}] in a mapping file; check with connector mappings "
            "validate); the next sync invoices it"
        ),
    ),
    _rule(
        "malformed_entry",
        "malformed ledger entry",
        r"^malformed entry: (?P<field>[^:]+):",
        lambda m, s, r: (
            f"correct the entry's {m['field']} in the ledger; the corrected "
            "revision goes through. If it cannot be corrected there: " + _ack(r)
        ),
    ),
    _rule(
        "prepaid_overdraw",
        "prepaid hours overdrawn",
        r"^customer (?P<customer>\S+) drew .+ more prepaid hours than bought",
        lambda m, s, r: (
            f"see the account: connector balance --customer {m['customer']}; add the missing "
            "top-up in the ledger (dated on or before that day) or correct the draw's "
            "prepaid_hours; to invoice such hours as ordinary hours, set "
            "CONNECTOR_PREPAID__OVERDRAW=invoice"
        ),
    ),
    _rule(
        "top_up_price",
        "top-up without price",
        r"top-up without price",
        lambda m, s, r: (
            "set unit_price on the ledger entry, or price for 'prepaid_hours' in the mappings"
        ),
    ),
    _rule(
        "entry_invalid",
        "ledger entry the connector cannot invoice",
        r"a top-up must use category|a debit cannot use category|has more than \d+ decimals",
        lambda m, s, r: "correct the entry in the ledger; the corrected revision goes through",
    ),
    _rule(
        "missing_account",
        "sales account missing",
        r"a sales account is missing|an account is missing",
        lambda m, s, r: (
            f"set the missing accounts in {s} (the articles' sales accounts, or "
            "the company's predefined accounts)"
        ),
    ),
    _rule(
        "connector_bug",
        "refused as a connector bug",
        r"connector bug",
        lambda m, s, r: "report it (a bug in the connector), with this message",
    ),
    _rule(
        "rate_limited",
        "request limit exceeded",
        r"limit of requests per minute was still exceeded",
        lambda m, s, r: "nothing: the next run sends it again",
    ),
    _rule(
        "refused",
        "refused by the accounting system",
        r"refuse",
        lambda m, s, r: (
            f"correct what {s} names (often an article's unit or account "
            "coding); the next sync sends it"
        ),
    ),
)

OTHER = Rule(
    "other",
    "other",
    re.compile(""),
    lambda m, s, r: (
        "fix what the message names; the next sync goes on. If it cannot be "
        "fixed at its source: " + _ack(r)
    ),
)

# "its invoice K was not sent: <why>": the entry is fine, the invoice's reason says what to do.
_NOT_SENT = re.compile(r"^its invoice (?P<key>\S+) (?:was|would) not (?:be )?sent: (?P<why>.*)$")
# Values some messages carry beside their kind's own (held months name both).
_RELEASE = re.compile(r"--customer (?P<customer>\S+) --period (?P<period>\d{4}-\d{2})")


def advise(reason: str, system: str = "the accounting system", ref: str = "ID") -> Advice:
    """The kind of a reason and what to do about it. `system` is the display name of the
    accounting system, `ref` the item's id (for the acknowledgement command)."""
    text = clean(reason)
    blocked = _NOT_SENT.match(text)
    if blocked:
        text = blocked["why"]
        inner = advise(text, system, ref)
        if inner.kind != OTHER.kind:
            return inner
        return Advice(
            "invoice_not_sent",
            "its invoice was not sent",
            f"the entry is fine: see what invoice {blocked['key']} needs (connector attention "
            "lists it); fixing that sends it",
        )
    for rule in (*RULES, OTHER):
        found = rule.pattern.search(text)
        if found is None:
            continue
        values = {k: v for k, v in found.groupdict().items() if v is not None}
        extra = _RELEASE.search(text)
        if extra:
            values = {**extra.groupdict(), **values}
        return Advice(rule.kind, rule.label, rule.todo(values, system, ref))
    raise AssertionError("unreachable: OTHER matches every text")  # pragma: no cover


# --- the list -------------------------------------------------------------------------------


def item_json(stored: StoredAttention, system: str) -> dict[str, Any]:
    item = stored.item
    advice = advise(item.reason, system, item.ref)
    ack = stored.ack
    return {
        "ref": item.ref,
        "scope": item.scope,
        "customer_number": item.customer_number,
        "period": item.period,
        "reason": clean(item.reason),
        "kind": advice.kind,
        "kind_label": advice.label,
        "what_to_do": advice.todo,
        "first_seen": stored.first_seen,
        "reason_since": stored.reason_since,
        "last_seen": stored.last_seen,
        "acknowledged": None if ack is None else {"who": ack.who, "at": ack.at, "why": ack.why},
    }


def state_system(store: StateStore, settings: Settings) -> str:
    """The accounting system whose records the state holds: the one it is bound to, else the
    configured one."""
    recorded = store.meta(BOUND_SYSTEM)
    if recorded is not None:
        # Every state a sync has run on: answered without importing the sync (and with it the
        # HTTP clients), which `connector status` and `attention` have no use for.
        return recorded
    from connector.sync import bound_system

    return bound_system(store) or settings.target


def attention_document(settings: Settings, *, include_acknowledged: bool = False) -> dict[str, Any]:
    """`connector attention`: every item needing attention (and with `include_acknowledged`,
    the acknowledged ones too), invoices first."""
    store = StateStore.open_existing(settings.state_dir)
    try:
        system = state_system(store, settings)
        stored = store.attention_items(system)
    finally:
        store.close()
    name = targets.profile(system).display_name
    shown = [s for s in stored if include_acknowledged or s.ack is None]
    return {
        "target": system,
        "target_name": name,
        "state_dir": str(settings.state_dir),
        "include_acknowledged": include_acknowledged,
        "counts": {
            "open": sum(1 for s in stored if s.ack is None),
            "acknowledged": sum(1 for s in stored if s.ack is not None),
        },
        "items": [item_json(s, name) for s in shown],
    }


def acknowledge(settings: Settings, ref: str, why: str, who: str | None = None) -> dict[str, Any]:
    """`connector attention ack`: a person has seen the item and accepts it as it is. It holds
    for the item's present reason only: if the reason changes, the item is listed again."""
    why = clean(why)
    if not why:
        raise ConfigError("--why must say why the item is acknowledged (it is kept in the record)")
    store = StateStore.open_existing(settings.state_dir)
    try:
        system = state_system(store, settings)
        found = [s for s in store.attention_items(system) if s.item.ref == ref]
        if not found:
            raise ConfigError(
                f"{ref!r} is not in the attention list of {settings.state_dir} "
                "(connector attention lists the ids)"
            )
        (stored,) = found
        store.acknowledge(system, ref, stored.item.reason, who or getpass.getuser(), why)
        (now,) = [s for s in store.attention_items(system) if s.item.ref == ref]
    finally:
        store.close()
    return item_json(now, targets.profile(system).display_name)
