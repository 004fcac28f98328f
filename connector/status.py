"""`connector status` and `connector auth status`: what the state directory and the token file
say, read locally. No network: they answer when the ledger or the accounting system is down,
and never create a state directory (a wrong CONNECTOR_STATE_DIR is reported, not shown empty).
"""

from __future__ import annotations

import os
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from connector import targets
from connector.attention import advise, item_json, state_system
from connector.errors import ExitCode, ReauthRequiredError
from connector.planning import InvoiceStatus, clean
from connector.settings import Settings
from connector.state import (
    BOUND_LEDGER,
    BOUND_SYSTEM,
    BOUND_TARGET,
    DB_NAME,
    FEED_ADVANCED_AT,
    FEED_READ_AT,
    LOCK_NAME,
    RunRecord,
    StateStore,
)
from connector.tokens import TokenFile, TokenSet

RUNS_SHOWN = 5
NEWEST_CHANGE = (
    "SELECT json_extract(raw, '$.changed_at') FROM entries"
    " WHERE json_valid(raw) AND json_type(raw, '$.changed_at') = 'text'"
    " ORDER BY feed_seq DESC LIMIT 1"
)


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds")


# --- auth status ----------------------------------------------------------------------------


def _read_tokens(path: Path) -> tuple[TokenSet | None, bool]:
    """(tokens, readable): the token file's contents, never shown; None when there is none."""
    try:
        return TokenFile(path).read(), True
    except ReauthRequiredError:
        return None, False
    except OSError:
        return None, False


def _last_refusal(settings: Settings, system: str) -> str | None:
    """When the last run for `system` ended because the system refused the credentials (exit
    5), if it was the last run for it; from the state's run records, if there are any."""
    if not (settings.state_dir / DB_NAME).is_file():
        return None
    store = StateStore(settings.state_dir)
    try:
        runs = [
            r
            for r in store.runs(50)
            if r.target == system and r.command in ("sync", "rebuild") and r.exit_code is not None
        ]
    finally:
        store.close()
    if runs and runs[0].exit_code == ExitCode.REAUTH:
        return runs[0].finished_at
    return None


def auth_status(
    settings: Settings, system: str | None = None, now: datetime | None = None
) -> dict[str, Any]:
    """Which way the connector authenticates with `system` and whether it can, from the
    settings, the token file and the run records alone. No token value is read out."""
    name = system or settings.target
    spec = targets.spec(name)
    app = spec.oauth
    section = spec.section(settings)
    now = now or datetime.now(UTC)
    missing = [
        spec.env(field)
        for field, value in (
            ("client_id", section.client_id),
            ("client_secret", section.client_secret),
        )
        if not value or (hasattr(value, "get_secret_value") and not value.get_secret_value())
    ]
    tenant = getattr(section, "tenant_id", None) or None
    client_credentials = app.service_account_params is not None and tenant is not None
    path = settings.state_dir / app.token_file
    exists = path.is_file()
    tokens, readable = _read_tokens(path) if exists else (None, True)
    stored_at = datetime.fromtimestamp(path.stat().st_mtime, UTC) if exists else None
    access_until = _iso(tokens.expires_at) if tokens is not None and tokens.access_token else None
    access_valid = tokens is not None and tokens.valid(now.timestamp())
    refresh_stored = tokens is not None and bool(tokens.refresh_token)
    refresh_expires = (
        stored_at + timedelta(days=app.refresh_token_days)
        if refresh_stored and stored_at is not None and app.refresh_token_days
        else None
    )
    refused_at = _last_refusal(settings, name)
    # A refusal recorded after the token file last changed: the stored credentials are spent.
    refused = refused_at is not None and (
        stored_at is None or refused_at >= stored_at.isoformat(timespec="seconds")
    )
    login = app.login_hint + (" --service-account" if client_credentials else "")
    stored = "-" if stored_at is None else stored_at.isoformat(timespec="seconds")

    if missing:
        state, message = "not_configured", f"not configured: set {' and '.join(missing)}"
    elif not client_credentials and not settings.state_dir.is_dir():
        state, message = (
            "not_configured",
            f"the state directory {settings.state_dir} does not exist: check "
            f"CONNECTOR_STATE_DIR, or authorise for the first time: {app.login_hint}",
        )
    elif refused:
        state, message = (
            "needs_reauthorisation",
            f"{app.system} refused the credentials in the last run ({refused_at}): run {login}",
        )
    elif client_credentials:
        state, message = (
            "usable",
            f"service account of tenant {tenant}: a token is asked for when needed (whether the "
            f"consent still stands only {app.system} can say: connector sync --dry-run asks)",
        )
    elif not readable:
        state, message = "needs_reauthorisation", f"the token file is unreadable: run {login}"
    elif not refresh_stored:
        state, message = "needs_reauthorisation", f"not authorised yet: run {login}"
    elif refresh_expires is not None and now >= refresh_expires and not access_valid:
        state, message = (
            "needs_reauthorisation",
            f"the refresh token stored {stored} has expired ({app.system}'s last "
            f"{app.refresh_token_days} days): run {login}",
        )
    else:
        state, message = "usable", "a refresh token is stored; the next run renews the access token"
    code = {
        "usable": ExitCode.OK,
        "needs_reauthorisation": ExitCode.REAUTH,
        "not_configured": ExitCode.CONFIG,
    }[state]
    return {
        "system": name,
        "system_name": app.system,
        "mode": "client_credentials" if client_credentials else "refresh_token",
        "tenant_id": tenant if client_credentials else None,
        "configured": not missing,
        "missing_settings": missing,
        "token_file": str(path),
        "token_file_exists": exists,
        "stored_at": None if stored_at is None else stored_at.isoformat(timespec="seconds"),
        "access_token_valid_until": access_until,
        "access_token_valid": access_valid,
        "refresh_token_stored": refresh_stored,
        "refresh_token_expires": None
        if refresh_expires is None
        else refresh_expires.isoformat(timespec="seconds"),
        "last_refused_at": refused_at if refused else None,
        "state": state,
        "message": message,
        "exit_code": int(code),
    }


# --- status ---------------------------------------------------------------------------------


def _running_pid(state_dir: Path) -> int | None:
    """The pid a live run wrote into the lock file (it empties it when done). The lock itself
    is not tried: even a moment's hold could turn a starting sync away (exit 3)."""
    try:
        text = (state_dir / LOCK_NAME).read_text(encoding="ascii", errors="replace").strip()
        pid = int(text)
    except (OSError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return pid  # alive, another user's
    return pid


def _duration(run: RunRecord) -> float | None:
    if run.finished_at is None:
        return None
    started = datetime.fromisoformat(run.started_at)
    return (datetime.fromisoformat(run.finished_at) - started).total_seconds()


def did(run: RunRecord) -> str:
    """What a run did, in a few words, from its recorded summary."""
    summary = run.summary or {}
    error = summary.get("error")
    done: list[str] = []
    invoices = summary.get("invoices")
    if "pulled" in summary:
        done.append(f"pulled {summary['pulled']}")
    if isinstance(invoices, dict) and "created" in invoices:
        if summary.get("dry_run"):
            done.append(f"would write {len(invoices.get('would') or [])}")
        else:
            for label in ("created", "updated", "cancelled_empty", "recovered"):
                count = len(invoices.get(label) or [])
                if count:
                    done.append(f"{label.replace('_empty', '')} {count}")
            if not any(invoices.get(k) for k in ("created", "updated", "cancelled_empty")):
                done.append("no invoice changed")
    elif isinstance(invoices, dict):  # a rebuild: invoices found per status
        done.append("rebuilt from " + (", ".join(f"{n} {s}" for s, n in invoices.items()) or "0"))
    elif "changes" in summary:
        done.append(f"planned {summary['changes']} change(s)")
    if error:
        text = clean(str(error))
        done.append("stopped: " + (text if len(text) <= 160 else text[:157] + "..."))
    return ", ".join(done) or "-"


def _run_json(run: RunRecord, running: bool) -> dict[str, Any]:
    if run.finished_at is not None:
        state = "finished"
    else:
        state = "running" if running else "did not finish (killed or crashed)"
    return {
        "id": run.id,
        "command": run.command,
        "target": run.target,
        "started_at": run.started_at,
        "finished_at": run.finished_at,
        "duration_seconds": _duration(run),
        "exit_code": run.exit_code,
        "state": state,
        "did": did(run),
    }


def _ledger_json(store: StateStore) -> dict[str, Any]:
    # The feed lists entries in the order they last changed (docs/ledger-api.md): the newest
    # change is the last entry stored with a readable time, found through the index on the
    # feed position rather than by reading the whole mirror (0.4 s at 169,248 entries).
    row = store.db.execute(NEWEST_CHANGE).fetchone()
    newest = None if row is None else row[0]
    return {
        "cursor": store.cursor(),
        "cursor_advanced_at": store.meta(FEED_ADVANCED_AT),
        "read_to_end_at": store.meta(FEED_READ_AT),
        "entries": store.entry_count(),
        "without_id": len(store.feed_rejects()),
        "newest_change": newest,
        # The ledger's API has no "how far behind" (docs/ledger-api.md), and status does not
        # ask it: the last full read and the newest change mirrored stand in.
        "behind": None,
    }


def _invoices_json(store: StateStore, system: str) -> dict[str, Any]:
    """Invoices per state, and the few that need a look, counted by the database: status reads
    no invoice's rows (a state of a few years holds hundreds of thousands of invoices)."""
    counts: Counter[str] = Counter()
    for status, created, count in store.db.execute(
        "SELECT status, remote_id IS NOT NULL, COUNT(*) FROM invoices WHERE target = ?"
        " GROUP BY 1, 2",
        (system,),
    ):
        if status == InvoiceStatus.OPEN.value and not created:
            status = "not_created"
        counts[status] += count
    total = sum(counts.values())

    locked = [
        {"key": key, "number": number or remote_id}
        for key, number, remote_id in store.db.execute(
            "SELECT key, display_number, remote_id FROM invoices"
            " WHERE target = ? AND status = ? ORDER BY customer_number, period, sequence",
            (system, InvoiceStatus.LOCKED.value),
        )
    ]
    pending = [
        {"key": key, "number": number or remote_id, "since": since}
        for key, number, remote_id, since in store.db.execute(
            "SELECT key, display_number, remote_id, pending_since FROM invoices"
            " WHERE target = ? AND pending IS NOT NULL ORDER BY customer_number, period, sequence",
            (system,),
        )
    ]
    refused = [
        {"key": key, "code": code}
        for key, code in store.db.execute(
            "SELECT key, refused_code FROM invoices"
            " WHERE target = ? AND refused_digest IS NOT NULL"
            " ORDER BY customer_number, period, sequence",
            (system,),
        )
    ]
    counts["pending_write"] = len(pending)
    counts["refused"] = len(refused)
    order = (
        "open", "not_created", "sent", "booked", "locked", "cancelled", "pending_write",
        "refused",
    )  # fmt: skip
    return {
        "total": total,
        "counts": {name: counts.get(name, 0) for name in order},
        "locked": locked,
        "pending_write": pending,
        "refused": refused,
    }


def status_document(settings: Settings, now: datetime | None = None) -> dict[str, Any]:
    """`connector status`: the state directory at a glance, from local files only."""
    store = StateStore.open_existing(settings.state_dir)
    try:
        system = state_system(store, settings)
        profile = targets.profile(system)
        running = _running_pid(settings.state_dir)
        runs = store.runs(RUNS_SHOWN)
        last_sync = next((r for r in store.runs(200) if r.command == "sync"), None)
        stored = store.attention_items(system)
        holds = store.db.execute(
            "SELECT customer_number, period, reason, created_at FROM holds WHERE target = ?"
            " ORDER BY customer_number, period",
            (system,),
        ).fetchall()
        document: dict[str, Any] = {
            "state_dir": str(settings.state_dir),
            "schema_version": store.schema_version,
            "target": system,
            "target_name": profile.display_name,
            "configured_target": settings.target,
            "bound": {
                "system": store.meta(BOUND_SYSTEM),
                "ledger": store.meta(BOUND_LEDGER),
                "company": store.meta(BOUND_TARGET + system),
            },
            "running_pid": running,
            "runs": [_run_json(r, running is not None and i == 0) for i, r in enumerate(runs)],
            "last_sync": None if last_sync is None else _run_json(last_sync, False),
            "ledger": _ledger_json(store),
            "invoices": _invoices_json(store, system),
        }
    finally:
        store.close()
    open_items = [s for s in stored if s.ack is None]
    groups: dict[str, dict[str, Any]] = {}
    for s in open_items:
        if s.item.scope != "entry":
            continue
        advice = advise(s.item.reason, profile.display_name, s.item.ref)
        group = groups.setdefault(
            advice.kind,
            {"kind": advice.kind, "label": advice.label, "count": 0, "refs": [], "since": None},
        )
        group["count"] += 1
        group["refs"].append(s.item.ref)
        if group["since"] is None or s.first_seen < group["since"]:
            group["since"] = s.first_seen
    document["attention"] = {
        "open": len(open_items),
        "acknowledged": len(stored) - len(open_items),
        "invoices": [
            item_json(s, profile.display_name) for s in open_items if s.item.scope == "invoice"
        ],
        "entries_by_kind": sorted(groups.values(), key=lambda g: (-g["count"], g["kind"])),
    }
    document["holds"] = [
        {"customer_number": c, "period": p, "reason": clean(r), "since": at}
        for c, p, r, at in holds
    ]
    auth = auth_status(settings, system, now)
    document["auth"] = auth
    problems: list[str] = []
    if settings.target != system:
        problems.append(
            f"CONNECTOR_TARGET is {settings.target}, but this state directory invoices to "
            f"{profile.display_name} ({system}): a sync set so is refused"
        )
    if open_items:
        problems.append(f"{len(open_items)} item(s) need attention: connector attention")
    if holds:
        problems.append(
            f"{len(holds)} month(s) held until released: connector state release (see holds)"
        )
    if auth["state"] == "needs_reauthorisation":
        problems.append(f"{auth['system_name']}: {auth['message']}")
    if last_sync is not None:
        sync_json = document["last_sync"]
        if last_sync.finished_at is None and not (running and runs and runs[0].id == last_sync.id):
            problems.append(
                f"the last sync (started {last_sync.started_at}) did not finish; the next run "
                "finishes its work"
            )
        elif last_sync.exit_code is not None and last_sync.exit_code >= ExitCode.CONFIG:
            problems.append(
                f"the last sync ({last_sync.started_at}) ended with exit code "
                f"{last_sync.exit_code}: {sync_json['did']}"
            )
    document["needs_attention"] = problems
    document["exit_code"] = int(ExitCode.ATTENTION if problems else ExitCode.OK)
    return document
