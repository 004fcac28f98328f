"""The fakes' month-end endpoints, over HTTP, as strict as the real APIs are documented:
booking (Fortnox bookkeep, Visma convert), sending (e-mail, e-invoice), re-dating, and the fault
switch that loses their answers. Each test names its source; "harsher reading" means the real
behaviour is unknown and the fake does what is harder on a client."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date

import httpx
import pytest

from connector.sandbox.app import DropConnection
from connector.sandbox.fortnox import E_DOCUMENT_STATE, E_LOCKED_PERIOD
from tests import test_fortnox_fake as fortnox
from tests import test_visma_fake as visma

# --- Fortnox -------------------------------------------------------------------------------------


@pytest.fixture
def fx() -> Iterator[fortnox.Fx]:
    world = fortnox.make()
    yield world
    world.http.close()


@pytest.fixture
def vx() -> Iterator[visma.Vx]:
    world = visma.make()
    yield world
    world.http.close()


def test_fortnox_bookkeep_books_once_and_refuses_a_second_time(fx: fortnox.Fx) -> None:
    number = fx.create(fortnox.ROW_INST, InvoiceDate="2026-10-01")["DocumentNumber"]
    booked = fx.ok("PUT", f"/invoices/{number}/bookkeep")["Invoice"]
    assert booked["Booked"] is True and booked["Sent"] is False
    again = fx.call("PUT", f"/invoices/{number}/bookkeep")
    assert again.status_code == 400  # harsher reading: refused, made-up code
    assert fortnox.error_of(again)[0] == E_DOCUMENT_STATE
    missing = fx.call("PUT", "/invoices/999/bookkeep")
    assert missing.status_code == 404
    # A booked invoice cannot be changed (NOTES.md 7.7): nor re-dated.
    assert fx.put(number, InvoiceDate="2026-10-02").status_code == 400


def test_fortnox_bookkeep_in_a_locked_period_is_refused(fx: fortnox.Fx) -> None:
    number = fx.create(fortnox.ROW_INST, InvoiceDate="2026-09-30")["DocumentNumber"]
    fx.fake.locked_through = date(2026, 9, 30)
    refused = fx.call("PUT", f"/invoices/{number}/bookkeep")
    assert refused.status_code == 400
    code, message = fortnox.error_of(refused)
    assert code == E_LOCKED_PERIOD and "låst perioden" in message
    assert fx.invoice(number)["Booked"] is False


def test_fortnox_redating_moves_the_due_date_by_the_terms(fx: fortnox.Fx) -> None:
    # Customer 1006 pays in 10 days. UNCERTAIN for the API (Fortnox's form does this).
    number = fx.create(fortnox.ROW_INST, CustomerNumber="1006", InvoiceDate="2026-09-30")[
        "DocumentNumber"
    ]
    assert fx.invoice(number)["DueDate"] == "2026-10-10"
    answer = fx.put(number, InvoiceDate="2026-10-01")
    assert answer.status_code == 200
    invoice = answer.json()["Invoice"]
    assert (invoice["InvoiceDate"], invoice["DueDate"]) == ("2026-10-01", "2026-10-11")
    assert len(invoice["InvoiceRows"]) == 1  # rows not sent are kept
    kept = fx.put(number, InvoiceDate="2026-10-02", DueDate="2026-12-24").json()["Invoice"]
    assert kept["DueDate"] == "2026-12-24"  # a due date sent is taken as sent


def test_fortnox_customer_card_says_how_invoices_are_delivered(fx: fortnox.Fx) -> None:
    # OpenAPI fortnox_Customer.DefaultDeliveryTypes: Invoice in PRINT, EMAIL, PRINTSERVICE.
    card = fx.ok("GET", "/customers/1004")["Customer"]
    assert card["DefaultDeliveryTypes"]["Invoice"] == "EMAIL" and card["EmailInvoice"]
    assert fx.ok("GET", "/customers/1007")["Customer"]["DefaultDeliveryTypes"]["Invoice"] == (
        "PRINT"
    )


def test_fortnox_sending_sets_sent_and_is_recorded(fx: fortnox.Fx) -> None:
    number = fx.create(fortnox.ROW_INST, CustomerNumber="1004")["DocumentNumber"]
    fx.ok("PUT", f"/invoices/{number}/bookkeep")
    sent = fx.ok("GET", f"/invoices/{number}/email")["Invoice"]
    assert sent["Sent"] is True and sent["Booked"] is True
    assert fx.fake.deliveries == [(int(number), "email")]
    # e-invoice only for a customer set up for it (harsher reading: refused otherwise).
    refused = fx.call("GET", f"/invoices/{number}/einvoice")
    assert refused.status_code == 400
    fx.fake.customers["1004"].email_invoice = ""
    other = fx.create(fortnox.ROW_INST, CustomerNumber="1004")["DocumentNumber"]
    assert fx.call("GET", f"/invoices/{other}/email").status_code == 400
    assert fx.invoice(other)["Sent"] is False
    assert fx.call("GET", "/invoices/999/email").status_code == 404


def test_fortnox_lost_action_answers_happen_all_the_same() -> None:
    fx = fortnox.make(lost_action_rate=1.0)
    number = fx.create(fortnox.ROW_INST, CustomerNumber="1004")["DocumentNumber"]
    for path in (f"/invoices/{number}/bookkeep", f"/invoices/{number}/email"):
        method = "PUT" if path.endswith("bookkeep") else "GET"
        with pytest.raises((DropConnection, httpx.TransportError)):
            fx.call(method, path)
    invoice = fx.invoice(number)
    assert invoice["Booked"] is True and invoice["Sent"] is True


# --- Visma eAccounting ---------------------------------------------------------------------------


def convert(vx: visma.Vx, draft_id: str) -> httpx.Response:
    return vx.call(
        "POST",
        f"/customerinvoicedrafts/{draft_id}/convert",
        keepOriginalDraftDate="true",
        overrideCompanyKeepOriginalDraftDate="true",
    )


def test_visma_convert_once_then_the_draft_is_gone(vx: visma.Vx) -> None:
    draft = vx.create(visma.INST, Customer="1004", InvoiceDate="2026-10-01")
    answer = convert(vx, draft["Id"])
    assert answer.status_code == 201
    invoice = answer.json()
    assert invoice["CreatedFromDraftId"] == draft["Id"] and invoice["Id"] != draft["Id"]
    assert invoice["InvoiceDate"].startswith("2026-10-01")
    assert invoice["DueDate"].startswith("2026-10-31")  # the customer's 30 days
    assert invoice["CustomerEmail"] and invoice["ElectronicAddress"] is None
    again = convert(vx, draft["Id"])
    assert visma.error_of(again)[:2] == (404, 3000)  # a converted draft is no more
    assert visma.error_of(convert(vx, visma.UNKNOWN))[:2] == (404, 3000)


def test_visma_convert_in_a_locked_period_is_refused_4013(vx: visma.Vx) -> None:
    draft = vx.create(visma.INST, Customer="1004", InvoiceDate="2026-09-30")
    vx.fake.accounting_locked_to = date(2026, 9, 30)
    assert visma.error_of(convert(vx, draft["Id"]))[:2] == (400, 4013)
    assert draft["Id"] in vx.fake.drafts


def test_visma_send_by_email_and_einvoice(vx: visma.Vx) -> None:
    draft = vx.create(visma.INST, Customer="1004", InvoiceDate="2026-10-01")
    invoice_id = convert(vx, draft["Id"]).json()["Id"]
    path = f"/customerinvoices/{invoice_id}"
    sent = vx.call("POST", f"{path}/email", {})
    assert sent.status_code == 200 and sent.content == b""  # OpenAPI: 200, no body
    assert vx.fake.deliveries == [(invoice_id, "email")]
    # Nothing on the invoice shows it was sent (OpenAPI CustomerInvoiceApi has no such field).
    assert "Sent" not in vx.get(path)
    no_address = vx.call("POST", f"{path}/einvoice", {"SendType": 1})
    assert visma.error_of(no_address)[:2] == (400, 4017)
    assert visma.error_of(vx.call("POST", f"{path}/email", {"To": "x"}))[0] == 400
    assert visma.error_of(vx.call("POST", f"/customerinvoices/{visma.UNKNOWN}/email", {}))[:2] == (
        404,
        3000,
    )
    assert len(vx.fake.deliveries) == 1


def test_visma_lost_action_answers_happen_all_the_same() -> None:
    vx = visma.make(lost_action_rate=1.0)
    draft = vx.create(visma.INST, Customer="1004", InvoiceDate="2026-10-01")
    with pytest.raises((DropConnection, httpx.TransportError)):
        convert(vx, draft["Id"])
    (invoice,) = vx.fake.invoices.values()
    with pytest.raises((DropConnection, httpx.TransportError)):
        vx.call("POST", f"/customerinvoices/{invoice['Id']}/email", {})
    assert vx.fake.deliveries == [(invoice["Id"], "email")]
