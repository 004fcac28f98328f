"""Local state: one SQLite file (WAL) under CONNECTOR_STATE_DIR, plus a lock file.

Holds the ledger mirror and feed cursor, which entry sits on which invoice in which revision,
the invoices known per target, the entries needing attention, and a record of every run.
A page of entries and the cursor after it commit in one transaction, so the cursor never gets
ahead of what is stored: a kill at any instant loses at most a page that is fetched again.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from connector.errors import LockHeldError, StateError, StateMismatchError
from connector.ledger import Entry, FeedItem, InvalidEntry, parse_entry
from connector.planning import (
    Action,
    EntryResult,
    Invoiced,
    InvoiceKey,
    InvoiceStatus,
    KnownInvoice,
    Placement,
    PlannedInvoice,
    Row,
)
from connector.targets.base import RemoteRow, rows_match

DB_NAME = "connector.sqlite3"
LOCK_NAME = "connector.lock"

# Each migration moves the schema one version up; never edit one that has shipped.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE entries (
        id TEXT PRIMARY KEY,
        revision INTEGER,
        raw TEXT NOT NULL,
        feed_seq INTEGER NOT NULL,
        seen_at TEXT NOT NULL
    );
    CREATE TABLE feed_rejects (
        position TEXT PRIMARY KEY,
        raw TEXT NOT NULL,
        seen_at TEXT NOT NULL
    );
    CREATE TABLE invoices (
        target TEXT NOT NULL,
        key TEXT NOT NULL,
        customer_number TEXT NOT NULL,
        period TEXT NOT NULL,
        sequence INTEGER NOT NULL,
        status TEXT NOT NULL,
        currency TEXT,
        document_number TEXT,
        digest TEXT,
        written TEXT,
        pending TEXT,
        pending_since TEXT,
        refused_digest TEXT,
        refused_code TEXT,
        updated_at TEXT NOT NULL,
        PRIMARY KEY (target, key)
    );
    CREATE TABLE placements (
        target TEXT NOT NULL,
        entry_id TEXT NOT NULL,
        key TEXT NOT NULL,
        revision INTEGER NOT NULL,
        rows TEXT NOT NULL,
        seq INTEGER NOT NULL,
        PRIMARY KEY (target, entry_id, key)
    );
    CREATE TABLE attention (
        target TEXT NOT NULL,
        ref TEXT NOT NULL,
        reason TEXT NOT NULL,
        customer_number TEXT,
        period TEXT,
        first_seen TEXT NOT NULL,
        last_seen TEXT NOT NULL,
        PRIMARY KEY (target, ref)
    );
    CREATE TABLE runs (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        command TEXT NOT NULL,
        target TEXT NOT NULL,
        started_at TEXT NOT NULL,
        finished_at TEXT,
        exit_code INTEGER,
        summary TEXT
    );
    """,
    # 2: months held after a state rebuild, until a person has looked (connector state release).
    """
    CREATE TABLE holds (
        target TEXT NOT NULL,
        customer_number TEXT NOT NULL,
        period TEXT NOT NULL,
        reason TEXT NOT NULL,
        created_at TEXT NOT NULL,
        PRIMARY KEY (target, customer_number, period)
    );
    """,
    # 3: target-neutral invoice ids: what addresses the invoice in the target's API (Fortnox's
    # document number, Visma's draft GUID) and what a person sees (Visma drafts have none).
    """
    ALTER TABLE invoices RENAME COLUMN document_number TO remote_id;
    ALTER TABLE invoices ADD COLUMN display_number TEXT;
    UPDATE invoices SET display_number = remote_id WHERE target = 'fortnox';
    ALTER TABLE invoices ADD COLUMN vanished_since TEXT;
    """,
    # 4: alerts already sent (connector/notify.py), per channel: an attention item (kind
    # 'attention': its ref and reason) is reported once; a failure (kind 'failure': its exit
    # code and message) at most once a day.
    """
    CREATE TABLE notified (
        channel TEXT NOT NULL,
        target TEXT NOT NULL,
        kind TEXT NOT NULL,
        ref TEXT NOT NULL,
        reason TEXT NOT NULL,
        notified_at TEXT NOT NULL,
        PRIMARY KEY (channel, target, kind, ref, reason)
    );
    """,
    # 5: the month-end close (connector close): per invoice, the steps done (dated, booked,
    # sent) and those under way, so a close killed half-way is finished, not repeated; and
    # every close forced past the audit, with who, when and why.
    """
    CREATE TABLE closings (
        target TEXT NOT NULL,
        key TEXT NOT NULL,
        customer_number TEXT NOT NULL,
        period TEXT NOT NULL,
        remote_id TEXT NOT NULL,
        send_wanted INTEGER NOT NULL DEFAULT 0,
        invoice_date TEXT,
        dated_at TEXT,
        booking_since TEXT,
        booked_at TEXT,
        booked_by TEXT,
        booked_id TEXT,
        booked_number TEXT,
        sending_since TEXT,
        sent TEXT,
        sent_at TEXT,
        sent_detail TEXT,
        held TEXT,
        updated_at TEXT NOT NULL,
        PRIMARY KEY (target, key)
    );
    CREATE TABLE close_overrides (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        target TEXT NOT NULL,
        period TEXT NOT NULL,
        customer_number TEXT,
        who TEXT NOT NULL,
        why TEXT NOT NULL,
        differences TEXT NOT NULL,
        at TEXT NOT NULL
    );
    """,
    # 6: attention kept per invoice as well as per entry (scope), items that stay listed until a
    # person acts (standing: an invoice the state does not know), since when an item has had its
    # present reason, and acknowledgements (connector attention ack): who, when, why.
    """
    ALTER TABLE attention ADD COLUMN scope TEXT NOT NULL DEFAULT 'entry';
    ALTER TABLE attention ADD COLUMN standing INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE attention ADD COLUMN reason_since TEXT;
    CREATE TABLE acks (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        target TEXT NOT NULL,
        ref TEXT NOT NULL,
        reason TEXT NOT NULL,
        who TEXT NOT NULL,
        at TEXT NOT NULL,
        why TEXT NOT NULL
    );
    CREATE INDEX acks_by_ref ON acks (target, ref);
    """,
    # 7: entries a person chose to invoice again although their invoice was cancelled
    # (connector resync --reinvoice-cancelled): the decision, per entry and cancelled invoice.
    """
    CREATE TABLE reinvoiced (
        target TEXT NOT NULL,
        entry_id TEXT NOT NULL,
        key TEXT NOT NULL,
        decided_at TEXT NOT NULL,
        PRIMARY KEY (target, entry_id, key)
    );
    """,
    # 8: the pull asks for the highest feed position on every page; without an index that
    # read scans the whole mirror, so a first pull slowed as it grew (issue 10).
    """
    CREATE INDEX entries_by_feed_seq ON entries (feed_seq);
    """,
    # 9: incremental planning (issue 10). Each entry is validated once, when pulled: its
    # customer (valid entries) or why it breaks the contract (invalid ones). Customers whose
    # planning inputs changed since the last complete sync are marked by triggers, so no
    # write path (pull, sync, close, release, rebuild, resync) can forget to mark one.
    """
    ALTER TABLE entries ADD COLUMN customer_number TEXT;
    ALTER TABLE entries ADD COLUMN invalid TEXT;
    CREATE INDEX entries_by_customer ON entries (customer_number);
    CREATE INDEX entries_invalid ON entries (id) WHERE invalid IS NOT NULL;
    CREATE INDEX placements_by_key ON placements (target, key);
    CREATE INDEX placements_by_entry ON placements (entry_id);
    CREATE INDEX invoices_by_customer ON invoices (target, customer_number);
    CREATE TABLE plan_dirty (customer_number TEXT NOT NULL);
    CREATE INDEX plan_dirty_by_customer ON plan_dirty (customer_number);
    CREATE TRIGGER dirty_entry_insert AFTER INSERT ON entries
        WHEN NEW.customer_number IS NOT NULL
        BEGIN INSERT INTO plan_dirty SELECT NEW.customer_number WHERE NOT EXISTS
            (SELECT 1 FROM plan_dirty WHERE customer_number = NEW.customer_number); END;
    CREATE TRIGGER dirty_entry_update AFTER UPDATE ON entries
        BEGIN
            INSERT INTO plan_dirty SELECT NEW.customer_number
                WHERE NEW.customer_number IS NOT NULL AND NOT EXISTS
                (SELECT 1 FROM plan_dirty WHERE customer_number = NEW.customer_number);
            INSERT INTO plan_dirty SELECT OLD.customer_number
                WHERE OLD.customer_number IS NOT NULL AND NOT EXISTS
                (SELECT 1 FROM plan_dirty WHERE customer_number = OLD.customer_number);
            INSERT INTO plan_dirty
                SELECT DISTINCT i.customer_number FROM placements p
                JOIN invoices i ON i.target = p.target AND i.key = p.key
                WHERE p.entry_id = NEW.id AND NOT EXISTS
                    (SELECT 1 FROM plan_dirty d WHERE d.customer_number = i.customer_number);
        END;
    CREATE TRIGGER dirty_entry_delete AFTER DELETE ON entries
        BEGIN
            INSERT INTO plan_dirty SELECT OLD.customer_number
                WHERE OLD.customer_number IS NOT NULL AND NOT EXISTS
                (SELECT 1 FROM plan_dirty WHERE customer_number = OLD.customer_number);
            INSERT INTO plan_dirty
                SELECT DISTINCT i.customer_number FROM placements p
                JOIN invoices i ON i.target = p.target AND i.key = p.key
                WHERE p.entry_id = OLD.id AND NOT EXISTS
                    (SELECT 1 FROM plan_dirty d WHERE d.customer_number = i.customer_number);
        END;
    CREATE TRIGGER dirty_invoice_insert AFTER INSERT ON invoices
        BEGIN INSERT INTO plan_dirty SELECT NEW.customer_number WHERE NOT EXISTS
            (SELECT 1 FROM plan_dirty WHERE customer_number = NEW.customer_number); END;
    CREATE TRIGGER dirty_invoice_update AFTER UPDATE ON invoices
        WHEN OLD.status IS NOT NEW.status OR OLD.currency IS NOT NEW.currency
            OR OLD.remote_id IS NOT NEW.remote_id OR OLD.digest IS NOT NEW.digest
            OR OLD.display_number IS NOT NEW.display_number OR OLD.pending IS NOT NEW.pending
            OR OLD.refused_digest IS NOT NEW.refused_digest
        BEGIN INSERT INTO plan_dirty SELECT NEW.customer_number WHERE NOT EXISTS
            (SELECT 1 FROM plan_dirty WHERE customer_number = NEW.customer_number); END;
    CREATE TRIGGER dirty_invoice_delete AFTER DELETE ON invoices
        BEGIN INSERT INTO plan_dirty SELECT OLD.customer_number WHERE NOT EXISTS
            (SELECT 1 FROM plan_dirty WHERE customer_number = OLD.customer_number); END;
    CREATE TRIGGER dirty_placement_insert AFTER INSERT ON placements
        BEGIN INSERT INTO plan_dirty SELECT customer_number FROM invoices
            WHERE target = NEW.target AND key = NEW.key AND NOT EXISTS
            (SELECT 1 FROM plan_dirty d WHERE d.customer_number = invoices.customer_number); END;
    CREATE TRIGGER dirty_placement_update AFTER UPDATE ON placements
        BEGIN INSERT INTO plan_dirty SELECT customer_number FROM invoices
            WHERE target = NEW.target AND key = NEW.key AND NOT EXISTS
            (SELECT 1 FROM plan_dirty d WHERE d.customer_number = invoices.customer_number); END;
    CREATE TRIGGER dirty_placement_delete AFTER DELETE ON placements
        BEGIN INSERT INTO plan_dirty SELECT customer_number FROM invoices
            WHERE target = OLD.target AND key = OLD.key AND NOT EXISTS
            (SELECT 1 FROM plan_dirty d WHERE d.customer_number = invoices.customer_number); END;
    CREATE TRIGGER dirty_hold_insert AFTER INSERT ON holds
        BEGIN INSERT INTO plan_dirty SELECT NEW.customer_number WHERE NOT EXISTS
            (SELECT 1 FROM plan_dirty WHERE customer_number = NEW.customer_number); END;
    CREATE TRIGGER dirty_hold_update AFTER UPDATE ON holds
        BEGIN INSERT INTO plan_dirty SELECT NEW.customer_number WHERE NOT EXISTS
            (SELECT 1 FROM plan_dirty WHERE customer_number = NEW.customer_number); END;
    CREATE TRIGGER dirty_hold_delete AFTER DELETE ON holds
        BEGIN INSERT INTO plan_dirty SELECT OLD.customer_number WHERE NOT EXISTS
            (SELECT 1 FROM plan_dirty WHERE customer_number = OLD.customer_number); END;
    CREATE TRIGGER dirty_reinvoiced_insert AFTER INSERT ON reinvoiced
        BEGIN INSERT INTO plan_dirty SELECT customer_number FROM invoices
            WHERE target = NEW.target AND key = NEW.key AND NOT EXISTS
            (SELECT 1 FROM plan_dirty d WHERE d.customer_number = invoices.customer_number); END;
    CREATE TRIGGER dirty_reinvoiced_delete AFTER DELETE ON reinvoiced
        BEGIN INSERT INTO plan_dirty SELECT customer_number FROM invoices
            WHERE target = OLD.target AND key = OLD.key AND NOT EXISTS
            (SELECT 1 FROM plan_dirty d WHERE d.customer_number = invoices.customer_number); END;
    """,
)

# What a state directory is bound to (meta keys): the ledger it mirrors, and per target the
# accounting company it writes to.
BOUND_LEDGER = "bound_ledger"
BOUND_TARGET = "bound_target:"
# The accounting system a state directory writes to: one only, or hours could be invoiced in two.
BOUND_SYSTEM = "bound_system"
# When the feed cursor last moved, and when the feed was last read to its end (meta keys).
FEED_ADVANCED_AT = "feed_cursor_advanced_at"
FEED_READ_AT = "feed_read_at"
# The digest of what the last complete sync planned with (mappings, prices, limits, policy,
# planner version): another one plans every customer again (connector/sync.py).
PLAN_CONTEXT = "plan_context"


# Parts of a reason that change from one attempt to the next though the problem does not: the
# id a support desk asks for (Visma's ErrorId, a request id).
_VOLATILE = re.compile(r"\s*\((?:Visma ErrorId|HTTP \d+, request id|request id) [^)]*\)")


def stable_reason(reason: str | None) -> str | None:
    """A reason without its per-attempt ids: an acknowledgement, and since when an item has
    had its reason, must not be undone by a new support id on the same refusal."""
    return None if reason is None else _VOLATILE.sub("", reason)


def _statements(script: str) -> Iterator[str]:
    """A migration's statements, a trigger's body (with its own semicolons) kept whole."""
    pending = ""
    for part in script.split(";"):
        pending += part + ";"
        if sqlite3.complete_statement(pending):
            if pending.strip(" \n;"):
                yield pending
            pending = ""


def _validated(raw: Any) -> tuple[str | None, str | None]:
    """(customer, None) for a valid entry, (None, why not) for one that breaks the contract."""
    try:
        return parse_entry(raw).customer_number, None
    except InvalidEntry as exc:
        return None, exc.reason


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _dumps(value: Any) -> str:
    # Decimals from the JSON decoder are stored as strings: exact, and accepted by the parser.
    return json.dumps(value, default=str, ensure_ascii=False, separators=(",", ":"))


def _remote_row(data: dict[str, Any]) -> RemoteRow:
    def number(value: object) -> Decimal | None:
        return None if value is None else Decimal(str(value))

    return RemoteRow(
        article=data.get("article"),
        description=data.get("description", ""),
        quantity=number(data.get("quantity")),
        price=number(data.get("price")),
        unit=data.get("unit"),
    )


@dataclass(frozen=True)
class Written:
    """Rows as sent for one invoice: what the connector last wrote, or is writing now."""

    currency: str
    rows: tuple[Row, ...]
    revisions: dict[str, int]
    # The rows as the target answered after the write, in its own normal form: later reads are
    # compared with these, so the target's normalising is never taken for a person's edit.
    remote: tuple[RemoteRow, ...] | None = None

    def to_json(self) -> str:
        return _dumps(
            {
                "currency": self.currency,
                "rows": [r.to_json() for r in self.rows],
                "revisions": self.revisions,
                "remote": None if self.remote is None else [asdict(r) for r in self.remote],
            }
        )

    @classmethod
    def from_json(cls, text: str | None) -> Written | None:
        if text is None:
            return None
        data = json.loads(text)
        rows = tuple(Row.from_json(r) for r in data["rows"])
        remote = data.get("remote")
        return cls(
            data["currency"],
            rows,
            dict(data.get("revisions") or {}),
            None if remote is None else tuple(_remote_row(r) for r in remote),
        )

    @classmethod
    def of(cls, invoice: PlannedInvoice, remote: Sequence[RemoteRow] | None = None) -> Written:
        return cls(
            invoice.currency,
            invoice.rows,
            dict(invoice.revisions),
            None if remote is None else tuple(remote),
        )

    def holds(self, remote: Sequence[RemoteRow]) -> bool:
        """Whether the target's rows are these: as it answered then, or as they were sent."""
        if self.remote is not None and tuple(remote) == self.remote:
            return True
        return rows_match(remote, self.rows)

    def as_planned(
        self, key: InvoiceKey, remote_id: str | None, prefix: Sequence[Row] = ()
    ) -> PlannedInvoice:
        return PlannedInvoice(
            key=key,
            currency=self.currency,
            rows=(*prefix, *self.rows),
            action=Action.UPDATE,
            revisions=self.revisions,
            remote_id=remote_id,
        )


@dataclass(frozen=True)
class InvoiceRecord:
    key: InvoiceKey
    status: InvoiceStatus
    remote_id: str | None
    written: Written | None
    pending: Written | None
    updated_at: str
    refused_digest: str | None = None
    refused_code: str | None = None
    pending_since: str | None = None
    display_number: str | None = None
    # When a read first found it missing from the target (it may be converted or booked and
    # not listed yet): only after the target's settle time does it count as withdrawn.
    vanished_since: str | None = None


@dataclass(frozen=True)
class AttentionItem:
    """An entry (ledger id, or feed position) or an invoice (its key) needing attention."""

    ref: str
    reason: str
    scope: str = "entry"  # "entry" or "invoice"
    customer_number: str | None = None
    period: str | None = None
    # Stays listed from run to run until a person acts (not only in the run that found it).
    standing: bool = False


@dataclass(frozen=True)
class Ack:
    who: str
    at: str
    why: str


@dataclass(frozen=True)
class StoredAttention:
    item: AttentionItem
    first_seen: str
    last_seen: str
    reason_since: str
    ack: Ack | None


@dataclass(frozen=True)
class Closing:
    """The month-end steps of one invoice (connector close). `booking_since`/`sending_since`:
    a booking or sending was sent and its outcome is not recorded yet (a kill, a lost answer);
    the next close reads the invoice before doing anything."""

    key: InvoiceKey
    remote_id: str
    send_wanted: bool
    invoice_date: str | None
    dated_at: str | None
    booking_since: str | None
    booked_at: str | None
    booked_by: str | None  # "connector", or "found" (booked by a person, or an earlier close)
    booked_id: str | None
    booked_number: str | None
    sending_since: str | None
    sent: str | None  # a Delivery value, "already", "unknown"; None: not sent
    sent_at: str | None
    sent_detail: str | None
    # Why the connector will not book it (a due date that did not follow the terms): a person
    # corrects and books it; the connector then records it booked.
    held: str | None = None

    @property
    def booked(self) -> bool:
        return self.booked_at is not None


@dataclass(frozen=True)
class RunRecord:
    id: int
    command: str
    target: str
    started_at: str
    finished_at: str | None
    exit_code: int | None
    summary: dict[str, Any] | None


class StateStore:
    def __init__(self, state_dir: Path) -> None:
        self.dir = state_dir
        # When a write is marked pending; the sync compares it with its own clock (tests move
        # both together).
        self.clock: Callable[[], datetime] = lambda: datetime.now(UTC)
        try:
            if not state_dir.exists():
                # It holds the token file and the billing memory: private from the start. Two
                # processes may both find it missing (cron and a person): both go on.
                state_dir.mkdir(parents=True, mode=0o700, exist_ok=True)
            self.db = sqlite3.connect(
                state_dir / DB_NAME, isolation_level=None, timeout=30.0, check_same_thread=False
            )
            self._use_wal()
            self.db.execute("PRAGMA synchronous=FULL")
            self.db.execute("PRAGMA foreign_keys=ON")
            self.db.create_function("stable_reason", 1, stable_reason, deterministic=True)
            self._migrate()
        except sqlite3.DatabaseError as exc:
            raise StateError(f"state store {state_dir / DB_NAME} is unusable: {exc}") from None
        # The database and its journal hold the billing memory: readable by the owner only.
        for name in (DB_NAME, DB_NAME + "-wal", DB_NAME + "-shm"):
            with contextlib.suppress(OSError):
                os.chmod(state_dir / name, 0o600)

    def _use_wal(self) -> None:
        """Switch a new database to WAL (it stays so). Two processes creating the state at
        once (found by the overlap test, about 1 in 15): SQLite answers "locked" to the switch
        without waiting on its busy timeout, so it is tried again for a few seconds."""
        for attempt in range(100):
            try:
                self.db.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or attempt == 99:
                    raise
                time.sleep(0.05)

    @classmethod
    def open_existing(cls, state_dir: Path) -> StateStore:
        """The state of a directory that holds one, for the commands that only read it: never a
        new, empty one, so a wrong CONNECTOR_STATE_DIR is reported rather than shown empty."""
        if not (state_dir / DB_NAME).is_file():
            where = "does not exist" if not state_dir.exists() else f"holds no {DB_NAME}"
            raise StateError(
                f"the state directory {state_dir} {where}: check CONNECTOR_STATE_DIR (a first "
                "connector sync creates it)"
            )
        return cls(state_dir)

    def close(self) -> None:
        self.db.close()

    # --- schema ---------------------------------------------------------------------------

    @property
    def schema_version(self) -> int:
        return int(self.db.execute("PRAGMA user_version").fetchone()[0])

    def _migrate(self) -> None:
        # The version is read inside the write transaction: two processes opening a new state
        # directory at once must not both run the same migration.
        with self.transaction():
            version = self.schema_version
            if version > len(MIGRATIONS):
                raise StateError(
                    f"state store schema v{version} is newer than this program "
                    f"(v{len(MIGRATIONS)}); upgrade the connector"
                )
            for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
                for statement in _statements(script):
                    self.db.execute(statement)
                self.db.execute(f"PRAGMA user_version = {number}")
            if version < 2 <= len(MIGRATIONS):
                self._fill_legacy_prices()
            if version < 9 <= len(MIGRATIONS):
                self._validate_mirror()

    def _validate_mirror(self) -> None:
        """Part of migration 9: validate the entries mirrored before it, once."""
        rows = self.db.execute("SELECT id, raw FROM entries").fetchall()
        self.db.executemany(
            "UPDATE entries SET customer_number = ?, invalid = ? WHERE id = ?",
            ((*_validated(json.loads(raw)), entry_id) for entry_id, raw in rows),
        )

    def _fill_legacy_prices(self) -> None:
        """Rows written by the first version left the price to the target (None). The price
        Fortnox answered was kept beside them: put it in, so corrections of those rows know
        what was billed. (Part of migration 2; rows with no answer kept stay None and their
        entries need attention if ever corrected.)"""
        answers: dict[tuple[str, str], list[RemoteRow]] = {}
        for target, key, written in self.db.execute(
            "SELECT target, key, written FROM invoices WHERE written IS NOT NULL"
        ):
            recorded = Written.from_json(written)
            if recorded is not None and recorded.remote is not None:
                answers[(target, key)] = list(recorded.remote)
        updates = []
        for target, entry_id, key, raw in self.db.execute(
            "SELECT target, entry_id, key, rows FROM placements"
        ):
            rows = json.loads(raw)
            changed = False
            for row in rows:
                if row.get("article") and row.get("price") is None:
                    match = next(
                        (
                            r
                            for r in answers.get((target, key), ())
                            if r.description == row["description"] and r.article == row["article"]
                        ),
                        None,
                    )
                    if match is not None and match.price is not None:
                        row["price"] = str(match.price.quantize(Decimal("0.01")))
                        changed = True
            if changed:
                updates.append((_dumps(rows), target, entry_id, key))
        self.db.executemany(
            "UPDATE placements SET rows = ? WHERE target = ? AND entry_id = ? AND key = ?",
            updates,
        )

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction. Inside another one it is a savepoint: its failure undoes it
        alone, and what it wrote commits (or not) with the outer transaction."""
        if self.db.in_transaction:
            with self._savepoint():
                yield self.db
            return
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    @contextlib.contextmanager
    def _savepoint(self) -> Iterator[None]:
        self.db.execute("SAVEPOINT nested")
        try:
            yield
        except BaseException:
            self.db.execute("ROLLBACK TO nested")
            self.db.execute("RELEASE nested")
            raise
        self.db.execute("RELEASE nested")

    # --- lock -----------------------------------------------------------------------------

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Exclusive run lock. The kernel drops it when the process dies, even on SIGKILL."""
        path = self.dir / LOCK_NAME
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
                raise LockHeldError(
                    f"another run holds the lock {path} (pid {holder}); try again later"
                ) from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, str(os.getpid()).encode(), 0)
            try:
                yield
            finally:
                os.ftruncate(fd, 0)
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    # --- what the state belongs to -------------------------------------------------------

    def meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str | None) -> None:
        with self.transaction() as db:
            if value is None:
                db.execute("DELETE FROM meta WHERE key = ?", (key,))
            else:
                db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    def bind(self, key: str, value: str, what: str, *, record: bool = True) -> None:
        """Check that this state belongs to `value` (the ledger's address, the accounting
        company); the first use records it. A mismatch stops the command: mixing two ledgers or
        two companies in one state could invoice hours twice or never."""
        bound = self.meta(key)
        if bound is None:
            if record:
                self.set_meta(key, value)
            return
        if bound != value:
            raise StateMismatchError(
                f"the state directory {self.dir} belongs to {what} {bound}, not {value}. "
                "Point CONNECTOR_STATE_DIR at the state directory of this one (each ledger and "
                "accounting company needs its own); if it really moved, run: connector state "
                "rebind"
            )

    def set_register(self, target: str, register: dict[str, Decimal | None]) -> None:
        """The article register as last read (article -> sales price), for offline checks."""
        self.set_meta(
            f"register:{target}",
            _dumps({k: None if v is None else str(v) for k, v in sorted(register.items())}),
        )

    def register(self, target: str) -> dict[str, Decimal | None] | None:
        raw = self.meta(f"register:{target}")
        if raw is None:
            return None
        return {k: None if v is None else Decimal(v) for k, v in json.loads(raw).items()}

    # --- ledger mirror --------------------------------------------------------------------

    def cursor(self) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = 'feed_cursor'").fetchone()
        return None if row is None else str(row[0])

    def store_page(self, items: Sequence[FeedItem], next_cursor: str | None) -> None:
        """Store a page of feed items and, in the same transaction, the cursor after it."""
        now = _now()
        with self.transaction() as db:
            seq = db.execute("SELECT COALESCE(MAX(feed_seq), 0) FROM entries").fetchone()[0]
            for item in items:
                if item.entry_id is None:
                    db.execute(
                        "INSERT OR REPLACE INTO feed_rejects (position, raw, seen_at)"
                        " VALUES (?, ?, ?)",
                        (item.position, _dumps(item.raw), now),
                    )
                    continue
                seq += 1
                customer, invalid = _validated(item.raw)
                # Keep the newest revision; a window re-read may return an older one.
                db.execute(
                    """
                    INSERT INTO entries
                        (id, revision, raw, feed_seq, seen_at, customer_number, invalid)
                    VALUES (?, ?, ?, ?, ?, ?, ?)
                    ON CONFLICT (id) DO UPDATE SET
                        revision = excluded.revision, raw = excluded.raw,
                        feed_seq = excluded.feed_seq, seen_at = excluded.seen_at,
                        customer_number = excluded.customer_number, invalid = excluded.invalid
                    WHERE excluded.revision IS NULL OR entries.revision IS NULL
                        OR excluded.revision >= entries.revision
                    """,
                    (item.entry_id, item.revision, _dumps(item.raw), seq, now, customer, invalid),
                )
            if next_cursor is not None:
                before = db.execute("SELECT value FROM meta WHERE key = 'feed_cursor'").fetchone()
                db.execute(
                    "INSERT OR REPLACE INTO meta (key, value) VALUES ('feed_cursor', ?)",
                    (next_cursor,),
                )
                if before is None or before[0] != next_cursor:
                    db.execute(
                        "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                        (FEED_ADVANCED_AT, now),
                    )

    def store_pages(self, pages: Sequence[tuple[Sequence[FeedItem], str | None]]) -> None:
        """Several pages in one transaction (one disk sync instead of one per page), each
        stored with its cursor as `store_page` does: the batch commits whole or not at all, so
        the stored cursor never runs ahead of the stored entries."""
        with self.transaction():
            for items, next_cursor in pages:
                self.store_page(items, next_cursor)

    def raw_entries(self) -> Iterator[tuple[str, Any]]:
        """(id, raw) of the latest revision of every mirrored entry."""
        for entry_id, raw in self.db.execute("SELECT id, raw FROM entries ORDER BY id"):
            yield entry_id, json.loads(raw)

    def raw_entry(self, entry_id: str) -> Any:
        """The stored raw entry, or None."""
        row = self.db.execute("SELECT raw FROM entries WHERE id = ?", (entry_id,)).fetchone()
        return None if row is None else json.loads(row[0])

    def feed_rejects(self) -> list[tuple[str, Any]]:
        rows = self.db.execute("SELECT position, raw FROM feed_rejects ORDER BY position")
        return [(position, json.loads(raw)) for position, raw in rows]

    def entry_count(self) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM entries").fetchone()[0])

    # --- incremental planning -----------------------------------------------------------

    def dirty_customers(self) -> set[str]:
        """Customers whose planning inputs changed since the last complete sync (marked by
        the triggers of migration 9)."""
        rows = self.db.execute("SELECT DISTINCT customer_number FROM plan_dirty")
        return {str(c) for (c,) in rows}

    def settle_dirty(self, keep: Iterable[str], planned: Iterable[str] | None = None) -> None:
        """After a complete sync: the marks the run's last plan read (`planned`; every mark
        when None) are cleared, except `keep` (customers with changes still to send). A mark
        made after that plan stays for the next run."""
        with self.transaction() as db:
            if planned is None:
                self._fill_scope(db, keep)
                db.execute("DELETE FROM plan_dirty WHERE customer_number NOT IN temp.scope")
                return
            self._fill_scope(db, set(planned) - set(keep))
            db.execute("DELETE FROM plan_dirty WHERE customer_number IN temp.scope")

    def customers(self, target: str) -> set[str]:
        """Every customer the mirror or the target's invoices know."""
        rows = self.db.execute(
            "SELECT customer_number FROM entries WHERE customer_number IS NOT NULL"
            " UNION SELECT customer_number FROM invoices WHERE target = ?",
            (target,),
        )
        return {str(c) for (c,) in rows}

    @staticmethod
    def _fill_scope(db: sqlite3.Connection, customers: Iterable[str]) -> None:
        db.execute("CREATE TEMP TABLE IF NOT EXISTS scope (c TEXT PRIMARY KEY)")
        db.execute("DELETE FROM temp.scope")
        db.executemany("INSERT OR IGNORE INTO temp.scope VALUES (?)", ((c,) for c in customers))

    def count_written_open(self, target: str, excluding: Iterable[str]) -> int:
        """Open invoices the connector wrote, of customers other than `excluding`."""
        self._fill_scope(self.db, excluding)
        row = self.db.execute(
            "SELECT COUNT(*) FROM invoices WHERE target = ? AND status = 'open'"
            " AND digest IS NOT NULL AND customer_number NOT IN temp.scope",
            (target,),
        ).fetchone()
        return int(row[0])

    def closure(self, target: str, customers: Iterable[str]) -> set[str]:
        """`customers` and every customer tied to them by an entry: an entry moved to another
        customer keeps rows on the first one's invoices, so both must be planned together
        (repeated until nothing new joins)."""
        self._fill_scope(self.db, customers)
        while True:
            added = self.db.execute(
                """
                INSERT OR IGNORE INTO temp.scope
                SELECT e.customer_number FROM temp.scope s
                    JOIN invoices i ON i.target = ? AND i.customer_number = s.c
                    JOIN placements p ON p.target = i.target AND p.key = i.key
                    JOIN entries e ON e.id = p.entry_id
                    WHERE e.customer_number IS NOT NULL
                UNION
                SELECT i.customer_number FROM temp.scope s
                    JOIN entries e ON e.customer_number = s.c
                    JOIN placements p ON p.target = ? AND p.entry_id = e.id
                    JOIN invoices i ON i.target = p.target AND i.key = p.key
                """,
                (target, target),
            ).rowcount
            if added <= 0:
                break
        return {str(c) for (c,) in self.db.execute("SELECT c FROM temp.scope")}

    def scope_entries(self, customers: Iterable[str]) -> list[Entry]:
        """The valid entries of these customers, in id order (validated when pulled)."""
        self._fill_scope(self.db, customers)
        rows = self.db.execute(
            "SELECT raw FROM entries WHERE customer_number IN temp.scope ORDER BY id"
        )
        return [parse_entry(json.loads(raw)) for (raw,) in rows]

    def rejected(self) -> list[tuple[str, str]]:
        """(ref, why) of every mirrored entry that breaks the contract, then of every feed
        item without a usable id: always planned, whatever the scope."""
        found = [
            (str(entry_id), str(why))
            for entry_id, why in self.db.execute(
                "SELECT id, invalid FROM entries WHERE invalid IS NOT NULL ORDER BY id"
            )
        ]
        for position, raw in self.feed_rejects():
            _, why = _validated(raw)
            found.append((position, why or "entry without a usable id"))
        return found

    # --- invoices and placements ----------------------------------------------------------

    _INVOICES = (
        "SELECT key, status, currency, remote_id, digest, display_number FROM invoices"
        " WHERE target = ?"
    )
    _OF_SCOPE = " AND customer_number IN temp.scope"
    _PLACEMENTS = (
        "SELECT entry_id, key, revision, rows FROM placements WHERE target = ?"
        " ORDER BY entry_id, seq"
    )
    _SCOPE_PLACEMENTS = (
        "SELECT p.entry_id, p.key, p.revision, p.rows FROM temp.scope s"
        " JOIN entries e ON e.customer_number = s.c"
        " JOIN placements p ON p.target = ? AND p.entry_id = e.id"
        " ORDER BY p.entry_id, p.seq"
    )

    def invoiced(self, target: str, customers: Iterable[str] | None = None) -> Invoiced:
        """What was invoiced: for every customer, or only for `customers` (their invoices,
        holds, and the placements of their entries)."""
        all_of = customers is None
        if customers is not None:
            self._fill_scope(self.db, customers)
        invoices = {}
        for key, status, currency, remote_id, digest, number in self.db.execute(
            self._INVOICES if all_of else self._INVOICES + self._OF_SCOPE, (target,)
        ):
            parsed = InvoiceKey.parse(key)
            invoices[parsed] = KnownInvoice(
                parsed, InvoiceStatus(status), currency, remote_id, digest, number
            )
        placements: dict[str, list[Placement]] = {}
        for entry_id, key, revision, rows in self.db.execute(
            self._PLACEMENTS if all_of else self._SCOPE_PLACEMENTS, (target,)
        ):
            placements.setdefault(entry_id, []).append(
                Placement(
                    entry_id,
                    InvoiceKey.parse(key),
                    revision,
                    tuple(Row.from_json(r) for r in json.loads(rows)),
                )
            )
        holds = self.holds(target)
        if customers is not None:
            wanted = {str(c) for (c,) in self.db.execute("SELECT c FROM temp.scope")}
            holds = {k: v for k, v in holds.items() if k[0] in wanted}
        return Invoiced(
            invoices=invoices,
            placements=placements,
            holds=holds,
            reinvoiced=self.reinvoiced(target),
        )

    def reinvoiced(self, target: str) -> frozenset[tuple[str, InvoiceKey]]:
        rows = self.db.execute("SELECT entry_id, key FROM reinvoiced WHERE target = ?", (target,))
        return frozenset((entry_id, InvoiceKey.parse(key)) for entry_id, key in rows)

    def record_reinvoice(self, target: str, decided: Iterable[tuple[str, InvoiceKey]]) -> None:
        """A person's decision to invoice these entries again although the invoice they were
        on was cancelled: kept, so every later plan carries it out the same way."""
        with self.transaction() as db:
            db.executemany(
                "INSERT OR IGNORE INTO reinvoiced (target, entry_id, key, decided_at)"
                " VALUES (?, ?, ?, ?)",
                ((target, entry_id, key.text, _now()) for entry_id, key in decided),
            )

    def _upsert_invoice(self, db: sqlite3.Connection, target: str, key: InvoiceKey) -> None:
        db.execute(
            """
            INSERT INTO invoices
                (target, key, customer_number, period, sequence, status, updated_at)
            VALUES (?, ?, ?, ?, ?, 'open', ?)
            ON CONFLICT (target, key) DO NOTHING
            """,
            (target, key.text, key.customer_number, key.period, key.sequence, _now()),
        )

    def mark_pending(self, target: str, invoice: PlannedInvoice) -> None:
        """Record, before sending, what is about to be written: after a crash the next run
        knows the outcome is unknown and looks before writing again."""
        with self.transaction() as db:
            self._upsert_invoice(db, target, invoice.key)
            db.execute(
                "UPDATE invoices SET pending = ?, pending_since = ?, updated_at = ?"
                " WHERE target = ? AND key = ?",
                (
                    Written.of(invoice).to_json(),
                    self.clock().isoformat(timespec="seconds"),
                    _now(),
                    target,
                    invoice.key.text,
                ),
            )

    def record_refusal(self, target: str, invoice: PlannedInvoice, code: str | None) -> None:
        """The target refused exactly these rows; the same rows are not sent again until a
        read shows the cause is gone (see sync)."""
        with self.transaction() as db:
            self._upsert_invoice(db, target, invoice.key)
            db.execute(
                "UPDATE invoices SET refused_digest = ?, refused_code = ?, pending = NULL,"
                " pending_since = NULL, updated_at = ? WHERE target = ? AND key = ?",
                (invoice.digest, code, _now(), target, invoice.key.text),
            )

    def clear_pending(self, target: str, key: InvoiceKey) -> None:
        with self.transaction() as db:
            db.execute(
                "UPDATE invoices SET pending = NULL, pending_since = NULL, updated_at = ?"
                " WHERE target = ? AND key = ?",
                (_now(), target, key.text),
            )

    def confirm_write(
        self,
        target: str,
        invoice: PlannedInvoice,
        remote_id: str,
        remote: Sequence[RemoteRow] | None = None,
        number: str | None = None,
    ) -> None:
        """The invoice now holds `invoice.rows`: record it and move its entries' placements
        in one transaction (the same transition as planning.record_write)."""
        now = _now()
        with self.transaction() as db:
            self._upsert_invoice(db, target, invoice.key)
            db.execute(
                """
                UPDATE invoices SET status = 'open', remote_id = ?, vanished_since = NULL,
                    display_number = COALESCE(?, display_number), currency = ?,
                    digest = ?, written = ?, pending = NULL, pending_since = NULL,
                    refused_digest = NULL, refused_code = NULL, updated_at = ?
                WHERE target = ? AND key = ?
                """,
                (
                    remote_id,
                    number,
                    invoice.currency,
                    invoice.digest,
                    Written.of(invoice, remote).to_json(),
                    now,
                    target,
                    invoice.key.text,
                ),
            )
            placements = invoice.placements()
            seq = db.execute("SELECT COALESCE(MAX(seq), 0) FROM placements").fetchone()[0]
            for placement in placements:
                seq += 1
                rows = _dumps([r.to_json() for r in placement.rows])
                db.execute(
                    """
                    INSERT INTO placements (target, entry_id, key, revision, rows, seq)
                    VALUES (?, ?, ?, ?, ?, ?)
                    ON CONFLICT (target, entry_id, key) DO UPDATE SET
                        revision = excluded.revision, rows = excluded.rows
                    """,
                    (target, placement.entry_id, invoice.key.text, placement.revision, rows, seq),
                )
            # Entries no longer on this invoice leave it. (With none kept, every placement on it
            # goes: `NOT IN (NULL)` would match nothing, so the empty case has its own query.)
            kept = [p.entry_id for p in placements]
            if kept:
                marks = ",".join("?" * len(kept))
                db.execute(
                    "DELETE FROM placements WHERE target = ? AND key = ?"  # noqa: S608 - ? marks
                    f" AND entry_id NOT IN ({marks})",
                    (target, invoice.key.text, *kept),
                )
            else:
                db.execute(
                    "DELETE FROM placements WHERE target = ? AND key = ?",
                    (target, invoice.key.text),
                )

    # --- rebuilding --------------------------------------------------------------------------

    def systems_invoiced(self) -> set[str]:
        """The accounting systems this state has invoices recorded for."""
        return {str(t) for (t,) in self.db.execute("SELECT DISTINCT target FROM invoices")}

    def clear(self, target: str) -> None:
        """Forget the ledger mirror and everything invoiced for `target`, before a rebuild. The
        binding and the run records stay."""
        with self.transaction() as db:
            for table in ("invoices", "placements", "attention", "holds", "reinvoiced"):
                db.execute(f"DELETE FROM {table} WHERE target = ?", (target,))  # noqa: S608
            db.execute("DELETE FROM entries")
            db.execute("DELETE FROM feed_rejects")
            db.execute("DELETE FROM meta WHERE key = 'feed_cursor'")

    def backup_to(self, path: Path) -> None:
        """A consistent copy of the database (SQLite's online backup), private like the
        original."""
        target = sqlite3.connect(path)
        try:
            self.db.backup(target)
        finally:
            target.close()
        os.chmod(path, 0o600)

    def record_rebuilt(
        self,
        target: str,
        key: InvoiceKey,
        status: InvoiceStatus,
        currency: str,
        remote_id: str,
        digest: str | None,
        written: Written | None,
        placements: Sequence[Placement],
        number: str | None = None,
    ) -> None:
        """One invoice found in the target, and the entries tied to its rows."""
        with self.transaction() as db:
            self._upsert_invoice(db, target, key)
            db.execute(
                "UPDATE invoices SET status = ?, currency = ?, remote_id = ?, display_number = ?,"
                " digest = ?, written = ?, updated_at = ? WHERE target = ? AND key = ?",
                (
                    status.value,
                    currency,
                    remote_id,
                    number,
                    digest,
                    None if written is None else written.to_json(),
                    _now(),
                    target,
                    key.text,
                ),
            )
            seq = db.execute("SELECT COALESCE(MAX(seq), 0) FROM placements").fetchone()[0]
            for placement in placements:
                seq += 1
                db.execute(
                    "INSERT OR REPLACE INTO placements (target, entry_id, key, revision, rows, seq)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        target,
                        placement.entry_id,
                        key.text,
                        placement.revision,
                        _dumps([r.to_json() for r in placement.rows]),
                        seq,
                    ),
                )

    def hold(self, target: str, customer: str, period: str, reason: str) -> None:
        with self.transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO holds (target, customer_number, period, reason,"
                " created_at) VALUES (?, ?, ?, ?, ?)",
                (target, customer, period, reason, _now()),
            )

    def release(self, target: str, customer: str, period: str) -> bool:
        with self.transaction() as db:
            cursor = db.execute(
                "DELETE FROM holds WHERE target = ? AND customer_number = ? AND period = ?",
                (target, customer, period),
            )
            return cursor.rowcount > 0

    def holds(self, target: str) -> dict[tuple[str, str], str]:
        rows = self.db.execute(
            "SELECT customer_number, period, reason FROM holds WHERE target = ?", (target,)
        )
        return {(c, p): r for c, p, r in rows}

    def advance_placements(self, target: str, revisions: Iterable[tuple[str, int]]) -> None:
        """Entries revised without changing what they bill ("already invoiced"): their rows on
        invoices now stand for the new revision, so later mapping changes leave them alone."""
        with self.transaction() as db:
            for entry_id, revision in revisions:
                # Only rows on billed invoices, and only when no open draft still carries rows
                # of the entry: a draft left unwritten (refused, skipped) must not be taken for
                # "as written" for the new revision.
                db.execute(
                    """
                    UPDATE placements SET revision = ?
                    WHERE target = ? AND entry_id = ? AND revision < ?
                    AND revision = (
                        SELECT MAX(revision) FROM placements WHERE target = ? AND entry_id = ?
                    )
                    AND key IN (
                        SELECT key FROM invoices
                        WHERE target = ? AND status IN ('booked', 'sent', 'locked')
                    )
                    AND NOT EXISTS (
                        SELECT 1 FROM placements p JOIN invoices i
                            ON i.target = p.target AND i.key = p.key
                        WHERE p.target = ? AND p.entry_id = ? AND i.status = 'open'
                    )
                    """,
                    (
                        revision, target, entry_id, revision, target, entry_id, target,
                        target, entry_id,
                    ),
                )  # fmt: skip

    def set_status(
        self,
        target: str,
        key: InvoiceKey,
        status: InvoiceStatus,
        remote_id: str | None = None,
        number: str | None = None,
    ) -> None:
        with self.transaction() as db:
            self._upsert_invoice(db, target, key)
            db.execute(
                "UPDATE invoices SET status = ?, remote_id = COALESCE(?, remote_id),"
                " display_number = COALESCE(?, display_number), vanished_since = NULL,"
                " updated_at = ?"
                " WHERE target = ? AND key = ?",
                (status.value, remote_id, number, _now(), target, key.text),
            )

    def mark_vanished(self, target: str, key: InvoiceKey, since: str) -> str:
        """Note when the invoice was first found missing; returns that first time."""
        with self.transaction() as db:
            db.execute(
                "UPDATE invoices SET vanished_since = COALESCE(vanished_since, ?)"
                " WHERE target = ? AND key = ?",
                (since, target, key.text),
            )
            row = db.execute(
                "SELECT vanished_since FROM invoices WHERE target = ? AND key = ?",
                (target, key.text),
            ).fetchone()
        return str(row[0]) if row and row[0] else since

    _RECORD = (
        "SELECT key, status, remote_id, written, pending, updated_at, refused_digest,"
        " refused_code, pending_since, display_number, vanished_since FROM invoices"
        " WHERE target = ?"
    )

    @staticmethod
    def _record(row: tuple[Any, ...]) -> InvoiceRecord:
        (
            key, status, remote_id, written, pending, updated, refused_digest, refused_code,
            since, number, vanished,
        ) = row  # fmt: skip
        return InvoiceRecord(
            InvoiceKey.parse(key),
            InvoiceStatus(status),
            remote_id,
            Written.from_json(written),
            Written.from_json(pending),
            updated,
            refused_digest,
            refused_code,
            since,
            number,
            vanished,
        )

    def invoice_records(
        self,
        target: str,
        status: InvoiceStatus | None = None,
        *,
        pending: bool = False,
        periods: Iterable[str] | None = None,
    ) -> list[InvoiceRecord]:
        """Every invoice record, or those with this status, or (`pending`) those with a write
        under way, or those of these months: the nightly paths read only what they need, not
        the whole history."""
        args: tuple[str, ...] = (target,)
        if pending:
            query = self._RECORD + " AND pending IS NOT NULL"
        elif status is not None:
            query, args = self._RECORD + " AND status = ?", (target, status.value)
        elif periods is not None:
            self._fill_scope(self.db, periods)
            query = self._RECORD + " AND period IN temp.scope"
        else:
            query = self._RECORD
        rows = self.db.execute(query + " ORDER BY customer_number, period, sequence", args)
        return [self._record(row) for row in rows]

    def has_invoices(self, target: str) -> bool:
        row = self.db.execute("SELECT 1 FROM invoices WHERE target = ? LIMIT 1", (target,))
        return row.fetchone() is not None

    def invoice_record(self, target: str, key: InvoiceKey) -> InvoiceRecord | None:
        row = self.db.execute(self._RECORD + " AND key = ?", (target, key.text)).fetchone()
        return None if row is None else self._record(row)

    # --- attention and runs ---------------------------------------------------------------

    def replace_attention(self, target: str, results: Iterable[EntryResult]) -> None:
        """Make the stored attention list equal `results` (entries), keeping when each was
        first seen."""
        self.replace_attention_items(
            target,
            [AttentionItem(r.ref, r.reason, "entry", r.customer_number, r.period) for r in results],
        )

    _UPSERT_ATTENTION = """
        INSERT INTO attention (target, ref, reason, customer_number, period, first_seen,
            last_seen, scope, standing, reason_since)
        VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
        ON CONFLICT (target, ref) DO UPDATE SET
            reason = excluded.reason, customer_number = excluded.customer_number,
            period = excluded.period, last_seen = excluded.last_seen, scope = excluded.scope,
            standing = excluded.standing,
            reason_since = CASE
                WHEN stable_reason(attention.reason) = stable_reason(excluded.reason)
                THEN COALESCE(attention.reason_since, attention.first_seen)
                ELSE excluded.last_seen END
    """

    def _upsert_attention(
        self, db: sqlite3.Connection, target: str, items: Iterable[AttentionItem], now: str
    ) -> list[str]:
        refs = []
        for item in items:
            refs.append(item.ref)
            db.execute(
                self._UPSERT_ATTENTION,
                (
                    target, item.ref, item.reason, item.customer_number, item.period, now, now,
                    item.scope, int(item.standing), now,
                ),
            )  # fmt: skip
        return refs

    def replace_attention_items(self, target: str, items: Iterable[AttentionItem]) -> None:
        """Make the stored attention list equal `items` (entries and invoices), keeping when
        each was first seen and since when it has had its present reason (an acknowledgement
        holds for that reason only)."""
        now = _now()
        with self.transaction() as db:
            refs = self._upsert_attention(db, target, items, now)
            db.execute("CREATE TEMP TABLE IF NOT EXISTS keep (ref TEXT PRIMARY KEY)")
            db.execute("DELETE FROM keep")
            db.executemany("INSERT OR IGNORE INTO keep VALUES (?)", ((r,) for r in refs))
            db.execute(
                "DELETE FROM attention WHERE target = ? AND ref NOT IN (SELECT ref FROM keep)",
                (target,),
            )

    def add_attention(self, target: str, items: Iterable[AttentionItem]) -> None:
        """Record items without touching the others: what a run found before it stopped."""
        with self.transaction() as db:
            self._upsert_attention(db, target, items, _now())

    def attention(self, target: str) -> list[dict[str, Any]]:
        cursor = self.db.execute(
            "SELECT ref, reason, customer_number, period, first_seen, last_seen FROM attention"
            " WHERE target = ? ORDER BY ref",
            (target,),
        )
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor]

    def attention_items(self, target: str) -> list[StoredAttention]:
        """The stored attention list, with each item's acknowledgement if one holds: an
        acknowledgement given for the item's present reason, since it has had that reason."""
        rows = self.db.execute(
            """
            SELECT a.ref, a.reason, a.scope, a.customer_number, a.period, a.standing,
                a.first_seen, a.last_seen, COALESCE(a.reason_since, a.first_seen),
                k.who, k.at, k.why
            FROM attention a
            LEFT JOIN acks k ON k.id = (
                SELECT MAX(id) FROM acks
                WHERE target = a.target AND ref = a.ref
                    AND stable_reason(reason) = stable_reason(a.reason)
                    AND at >= COALESCE(a.reason_since, a.first_seen)
            )
            WHERE a.target = ?
            ORDER BY a.scope DESC, a.ref
            """,
            (target,),
        )
        found = []
        for ref, reason, scope, customer, period, standing, first, last, since, *ack in rows:
            who, at, why = ack
            found.append(
                StoredAttention(
                    AttentionItem(ref, reason, scope, customer, period, bool(standing)),
                    first,
                    last,
                    since,
                    None if who is None else Ack(who, at, why),
                )
            )
        return found

    def acknowledge(self, target: str, ref: str, reason: str, who: str, why: str) -> Ack:
        """Record that a person has seen an item with this reason and accepts it as it is."""
        ack = Ack(who, _now(), why)
        with self.transaction() as db:
            db.execute(
                "INSERT INTO acks (target, ref, reason, who, at, why) VALUES (?, ?, ?, ?, ?, ?)",
                (target, ref, reason, ack.who, ack.at, ack.why),
            )
        return ack

    def acknowledged(self, target: str) -> dict[str, str]:
        """ref -> reason of the items whose present reason is acknowledged."""
        return {s.item.ref: s.item.reason for s in self.attention_items(target) if s.ack}

    def start_run(self, command: str, target: str) -> int:
        with self.transaction() as db:
            cursor = db.execute(
                "INSERT INTO runs (command, target, started_at) VALUES (?, ?, ?)",
                (command, target, _now()),
            )
            assert cursor.lastrowid is not None
            return cursor.lastrowid

    def finish_run(self, run_id: int, exit_code: int, summary: dict[str, Any]) -> None:
        with self.transaction() as db:
            db.execute(
                "UPDATE runs SET finished_at = ?, exit_code = ?, summary = ? WHERE id = ?",
                (_now(), exit_code, _dumps(summary), run_id),
            )

    def runs(self, limit: int = 20) -> list[RunRecord]:
        rows = self.db.execute(
            "SELECT id, command, target, started_at, finished_at, exit_code, summary FROM runs"
            " ORDER BY id DESC LIMIT ?",
            (limit,),
        )
        return [
            RunRecord(i, c, t, s, f, e, None if summary is None else json.loads(summary))
            for i, c, t, s, f, e, summary in rows
        ]

    # --- alerts already sent (connector/notify.py) ------------------------------------------

    def notified(self, channel: str, target: str, kind: str) -> dict[tuple[str, str], str]:
        """What `channel` was already told of `kind`: (ref, reason) -> when (ISO, UTC)."""
        rows = self.db.execute(
            "SELECT ref, reason, notified_at FROM notified"
            " WHERE channel = ? AND target = ? AND kind = ?",
            (channel, target, kind),
        )
        return {(str(ref), str(reason)): str(at) for ref, reason, at in rows}

    def record_notified(
        self,
        channel: str,
        target: str,
        kind: str,
        items: Iterable[tuple[str, str]],
        at: str,
        *,
        replace: bool = False,
    ) -> None:
        """Remember that `channel` was told of `items` ((ref, reason) pairs); with `replace`,
        instead of what it was told of `kind` before."""
        with self.transaction() as db:
            if replace:
                db.execute(
                    "DELETE FROM notified WHERE channel = ? AND target = ? AND kind = ?",
                    (channel, target, kind),
                )
            db.executemany(
                "INSERT OR REPLACE INTO notified"
                " (channel, target, kind, ref, reason, notified_at) VALUES (?, ?, ?, ?, ?, ?)",
                ((channel, target, kind, ref, reason, at) for ref, reason in items),
            )

    def forget_resolved_notices(self, target: str) -> None:
        """Forget the attention items reported that no longer need attention, so one that comes
        back later is reported again."""
        with self.transaction() as db:
            db.execute(
                """
                DELETE FROM notified WHERE kind = 'attention' AND target = ? AND NOT EXISTS (
                    SELECT 1 FROM attention a WHERE a.target = notified.target
                    AND a.ref = notified.ref AND a.reason = notified.reason
                )
                """,
                (target,),
            )

    # --- month end (connector close) -------------------------------------------------------

    _CLOSING = (
        "SELECT key, remote_id, send_wanted, invoice_date, dated_at, booking_since, booked_at,"
        " booked_by, booked_id, booked_number, sending_since, sent, sent_at, sent_detail, held"
        " FROM closings WHERE target = ?"
    )

    @staticmethod
    def _closing(row: tuple[Any, ...]) -> Closing:
        key, remote_id, wanted, *rest = row
        return Closing(InvoiceKey.parse(key), remote_id, bool(wanted), *rest)

    def closing(self, target: str, key: InvoiceKey) -> Closing | None:
        row = self.db.execute(self._CLOSING + " AND key = ?", (target, key.text)).fetchone()
        return None if row is None else self._closing(row)

    def closings(self, target: str, period: str | None = None) -> list[Closing]:
        query, args = self._CLOSING, [target]
        if period is not None:
            query += " AND period = ?"
            args.append(period)
        rows = self.db.execute(query + " ORDER BY customer_number, key", args)
        return [self._closing(row) for row in rows]

    def start_closing(self, target: str, key: InvoiceKey, remote_id: str, send: bool) -> None:
        """The invoice is being closed; `send`: this close also sends it (kept once asked, so
        a later close finishes the sending). Only before it is booked: whether the connector
        owes the sending is decided by the close that books it (where the system cannot show
        whether an invoice went out, one booked without --send is a person's to send)."""
        with self.transaction() as db:
            db.execute(
                """
                INSERT INTO closings
                    (target, key, customer_number, period, remote_id, send_wanted, updated_at)
                VALUES (?, ?, ?, ?, ?, ?, ?)
                ON CONFLICT (target, key) DO UPDATE SET
                    send_wanted = CASE WHEN booked_at IS NULL
                        THEN MAX(send_wanted, excluded.send_wanted) ELSE send_wanted END,
                    updated_at = excluded.updated_at
                """,
                (target, key.text, key.customer_number, key.period, remote_id, int(send), _now()),
            )

    def _close_step(self, target: str, key: InvoiceKey, assignments: str, *args: Any) -> None:
        with self.transaction() as db:
            db.execute(
                f"UPDATE closings SET {assignments}, updated_at = ?"  # noqa: S608 - fixed text
                " WHERE target = ? AND key = ?",
                (*args, _now(), target, key.text),
            )

    def mark_dated(self, target: str, key: InvoiceKey, invoice_date: str) -> None:
        self._close_step(target, key, "invoice_date = ?, dated_at = ?", invoice_date, _now())

    def mark_booking(self, target: str, key: InvoiceKey) -> None:
        """Committed before the booking request is sent: its outcome is unknown until
        recorded."""
        self._close_step(target, key, "booking_since = ?", _now())

    def clear_booking(self, target: str, key: InvoiceKey) -> None:
        self._close_step(target, key, "booking_since = NULL")

    def record_booked(
        self,
        target: str,
        key: InvoiceKey,
        *,
        by: str,
        booked_id: str | None,
        number: str | None,
        remote_id: str,
    ) -> None:
        """Booked: the close step and the invoice's status (closed: later ledger changes go to
        a supplementary invoice) in one transaction."""
        now = _now()
        with self.transaction() as db:
            db.execute(
                "UPDATE closings SET booking_since = NULL, booked_at = COALESCE(booked_at, ?),"
                " booked_by = COALESCE(booked_by, ?), booked_id = COALESCE(?, booked_id),"
                " booked_number = COALESCE(?, booked_number), updated_at = ?"
                " WHERE target = ? AND key = ?",
                (now, by, booked_id, number, now, target, key.text),
            )
            self._upsert_invoice(db, target, key)
            db.execute(
                "UPDATE invoices SET status = CASE WHEN status = 'sent' THEN 'sent'"
                " ELSE 'booked' END, remote_id = ?, display_number = COALESCE(?, display_number),"
                " vanished_since = NULL, updated_at = ? WHERE target = ? AND key = ?",
                (remote_id, number, now, target, key.text),
            )

    def mark_sending(self, target: str, key: InvoiceKey) -> None:
        self._close_step(target, key, "sending_since = ?", _now())

    def hold_closing(self, target: str, key: InvoiceKey, reason: str) -> None:
        self._close_step(target, key, "held = ?", reason)

    def clear_sending(self, target: str, key: InvoiceKey) -> None:
        """A sending that did not happen (refused, or read back as not sent)."""
        self._close_step(target, key, "sending_since = NULL")

    def record_sent(self, target: str, key: InvoiceKey, how: str, detail: str = "") -> None:
        """The sending step's outcome: a Delivery value, "already" (sent before), or
        "unknown" (the target cannot tell: left to a person, never sent again)."""
        self._close_step(
            target,
            key,
            "sending_since = NULL, sent = ?, sent_at = ?, sent_detail = ?",
            how,
            _now(),
            detail,
        )

    def record_override(
        self,
        target: str,
        period: str,
        customer: str | None,
        who: str,
        why: str,
        differences: Sequence[str],
    ) -> None:
        """A close forced past the audit's differences: who, when, why, and what they were."""
        with self.transaction() as db:
            db.execute(
                "INSERT INTO close_overrides"
                " (target, period, customer_number, who, why, differences, at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (target, period, customer, who, why, _dumps(list(differences)), _now()),
            )

    def overrides(self, target: str) -> list[dict[str, Any]]:
        cursor = self.db.execute(
            "SELECT period, customer_number, who, why, differences, at FROM close_overrides"
            " WHERE target = ? ORDER BY id",
            (target,),
        )
        return [
            {
                "period": period,
                "customer": customer,
                "who": who,
                "why": why,
                "differences": json.loads(differences),
                "at": at,
            }
            for period, customer, who, why, differences, at in cursor
        ]
