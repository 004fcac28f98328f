"""`connector mappings show`, `check` and `set`, for every target: what they print, their JSON,
their exit codes; `check` against each fake (and that it writes nothing); `set` keeping the files'
comments byte for byte and refusing, untouched, a change that would not validate."""

from __future__ import annotations

import difflib
import json
import os
import shutil
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from typer.testing import CliRunner

from connector import targets
from connector.cli import app
from connector.errors import ConfigError, MappingError
from connector.ledger import FeedItem
from connector.mapping_check import check_document, find_problems
from connector.mapping_edit import Change, set_mapping
from connector.mappings import Mappings, load_mappings
from connector.sandbox import fake_module, fortnox_of, visma_of
from connector.sandbox.app import SandboxApp
from connector.sandbox.server import SandboxServer
from connector.state import StateStore
from connector.targets.base import RegisterArticle
from tests.conftest import MAPPINGS_DIR, RawEntry, _raw, connector_env
from tests.harness import TARGETS

SHIPPED = MAPPINGS_DIR / "service-categories.toml"
TODAY = date(2026, 11, 27)


def run(*args: str, input: str | None = None) -> Any:
    return CliRunner().invoke(app, list(args), input=input)


def copy_mappings(tmp_path: Path, name: str = "maps") -> Path:
    folder = tmp_path / name
    folder.mkdir()
    shutil.copy(SHIPPED, folder / SHIPPED.name)
    return folder


def edit(folder: Path, old: str, new: str) -> None:
    path = folder / SHIPPED.name
    text = path.read_text(encoding="utf-8")
    assert old in text
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def line_of(folder: Path, header: str) -> int:
    lines = (folder / SHIPPED.name).read_text(encoding="utf-8").splitlines()
    return lines.index(header) + 1


# --- show ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("target", TARGETS)
def test_show_json_per_target(target: str) -> None:
    result = run("mappings", "show", "--target", target, "--json", "--dir", str(MAPPINGS_DIR))
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert [t["target"] for t in doc["targets"]] == [target]
    rows = {c["category"]: c for c in doc["targets"][0]["categories"]}
    assert len(rows) == doc["counts"]["categories"] == 14
    data = rows["data_maintenance"]
    assert data["article"] == "SK-DATA" and data["billable"] is True
    assert data["price"] == "995.00"
    assert data["prices"] == [{"from": None, "price": "995.00"}]
    assert data["file"] == str(SHIPPED) and data["line"] == 44
    assert rows["guidance"]["billable"] is False and rows["guidance"]["article"] is None
    assert rows["installation"]["unit_from_article"] is (target == "visma")
    # Billable first: the order an administrator reads a price list in.
    billable = [c["billable"] for c in doc["targets"][0]["categories"]]
    assert billable == sorted(billable, reverse=True)


def test_show_text_has_every_target_and_the_price_history(tmp_path: Path) -> None:
    folder = copy_mappings(tmp_path)
    edit(
        folder,
        'price = "995.00"',
        'price = "995.00"\nprices = [{ from = "2027-01-01", price = "1050.00" }]',
    )
    edit(
        folder,
        'article = "SK-INST"\n',
        'article = "SK-INST"\n\n[categories.installation.visma]\narticle = "V-INST"\n',
    )
    result = run("mappings", "show", "--dir", str(folder))
    assert result.exit_code == 0, result.output
    text = result.stdout
    assert "Fortnox (fortnox)" in text and "Visma eAccounting (visma)" in text
    assert "995.00; 1050.00 from 2027-01-01" in text
    assert "V-INST (for Visma eAccounting only)" in text
    assert "included in the fee" in text
    assert f"{folder / SHIPPED.name}:{line_of(folder, '[categories.guidance]')}" in text
    doc = json.loads(run("mappings", "show", "--json", "--dir", str(folder)).stdout)
    fortnox, visma = ({c["category"]: c for c in t["categories"]} for t in doc["targets"])
    assert fortnox["installation"]["article"] == "SK-INST"
    assert visma["installation"]["article"] == "V-INST"
    assert visma["data_maintenance"]["prices"][1] == {"from": "2027-01-01", "price": "1050.00"}


def test_show_invalid_files_exit_2(tmp_path: Path) -> None:
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "x.toml").write_text("[categories.installation]\nartcle = 'SK'\n")
    result = run("mappings", "show", "--dir", str(folder))
    assert result.exit_code == 2
    assert f"{folder / 'x.toml'}:2: unknown key 'artcle'" in result.stderr


def test_show_refuses_an_unknown_target() -> None:
    result = run("mappings", "show", "--target", "sap", "--dir", str(MAPPINGS_DIR))
    assert result.exit_code == 2


# --- check: the rules, without a network --------------------------------------------------------


def register(**changes: RegisterArticle) -> dict[str, RegisterArticle]:
    prices = {"SK-PL": None, "SK-DATA": None}
    numbers = ["SK-INST", "SK-UTB", "SK-KONF", "SK-KONFAND", "SK-FELSOK", "SK-PROJ", "SK-PL",
               "SK-DATA", "SK-RAD", "SK-FORBET"]  # fmt: skip
    found = {n: RegisterArticle(n, True, prices.get(n, Decimal("1000.00")), "h") for n in numbers}
    found.update(changes)
    return found


@pytest.mark.parametrize("target", TARGETS)
def test_find_problems_rules(target: str, mappings: Mappings) -> None:
    profile = targets.profile(target)
    articles = register(
        **{
            "SK-UTB": RegisterArticle("SK-UTB", False, Decimal(1050), "h"),
            "SK-KONF": RegisterArticle("SK-KONF", True, Decimal(1150), "st"),
        }
    )
    del articles["SK-PROJ"]
    problems = find_problems(mappings, profile, articles, {"st"}, {"onsite_visit": ["E9", "E1"]})
    kinds = {(p.category, p.kind) for p in problems}
    unit = "unit_missing" if profile.row_units else "unit_mismatch"
    expected = {
        ("training", "article_inactive"),
        ("project", "article_missing"),
        ("project_management", "no_price"),
        ("onsite_visit", "unmapped_category"),
    }
    if profile.row_units:  # every category's unit h is missing from the units given
        expected |= {
            (c.slug, unit)
            for c in mappings.categories.values()
            if c.billable and c.slug != "project"
        }
    else:
        expected.add(("configuration", unit))
    assert kinds == expected
    for problem in problems:
        if problem.kind != "unmapped_category":
            assert problem.where == mappings.categories[problem.category].source
    unmapped = next(p for p in problems if p.kind == "unmapped_category")
    assert unmapped.where is None and "2 ledger entries (E9, E1)" in unmapped.message


@pytest.mark.parametrize("target", TARGETS)
def test_price_rules(target: str, tmp_path: Path) -> None:
    """A price anywhere, a price history covering all work, free hours and a top-up leave the
    register's missing price alone; a history starting later does not."""
    folder = copy_mappings(tmp_path)
    edit(
        folder,
        'article = "SK-PL"',
        'article = "SK-PL"\nprices = [{ from = "2027-01-01", price = "900" }]',
    )
    edit(folder, 'article = "SK-FORBET"', 'article = "SK-FORBET"\nfree = false')
    edit(folder, 'article = "SK-RAD"', 'article = "SK-RAD"\nfree = true')
    mappings = load_mappings(folder)
    articles = register(
        **{
            "SK-FORBET": RegisterArticle("SK-FORBET", True, None, "h"),
            "SK-RAD": RegisterArticle("SK-RAD", True, Decimal(0), "h"),
            "SK-INST": RegisterArticle("SK-INST", True, Decimal(0), "h"),
        }
    )
    problems = find_problems(mappings, targets.profile(target), articles, {"h"}, {})
    messages = {p.category: p.message for p in problems}
    assert set(messages) == {"project_management", "installation"}
    assert "for work performed before 2027-01-01" in messages["project_management"]
    assert "article SK-INST has no sales price" in messages["installation"]


def test_zero_mapping_price_is_a_problem_unless_free(tmp_path: Path) -> None:
    folder = copy_mappings(tmp_path)
    edit(folder, 'article = "SK-PL"', 'article = "SK-PL"\nprice = "0"')
    problems = find_problems(load_mappings(folder), targets.profile("fortnox"), register(), {"h"})
    assert [(p.category, p.kind) for p in problems] == [("project_management", "no_price")]
    assert "at 0" in problems[0].message


def test_check_document_notes() -> None:
    mappings = load_mappings(MAPPINGS_DIR)
    doc = check_document(mappings, targets.profile("visma"), register(), None, None)
    assert doc["ledger_checked"] is False and doc["units_checked"] is False
    assert any("no local ledger mirror" in n for n in doc["notes"])
    assert any("takes each row's unit from its article" in n for n in doc["notes"])


# --- check: against each fake ------------------------------------------------------------------


@pytest.fixture(params=TARGETS)
def target_env(
    request: pytest.FixtureRequest,
    sandbox_server: SandboxServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> str:
    """The connector's settings against the running sandbox, for one target (Visma with its
    standing refresh token imported)."""
    target: str = request.param
    for name, value in connector_env(sandbox_server.url, tmp_path / "state").items():
        monkeypatch.setenv(name, value)
    if target == "visma":
        from connector.sandbox.visma import SEED_REFRESH_TOKEN, connector_section

        monkeypatch.setenv("CONNECTOR_TARGET", "visma")
        for name, value in connector_section(sandbox_server.url).items():
            monkeypatch.setenv(f"CONNECTOR_VISMA__{name.upper()}", value)
        imported = run("auth", "import", "visma", input=SEED_REFRESH_TOKEN + "\n")
        assert imported.exit_code == 0, imported.output
    return target


def writes(app_: SandboxApp, target: str) -> int:
    prefix = fake_module(target).Driver(app_).api_prefix
    return sum(
        n
        for name, n in app_.requests.items()
        if name.split(" ")[0] in ("POST", "PUT", "DELETE", "PATCH")
        and name.split(" ")[1].startswith(prefix)
    )


def reads(app_: SandboxApp, target: str) -> int:
    prefix = fake_module(target).Driver(app_).api_prefix
    return sum(
        n
        for name, n in app_.requests.items()
        if name.startswith("GET ") and name.split(" ")[1].startswith(prefix)
    )


def deactivate(app_: SandboxApp, target: str, number: str) -> None:
    if target == "fortnox":
        fortnox_of(app_).articles[number].active = False
    else:
        visma_of(app_).article_by_number(number).active = False


def mirror(state_dir: Path, *entries: RawEntry) -> None:
    store = StateStore(state_dir)
    try:
        store.store_page(
            [FeedItem(str(i), e, e["id"], e["revision"]) for i, e in enumerate(entries)], "c1"
        )
    finally:
        store.close()


def test_check_finds_every_problem_and_writes_nothing(
    target_env: str, sandbox_app: SandboxApp, tmp_path: Path
) -> None:
    target = target_env
    folder = copy_mappings(tmp_path)
    # configuration's rows in "tim": Fortnox has no such unit, Visma's article says h.
    edit(folder, 'article = "SK-KONF"\n', 'article = "SK-KONF"\nunit = "tim"\n')
    edit(folder, 'article = "SK-PROJ"', 'article = "SK-NOPE"')  # not in the register
    deactivate(sandbox_app, target, "SK-UTB")
    mirror(
        tmp_path / "state",
        _raw(id="E1", category="onsite_visit"),
        _raw(id="E2", category="onsite_visit"),
        _raw(id="E3", category="installation"),
    )
    before = reads(sandbox_app, target)
    result = run("mappings", "check", "--json", "--dir", str(folder))
    assert result.exit_code == 1, result.output
    doc = json.loads(result.stdout)
    assert doc["target"] == target and doc["ok"] is False
    found = {(p["category"], p["kind"]) for p in doc["problems"]}
    assert found == {
        ("training", "article_inactive"),
        ("configuration", "unit_missing" if target == "fortnox" else "unit_mismatch"),
        ("project", "article_missing"),
        ("project_management", "no_price"),  # SK-PL has no sales price, the file gives none
        ("onsite_visit", "unmapped_category"),
    }
    path = str(folder / SHIPPED.name)
    for problem in doc["problems"]:
        if problem["kind"] == "unmapped_category":
            assert problem["file"] is None and "(E1, E2)" in problem["message"]
            continue
        assert problem["file"] == path
        assert problem["line"] == line_of(folder, f"[categories.{problem['category']}]")
    assert doc["units_checked"] is (target == "fortnox")
    assert doc["ledger_checked"] is True
    assert reads(sandbox_app, target) > before  # it did ask the accounting system
    assert writes(sandbox_app, target) == 0
    text = run("mappings", "check", "--dir", str(folder))
    assert text.exit_code == 1
    assert "5 problem(s) checking 10 billable categories" in text.stdout
    assert f"{path}:{line_of(folder, '[categories.training]')}" in text.stdout
    assert "article SK-UTB of category 'training' is inactive" in text.stdout
    assert writes(sandbox_app, target) == 0


def test_check_all_well_exits_0(target_env: str, sandbox_app: SandboxApp, tmp_path: Path) -> None:
    folder = copy_mappings(tmp_path)
    edit(folder, 'article = "SK-PL"', 'article = "SK-PL"\nprice = "1100.00"')
    result = run("mappings", "check", "--dir", str(folder))
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("OK: 10 billable categories checked against ")
    assert "no local ledger mirror yet" in result.stdout
    doc = json.loads(run("mappings", "check", "--json", "--dir", str(folder)).stdout)
    assert doc["ok"] is True and doc["problems"] == [] and doc["counts"]["problems"] == 0
    assert writes(sandbox_app, target_env) == 0


def test_check_invalid_files_exit_2_before_asking(
    target_env: str, sandbox_app: SandboxApp, tmp_path: Path
) -> None:
    folder = copy_mappings(tmp_path)
    edit(folder, 'article = "SK-PL"', 'article = "SK-PL"\nprice = 1100.5')
    before = reads(sandbox_app, target_env)
    result = run("mappings", "check", "--dir", str(folder))
    assert result.exit_code == 2
    assert "price must be a quoted decimal" in result.stderr
    assert reads(sandbox_app, target_env) == before


def test_check_unreachable_exits_4(
    target_env: str, monkeypatch: pytest.MonkeyPatch, sleeps: list[float]
) -> None:
    variable = f"CONNECTOR_{target_env.upper()}__API_URL"
    monkeypatch.setenv(variable, "http://127.0.0.1:9/api")
    result = run("mappings", "check")
    assert result.exit_code == 4, result.output
    assert "unreachable" in result.stderr


def test_check_needing_login_exits_5(
    target_env: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if target_env == "fortnox":
        monkeypatch.delenv("CONNECTOR_FORTNOX__TENANT_ID")  # the refresh-token flow, no token
    else:
        os.remove(tmp_path / "state" / "visma-token.json")
    result = run("mappings", "check")
    assert result.exit_code == 5, result.output
    assert f"connector auth login {target_env}" in result.stderr


# --- set ---------------------------------------------------------------------------------------


def comments(text: str) -> list[str]:
    """Every comment, as written (no '#' sits inside a string in these files)."""
    return [line[line.index("#") :] for line in text.splitlines() if "#" in line]


def changed_old_lines(old: str, new: str) -> set[int]:
    """1-based numbers of the old lines a change touched (replaced or deleted, or next to an
    insertion)."""
    touched: set[int] = set()
    matcher = difflib.SequenceMatcher(a=old.splitlines(), b=new.splitlines(), autojunk=False)
    for op, i1, i2, _, _ in matcher.get_opcodes():
        if op != "equal":
            touched.update(range(i1 + 1, max(i2, i1 + 1) + 1))
    return touched


def table_lines(text: str, slug: str) -> set[int]:
    """The lines of [categories.slug] and its sub-tables, up to the next other table."""
    lines = text.splitlines()
    start = lines.index(f"[categories.{slug}]") + 1
    end = start
    while end < len(lines) and not (
        lines[end].startswith("[") and not lines[end].startswith(f"[categories.{slug}.")
    ):
        end += 1
    return set(range(start, end + 2))  # an insertion may sit at the next header's line


@pytest.mark.parametrize("target", [None, *TARGETS])
def test_set_article_keeps_everything_else_byte_for_byte(
    target: str | None, tmp_path: Path
) -> None:
    folder = copy_mappings(tmp_path)
    path = folder / SHIPPED.name
    old = path.read_bytes()
    args = ["mappings", "set", "training", "--article", "SK-UTB2", "--dir", str(folder)]
    result = run(*args, *(["--target", target] if target else []))
    assert result.exit_code == 0, result.output
    new = path.read_bytes()
    assert comments(old.decode()) == comments(new.decode())
    assert changed_old_lines(old.decode(), new.decode()) <= table_lines(old.decode(), "training")
    category = load_mappings(folder).categories["training"]
    for name in TARGETS:
        expected = "SK-UTB2" if target in (None, name) else "SK-UTB"
        assert category.article_for(name) == expected
    assert '+article = "SK-UTB2"' in result.stdout  # the diff of what was written
    assert "Written: " in result.stdout


def test_set_price_needs_from_when_a_price_exists(tmp_path: Path) -> None:
    folder = copy_mappings(tmp_path)
    path = folder / SHIPPED.name
    old = path.read_bytes()
    refused = run("mappings", "set", "data_maintenance", "--price", "1050", "--dir", str(folder))
    assert refused.exit_code == 2
    assert "already has a price" in refused.stderr and "--from YYYY-MM-DD" in refused.stderr
    assert path.read_bytes() == old
    result = run(
        "mappings", "set", "data_maintenance", "--price", "1050", "--from", "2027-01-01",
        "--dir", str(folder), "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["written"] is True and doc["changed"] is True
    assert '+prices = [{ from = "2027-01-01", price = "1050.00" }]' in doc["diff"]
    category = load_mappings(folder).categories["data_maintenance"]
    assert category.price_on(date(2026, 12, 31)) == Decimal("995.00")
    assert category.price_on(date(2027, 1, 1)) == Decimal("1050.00")
    # A second change goes in date order; one from the same day replaces it.
    for price, since in (("1100", "2026-06-01"), ("1060", "2027-01-01")):
        again = run(
            "mappings", "set", "data_maintenance", "--price", price, "--from", since,
            "--dir", str(folder),
        )  # fmt: skip
        assert again.exit_code == 0, again.output
    assert load_mappings(folder).categories["data_maintenance"].prices == (
        (date(2026, 6, 1), Decimal("1100.00")),
        (date(2027, 1, 1), Decimal("1060.00")),
    )
    assert comments(old.decode()) == comments(path.read_text())


def test_set_first_price_without_from_is_the_price(tmp_path: Path) -> None:
    folder = copy_mappings(tmp_path)
    result = run("mappings", "set", "project_management", "--price", "1100", "--dir", str(folder))
    assert result.exit_code == 0, result.output
    assert load_mappings(folder).categories["project_management"].price == Decimal("1100.00")


def test_set_past_from_says_what_it_affects(tmp_path: Path) -> None:
    folder = copy_mappings(tmp_path)
    outcome = set_mapping(
        folder, Change("data_maintenance", price="1000", since="2026-01-01"), today=TODAY
    )
    assert outcome.written
    assert any("rows already on invoices keep their price" in n for n in outcome.notes)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["installation", "--article", "SK INST"], "article 'SK INST' is not valid in Fortnox"),
        (["installation", "--article", "X" * 45], "Visma eAccounting allows at most 40"),
        (["installation", "--price", "-5"], "--price must be a decimal number"),
        (["installation", "--price", "12.345"], "at most 2 decimals"),
        (["installation", "--price", "1e3"], "--price must be a decimal number"),
        (["installation", "--from", "2027-01-01"], "--from needs --price"),
        (["installation", "--price", "1", "--from", "2027-13-01"], "--from must be a date"),
        (["installation"], "nothing to set"),
        (["Installation", "--article", "A"], "lower-case letters"),
        (["guidance", "--article", "SK-VAG"], "is not billable"),
        (["guidance", "--price", "100"], "is not billable"),
        (["data_maintenance", "--price", "1000"], "already has a price"),
        (["onsite_visit", "--article", "SK-X", "--target", "visma"], "has no article for Fortnox"),
    ],
)
def test_set_refusals_leave_the_file_byte_identical(
    args: list[str], message: str, tmp_path: Path
) -> None:
    folder = copy_mappings(tmp_path)
    path = folder / SHIPPED.name
    before = path.read_bytes()
    mode = path.stat().st_mode
    result = run("mappings", "set", *args, "--dir", str(folder))
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert path.read_bytes() == before and path.stat().st_mode == mode
    assert sorted(p.name for p in folder.iterdir()) == [SHIPPED.name]  # no temporary left


def test_set_refusal_names_the_problem_file_and_line(tmp_path: Path) -> None:
    folder = copy_mappings(tmp_path)
    with pytest.raises(MappingError) as caught:
        set_mapping(folder, Change("installation", article="SK INST"), today=TODAY)
    assert caught.value.message.startswith("the change was not written")
    line = line_of(folder, "[categories.installation]") + 2
    assert caught.value.problems[0].startswith(f"{folder / SHIPPED.name}:{line}: ")


def test_set_new_category_and_which_file(tmp_path: Path) -> None:
    folder = copy_mappings(tmp_path)
    result = run(
        "mappings", "set", "onsite_visit", "--article", "SK-PLATS", "--price", "1300",
        "--name", "Platsbesök", "--dir", str(folder),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    category = load_mappings(folder).categories["onsite_visit"]
    assert (category.article, category.price, category.name) == (
        "SK-PLATS",
        Decimal("1300.00"),
        "Platsbesök",
    )
    # Two files: a new category needs --file.
    (folder / "extra.toml").write_text("# more categories\n", encoding="utf-8")
    ambiguous = run("mappings", "set", "travel", "--article", "SK-RESA", "--dir", str(folder))
    assert ambiguous.exit_code == 2 and "--file NAME.toml" in ambiguous.stderr
    chosen = run(
        "mappings", "set", "travel", "--article", "SK-RESA", "--file", "extra.toml",
        "--dir", str(folder),
    )  # fmt: skip
    assert chosen.exit_code == 0, chosen.output
    assert (folder / "extra.toml").read_text(encoding="utf-8").startswith("# more categories\n")
    assert load_mappings(folder).categories["travel"].source.startswith(str(folder / "extra.toml"))
    # An existing category is edited where it is defined; another --file is refused.
    wrong = run(
        "mappings", "set", "travel", "--article", "SK-R2", "--file", SHIPPED.name,
        "--dir", str(folder),
    )  # fmt: skip
    assert wrong.exit_code == 2 and "is defined in" in wrong.stderr
    moved = run("mappings", "set", "travel", "--article", "SK-R2", "--dir", str(folder))
    assert moved.exit_code == 0
    assert 'article = "SK-R2"' in (folder / "extra.toml").read_text(encoding="utf-8")
    # A new file in the folder.
    new = run(
        "mappings", "set", "hosting", "--article", "SK-HOST", "--file", "hosting.toml",
        "--dir", str(folder),
    )  # fmt: skip
    assert new.exit_code == 0, new.output
    assert load_mappings(folder).categories["hosting"].article == "SK-HOST"
    outside = run(
        "mappings", "set", "x", "--article", "A", "--file", str(tmp_path / "x.toml"),
        "--dir", str(folder),
    )  # fmt: skip
    assert outside.exit_code == 2 and "not a *.toml file in the mappings folder" in outside.stderr


def test_set_keeps_the_file_mode_and_leaves_no_temporary(tmp_path: Path) -> None:
    folder = copy_mappings(tmp_path)
    path = folder / SHIPPED.name
    path.chmod(0o640)
    result = run("mappings", "set", "training", "--price", "999", "--dir", str(folder))
    assert result.exit_code == 0, result.output
    assert path.stat().st_mode & 0o777 == 0o640
    assert sorted(p.name for p in folder.iterdir()) == [SHIPPED.name]


def test_set_dry_run_and_nothing_to_change(tmp_path: Path) -> None:
    folder = copy_mappings(tmp_path)
    path = folder / SHIPPED.name
    before = path.read_bytes()
    dry = run("mappings", "set", "training", "--article", "SK-X", "--dry-run", "--dir", str(folder))
    assert dry.exit_code == 0 and "Not written (--dry-run)" in dry.stdout
    assert '+article = "SK-X"' in dry.stdout
    same = run("mappings", "set", "training", "--article", "SK-UTB", "--dir", str(folder))
    assert same.exit_code == 0 and "Nothing to change" in same.stdout
    assert path.read_bytes() == before


def test_set_refuses_when_another_file_is_invalid(tmp_path: Path) -> None:
    """The whole set must validate, as `validate` reads it."""
    folder = copy_mappings(tmp_path)
    (folder / "b.toml").write_bytes(b"\xef\xbb\xbf[categories.x]\nbillable = false\n")
    before = (folder / SHIPPED.name).read_bytes()
    result = run("mappings", "set", "training", "--article", "SK-X", "--dir", str(folder))
    assert result.exit_code == 2 and "byte-order mark" in result.stderr
    assert (folder / SHIPPED.name).read_bytes() == before


def test_set_does_not_overwrite_a_file_changed_meanwhile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from connector import mapping_edit

    folder = copy_mappings(tmp_path)
    path = folder / SHIPPED.name
    real = mapping_edit.validate_with

    def and_someone_saves(folder_: Path, path_: Path, text: str) -> Mappings:
        path.write_text(path.read_text(encoding="utf-8") + "# someone else\n", encoding="utf-8")
        return real(folder_, path_, text)

    monkeypatch.setattr(mapping_edit, "validate_with", and_someone_saves)
    with pytest.raises(ConfigError, match="changed while it was being edited"):
        set_mapping(folder, Change("training", article="SK-X"), today=TODAY)
    assert path.read_text(encoding="utf-8").endswith("# someone else\n")
    assert 'article = "SK-UTB"' in path.read_text(encoding="utf-8")


_ARTICLE = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9+/._-]{0,39}", fullmatch=True)
_PRICE = st.decimals(min_value=0, max_value=Decimal("99999.99"), places=2)
_SLUGS = ["installation", "training", "data_maintenance", "prepaid_hours", "project"]


@hsettings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    slug=st.sampled_from(_SLUGS),
    article=st.one_of(st.none(), _ARTICLE),
    price=st.one_of(st.none(), _PRICE),
    since=st.one_of(st.none(), st.dates(date(2020, 1, 1), date(2030, 12, 31))),
    target=st.sampled_from([None, *TARGETS]),
)
def test_set_round_trip_property(
    tmp_path_factory: pytest.TempPathFactory,
    slug: str,
    article: str | None,
    price: Decimal | None,
    since: date | None,
    target: str | None,
) -> None:
    """Whatever valid article and price is set, the files read back with exactly that, every
    comment and every line outside the category's table stay byte for byte, and a refused
    change leaves the file untouched."""
    folder = copy_mappings(tmp_path_factory.mktemp("prop"))
    path = folder / SHIPPED.name
    old = path.read_text(encoding="utf-8")
    before = load_mappings(folder).categories[slug]
    change = Change(
        slug,
        article=article,
        price=None if price is None else str(price),
        since=None if since is None or price is None else since.isoformat(),
        target=target if article is not None else None,
    )
    try:
        outcome = set_mapping(folder, change, today=TODAY)
    except ConfigError:
        assert path.read_text(encoding="utf-8") == old
        refused_for_a_reason = (article is None and price is None) or (
            price is not None and change.since is None and before.price is not None
        )
        assert refused_for_a_reason
        return
    new = path.read_text(encoding="utf-8")
    assert outcome.written == (new != old)
    assert comments(old) == comments(new)
    assert changed_old_lines(old, new) <= table_lines(old, slug)
    after = load_mappings(folder).categories[slug]
    if article is not None:
        for name in TARGETS:
            if target in (None, name):
                assert after.article_for(name) == article
    if price is not None:
        if change.since is None:
            assert after.price == price
        else:
            assert (since, price) in after.prices

    # Every other category reads exactly as before.
    def meaning(mappings: Mappings) -> dict[str, tuple[Any, ...]]:
        return {
            s: (c.name, c.billable, c.article, c.price, c.prices, c.overrides, c.unit, c.free)
            for s, c in mappings.categories.items()
            if s != slug
        }

    assert meaning(load_mappings(folder)) == meaning(load_mappings(MAPPINGS_DIR))


TRICKY = """\
# Header comment: keep me.
[defaults]
unit = "h"   # hours

[categories]
inline_one = { name = "Inline", article = "IN-1" }   # an inline category

[categories.listed]
name = "Listed"     # name comment
article = "L-1"     # article comment
prices = [
  # history, oldest first
  { from = "2026-01-01", price = "100.00" },   # first
  { from = 2027-01-01, price = "110.00" },     # second (a TOML date)
]
# trailing comment of listed

[categories.last]
billable = false
"""


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
@pytest.mark.parametrize(
    ("change", "check"),
    [
        (Change("listed", price="105", since="2026-06-01"), "prices"),
        (Change("listed", price="120", since="2028-01-01"), "prices"),
        (Change("listed", price="111", since="2027-01-01"), "prices"),
        (Change("listed", article="L-2"), "article"),
        (Change("listed", article="L-V", target="visma"), "override"),
        (Change("inline_one", article="IN-2"), "article"),
        (Change("inline_one", price="50"), "price"),
        (Change("inline_one", price="55", since="2027-02-01"), "prices"),
        (Change("inline_one", article="IN-F", target="fortnox"), "override"),
    ],
)
def test_set_on_other_layouts_keeps_the_rest(
    change: Change, check: str, newline: str, tmp_path: Path
) -> None:
    folder = tmp_path / "maps"
    folder.mkdir()
    path = folder / "m.toml"
    path.write_bytes(TRICKY.replace("\n", newline).encode())
    old = path.read_bytes().decode()
    outcome = set_mapping(folder, change, today=TODAY)
    assert outcome.written
    new = path.read_bytes().decode()
    assert comments(old) == comments(new)
    old_lines, new_lines = old.splitlines(), new.splitlines()
    # Lines outside the edited category are kept byte for byte, line endings included.
    touched = changed_old_lines(old, new)
    start = next(i for i, line in enumerate(old_lines, 1) if change.category in line)
    # (an insertion at the end counts the next table's header line as touched)
    assert all(start <= n <= start + 10 for n in touched), touched
    assert old_lines[: start - 1] == new_lines[: start - 1]
    if newline == "\r\n":
        untouched = [line for n, line in enumerate(old.split("\n"), 1) if n not in touched]
        assert all(line.endswith("\r") for line in untouched[:-1])
        assert new.count("\n") == new.count("\r\n")  # the new lines too
    category = load_mappings(folder).categories[change.category]
    if check == "prices":
        assert change.since is not None and change.price is not None
        assert (date.fromisoformat(change.since), Decimal(change.price)) in category.prices
        assert list(category.prices) == sorted(category.prices)
    elif check == "price":
        assert category.price == Decimal(change.price or "x")
    elif check == "article":
        assert category.article == change.article
    else:
        assert change.target is not None
        assert category.overrides == {change.target: change.article}


def test_set_reports_what_the_next_sync_would_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a ledger mirror, `set` says what the changed files would do, as validate does."""
    monkeypatch.setenv("CONNECTOR_STATE_DIR", str(tmp_path / "state"))
    mirror(tmp_path / "state", _raw(id="E1", category="onsite_visit"))
    folder = copy_mappings(tmp_path)
    result = run(
        "mappings", "set", "onsite_visit", "--article", "SK-INST", "--dir", str(folder), "--json"
    )
    assert result.exit_code == 0, result.output
    notes = json.loads(result.stdout)["notes"]
    assert any(
        "the next sync would create or change 1 invoice(s): SK-1001-2026-09" in n for n in notes
    )


def test_check_without_the_units_scope_checks_the_rest(
    target_env: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from connector.errors import ScopeDeniedError
    from connector.targets.fortnox.client import FortnoxClient

    def denied(self: FortnoxClient) -> set[str]:
        raise ScopeDeniedError("Fortnox: the authorisation lacks the scope settings")

    monkeypatch.setattr(FortnoxClient, "unit_codes", denied)
    folder = copy_mappings(tmp_path)
    edit(folder, 'article = "SK-PL"', 'article = "SK-PL"\nprice = "1100.00"')
    result = run("mappings", "check", "--json", "--dir", str(folder))
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["units_checked"] is False
    if target_env == "fortnox":
        assert doc["notes"][0].startswith("units not checked: Fortnox: the authorisation lacks")


def test_set_through_a_symlink_edits_the_file_it_points_to(tmp_path: Path) -> None:
    real = tmp_path / "repo" / "service-categories.toml"
    real.parent.mkdir()
    shutil.copy(SHIPPED, real)
    folder = tmp_path / "maps"
    folder.mkdir()
    (folder / SHIPPED.name).symlink_to(real)
    outcome = set_mapping(folder, Change("training", price="999"), today=TODAY)
    assert outcome.written
    assert (folder / SHIPPED.name).is_symlink()
    assert 'price = "999.00"' in real.read_text(encoding="utf-8")
    assert sorted(p.name for p in real.parent.iterdir()) == [SHIPPED.name]
