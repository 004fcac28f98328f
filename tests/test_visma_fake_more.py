"""More of the fake Visma eAccounting: a person deleting a draft while a client pages, customers
without a currency of their own, and row fields a person sets (project, cost centre) that a
full-replace PUT keeps only when they are sent again. Helpers are those of test_visma_fake."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from connector.sandbox.visma import seed_id
from tests.test_visma_fake import INST, Vx, make


@pytest.fixture
def vx() -> Iterator[Vx]:
    world = make()
    yield world
    world.http.close()


# --- a person deleting drafts while a client pages -----------------------------------------------


def test_a_draft_deleted_between_pages_hides_another_from_that_listing(vx: Vx) -> None:
    """delete_between_pages: after a page with more to come is answered, a person deletes the
    first draft on it. $page counts positions, so the next page starts one later: the draft
    that moved onto the page already read is in neither page. The totals in Meta show it."""
    for n in range(5):
        vx.create(INST, ContractNumber=f"K{n}")
    order = {"$orderby": "CreatedUtc,Id", "$pagesize": "2"}
    made = [d["Id"] for d in vx.listed("/customerinvoicedrafts", **{"$orderby": "CreatedUtc,Id"})]
    vx.fake.delete_between_pages = 1
    first = vx.get("/customerinvoicedrafts", **order, **{"$page": "1"})
    second = vx.get("/customerinvoicedrafts", **order, **{"$page": "2"})
    assert [d["Id"] for d in first["Data"]] == made[:2]
    assert list(vx.fake.graveyard) == [made[0]] and vx.fake.delete_between_pages == 0
    assert [d["Id"] for d in second["Data"]] == made[3:5]  # made[2] is never shown
    assert (first["Meta"]["TotalNumberOfResults"], second["Meta"]["TotalNumberOfResults"]) == (
        5, 4,
    )  # fmt: skip
    # A listing of one page, or its last page, is left alone.
    vx.fake.delete_between_pages = 1
    vx.get("/customerinvoicedrafts", **order, **{"$page": "2"})
    vx.get("/customerinvoicedrafts", **{"$pagesize": "10"})
    assert vx.fake.delete_between_pages == 1 and len(vx.fake.drafts) == 4


def test_delete_between_pages_through_the_control_endpoint(vx: Vx) -> None:
    for body in ({"delete_between_pages": -1}, {"delete_between_pages": "2"},
                 {"delete_between_pages": True}):  # fmt: skip
        assert vx.http.post("/_sandbox/visma", json=body).status_code == 400, body
    answer = vx.http.post("/_sandbox/visma", json={"delete_between_pages": 2})
    assert answer.status_code == 200 and answer.json()["delete_between_pages"] == 2
    assert vx.fake.delete_between_pages == 2
    vx.fake.reset()
    assert vx.fake.delete_between_pages == 0


# --- a customer without a currency of its own ----------------------------------------------------


def test_a_customer_without_a_currency_gets_drafts_in_the_companys(vx: Vx) -> None:
    """CustomerApi.CurrencyCode may be null (OpenAPI: string or null); such a customer is
    invoiced in the company's currency, CompanySettingsApi.CurrencyCode."""
    vx.fake.customer_by_number("1003").currency = None
    listed = vx.get(f"/customers/{seed_id('customer', '1003')}")
    assert listed["CurrencyCode"] is None
    created = vx.create(INST)
    assert created["InvoiceCurrencyCode"] == vx.get("/companysettings")["CurrencyCode"] == "SEK"
