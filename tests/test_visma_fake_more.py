"""More of the fake Visma eAccounting: a person deleting a draft while a client pages, customers
without a currency of their own, and row fields a person sets (project, cost centre) that a
full-replace PUT keeps only when they are sent again. Helpers are those of test_visma_fake."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from connector.http import decode_json
from connector.sandbox.visma import cost_center_item_id, project_id, seed_id
from tests.test_visma_fake import INST, UNKNOWN, Vx, draft, error_of, make, row, text


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


# --- row fields a person sets: projects and cost centres -----------------------------------------


def test_a_row_keeps_its_project_and_cost_centres_until_a_put_leaves_them_out(vx: Vx) -> None:
    """ProjectId and CostCenterItemId1..3 (CustomerInvoiceDraftRowApi, "Get from /v2/projects",
    "/v2/costcenteritems") are kept as given and returned. PUT is a full replace (NOTES 2):
    a row sent without them has none; sent again, they stay. A converted invoice's rows carry
    them (CustomerInvoiceRowApi has them too)."""
    tagged = row("SK-INST", 2, 1150, ProjectId=project_id("P100").upper(),
                 CostCenterItemId1=cost_center_item_id("STH"),
                 CostCenterItemId2=cost_center_item_id("KONS"))  # fmt: skip
    created = vx.create(text("Huvud"), tagged)
    stored = created["Rows"][1]
    assert (stored["ProjectId"], stored["CostCenterItemId1"], stored["CostCenterItemId2"]) == (
        project_id("P100"), cost_center_item_id("STH"), cost_center_item_id("KONS"),
    )  # fmt: skip
    assert stored["CostCenterItemId3"] is None and created["Rows"][0]["ProjectId"] is None
    path = f"/customerinvoicedrafts/{created['Id']}"
    assert vx.get(path)["Rows"][1]["ProjectId"] == project_id("P100")
    again = decode_json(vx.put(created["Id"], text("Huvud"), tagged).content)
    assert again["Rows"][1]["ProjectId"] == project_id("P100")
    dropped = decode_json(vx.put(created["Id"], text("Huvud"), row("SK-INST", 3, 1150)).content)
    assert [(r["ProjectId"], r["CostCenterItemId1"]) for r in dropped["Rows"]] == [
        (None, None), (None, None),
    ]  # fmt: skip
    vx.put(created["Id"], text("Huvud"), tagged)
    invoice_id = vx.fake.convert(created["Id"])
    booked = vx.get(f"/customerinvoices/{invoice_id}")["Rows"][1]
    assert (booked["ProjectId"], booked["CostCenterItemId2"]) == (
        project_id("P100"), cost_center_item_id("KONS"),
    )  # fmt: skip


@pytest.mark.parametrize(
    ("sent", "status", "code", "field_name"),
    [
        (row("SK-INST", 1, 1, ProjectId=UNKNOWN), 400, 3000, "Rows[0].ProjectId"),
        # An item of cost centre 1 in the slot of cost centre 2 (harsher reading).
        (row("SK-INST", 1, 1, CostCenterItemId2=cost_center_item_id("STH")), 400, 3000,
         "Rows[0].CostCenterItemId2"),
        # A text row books nothing: no project on it (harsher reading).
        (text("t", ProjectId=project_id("P100")), 400, 2000, "Rows[0].ProjectId"),
    ],
)  # fmt: skip
def test_unknown_or_misplaced_projects_and_cost_centres_are_refused(
    vx: Vx, sent: dict[str, Any], status: int, code: int, field_name: str
) -> None:
    response = vx.call("POST", "/customerinvoicedrafts", draft(sent))
    assert error_of(response) == (status, code, [field_name])


def test_a_person_puts_a_row_on_a_project(vx: Vx) -> None:
    """edit_row: a person picks a project and a cost centre for a row and saves (every row gets
    a new Id); None clears one."""
    created = vx.create(text("Huvud"), INST)
    vx.fake.edit_row(created["Id"], 1, ProjectId=project_id("P200"),
                     CostCenterItemId1=cost_center_item_id("GBG"))  # fmt: skip
    edited = vx.get(f"/customerinvoicedrafts/{created['Id']}")["Rows"][1]
    assert (edited["ProjectId"], edited["CostCenterItemId1"]) == (
        project_id("P200"), cost_center_item_id("GBG"),
    )  # fmt: skip
    vx.fake.edit_row(created["Id"], 1, ProjectId=None)
    cleared = vx.get(f"/customerinvoicedrafts/{created['Id']}")["Rows"][1]
    assert (cleared["ProjectId"], cleared["CostCenterItemId1"]) == (
        None, cost_center_item_id("GBG"),
    )  # fmt: skip
    with pytest.raises(ValueError, match="Rows"):
        vx.fake.edit_row(created["Id"], 0, ProjectId=project_id("P100"))  # a text row
