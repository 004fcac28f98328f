"""Mapping files: the shipped file is valid; every kind of mistake is named with file and line."""

from __future__ import annotations

import os
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest
from typer.testing import CliRunner

from connector.cli import app
from connector.errors import MappingError
from connector.mappings import Mappings, Rounding, check_articles_exist, load_mappings
from connector.targets import fortnox
from tests.conftest import MAPPINGS_DIR

GOOD = """\
[defaults]
unit = "h"
rounding = { increment = "0.01", mode = "half_up" }

[categories.installation]
name = "Installation"
article = "SK-INST"

[categories.guidance]
name = "Vägledning"
billable = false
"""


def problems_of(tmp_path: Path, *files: tuple[str, str]) -> list[str]:
    folder = tmp_path / "maps"
    folder.mkdir(exist_ok=True)
    for name, text in files:
        (folder / name).write_text(text, encoding="utf-8")
    with pytest.raises(MappingError) as info:
        load_mappings(folder)
    return info.value.problems


def test_shipped_mappings_are_valid(mappings: Mappings) -> None:
    billable = {
        "installation": "SK-INST",
        "training": "SK-UTB",
        "configuration": "SK-KONF",
        "configuration_change": "SK-KONFAND",
        "customer_caused_fault": "SK-FELSOK",
        "project": "SK-PROJ",
        "project_management": "SK-PL",
        "data_maintenance": "SK-DATA",
        "business_advisory": "SK-RAD",
        "prepaid_hours": "SK-FORBET",
    }
    included = {"guidance", "product_fault", "partner_api_update", "account_admin"}
    assert {s: c.article for s, c in mappings.categories.items() if c.billable} == billable
    assert {s for s, c in mappings.categories.items() if not c.billable} == included
    assert mappings.defaults.unit == "h" and mappings.defaults.show_prepaid_rows
    assert mappings.defaults.rounding == Rounding(Decimal("0.01"), "half_up")


def test_validate_command_accepts_shipped_mappings() -> None:
    result = CliRunner().invoke(app, ["mappings", "validate", "--dir", str(MAPPINGS_DIR)])
    assert result.exit_code == 0
    assert result.output.strip() == "OK: 14 categories (10 billable)"


def test_typo_key_names_file_line_and_suggestion(tmp_path: Path) -> None:
    text = GOOD + '\n[categories.training]\nname = "Utbildning"\nartcle = "SK-UTB"\n'
    found = problems_of(tmp_path, ("a.toml", text))
    path = tmp_path / "maps" / "a.toml"
    assert (
        f"{path}:15: unknown key 'artcle' in [categories.training] (did you mean 'article'?)"
        in (found[0])
    )
    # The typo also leaves the category without an article: both are reported.
    assert any("'training' is billable but has no article" in p for p in found)


def test_toml_syntax_error_has_line(tmp_path: Path) -> None:
    text = GOOD + '\n[categories.training\narticle = "SK-UTB"\n'
    (found,) = problems_of(tmp_path, ("a.toml", text))
    assert found.startswith(f"{tmp_path / 'maps' / 'a.toml'}:13: TOML syntax error")


def test_billable_without_article(tmp_path: Path) -> None:
    text = GOOD + '\n[categories.training]\nname = "Utbildning"\n'
    (found,) = problems_of(tmp_path, ("a.toml", text))
    assert (
        found
        == f"{tmp_path / 'maps' / 'a.toml'}:13: category 'training' is billable but has no article"
    )


@pytest.mark.parametrize(
    ("price", "message"),
    [
        ('"-100.00"', "price must be 0 or more, got -100.00"),
        ("-100", "price must be 0 or more, got -100"),
        ("1150.5", 'price must be a quoted decimal, e.g. "1150.5"'),
        ('"12,50"', "price must be a decimal number"),
        ('"10.005"', "price must have at most 2 decimals"),
        ("true", "price must be a quoted decimal string, got bool"),
    ],
)
def test_bad_price(tmp_path: Path, price: str, message: str) -> None:
    text = GOOD.replace('article = "SK-INST"', f'article = "SK-INST"\nprice = {price}')
    (found,) = problems_of(tmp_path, ("a.toml", text))
    assert found.startswith(f"{tmp_path / 'maps' / 'a.toml'}:8: ")
    assert message in found


def test_duplicate_category_across_files(tmp_path: Path) -> None:
    other = '# second file\n\n[categories.installation]\narticle = "SK-INST2"\n'
    (found,) = problems_of(tmp_path, ("a.toml", GOOD), ("b.toml", other))
    a, b = tmp_path / "maps" / "a.toml", tmp_path / "maps" / "b.toml"
    assert found == f"{b}:3: category 'installation' is defined twice (first at {a}:5)"


def test_duplicate_category_in_one_file(tmp_path: Path) -> None:
    text = GOOD + '\n[categories.installation]\narticle = "SK-X"\n'
    (found,) = problems_of(tmp_path, ("a.toml", text))
    assert ":13: TOML syntax error" in found and "installation" in found


def test_duplicate_defaults(tmp_path: Path) -> None:
    (found,) = problems_of(tmp_path, ("a.toml", GOOD), ("b.toml", '[defaults]\nunit = "st"\n'))
    assert found.startswith(f"{tmp_path / 'maps' / 'b.toml'}:1: [defaults] is also defined at")


@pytest.mark.parametrize(
    ("rounding", "message", "line"),
    [
        ('{ increment = "0.25", mode = "down" }', "unknown rounding mode 'down'", 8),
        ('{ increment = "0", mode = "up" }', "rounding increment must be greater than 0", 8),
        ('{ increment = "0.25", mod = "up" }', "unknown key 'mod'", 8),
        ('"0.25"', "rounding must be a table", 8),
    ],
)
def test_bad_rounding(tmp_path: Path, rounding: str, message: str, line: int) -> None:
    text = GOOD.replace('article = "SK-INST"', f'article = "SK-INST"\nrounding = {rounding}')
    (found,) = problems_of(tmp_path, ("a.toml", text))
    assert found.startswith(f"{tmp_path / 'maps' / 'a.toml'}:{line}: ")
    assert message in found


@pytest.mark.parametrize(
    ("article", "message"),
    [
        ("SK INST", "not valid in Fortnox: letters A-Z, digits and - + / . _ only"),
        ("SK-ÅR", "not valid in Fortnox"),
        ("A" * 51, "Fortnox allows at most 50"),
        ("A" * 45, "Visma eAccounting allows at most 40"),
    ],
)
def test_article_rules_of_each_target(tmp_path: Path, article: str, message: str) -> None:
    text = GOOD.replace('"SK-INST"', f'"{article}"')
    found = problems_of(tmp_path, ("a.toml", text))
    assert any(message in p and ":7:" in p for p in found), found


def test_per_target_override(tmp_path: Path) -> None:
    folder = tmp_path / "maps"
    folder.mkdir()
    long = "A" * 45
    text = GOOD.replace(
        'article = "SK-INST"',
        f'article = "{long}"\n[categories.installation.visma]\narticle = "SK-INST"',
    )
    (folder / "a.toml").write_text(text, encoding="utf-8")
    loaded = load_mappings(folder)
    assert loaded.categories["installation"].article_for("fortnox") == long
    assert loaded.categories["installation"].article_for("visma") == "SK-INST"


def test_float_and_unknown_top_level(tmp_path: Path) -> None:
    found = problems_of(tmp_path, ("a.toml", GOOD + "\n[categorys.x]\narticle = 'Y'\n"))
    assert any(
        "unknown key 'categorys' in the top level (did you mean 'categories'?)" in p for p in found
    )


def test_all_problems_reported_at_once(tmp_path: Path) -> None:
    text = (
        GOOD
        + '\n[categories.training]\nartcle = "SK-UTB"\n'
        + '\n[categories.project]\narticle = "SK-PROJ"\nprice = "-1"\n'
    )
    found = problems_of(tmp_path, ("a.toml", text))
    assert len(found) == 3


def test_empty_or_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(MappingError, match="problem"):
        load_mappings(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(MappingError) as info:
        load_mappings(tmp_path / "empty")
    assert "no *.toml mapping files" in info.value.problems[0]


@pytest.mark.parametrize(
    "text",
    [
        GOOD.replace('article = "SK-INST"', 'artcle = "SK-INST"'),
        GOOD + "\n[categories.x\n",
        GOOD.replace('name = "Installation"', 'name = "Installation"\nprice = "-5"'),
        GOOD + '\n[categories.training]\nname = "Utbildning"\n',
        GOOD + '\n[categories.installation]\narticle = "SK-X"\n',
    ],
    ids=["typo", "syntax", "negative-price", "no-article", "duplicate"],
)
def test_validate_command_exits_2_with_file_and_line(tmp_path: Path, text: str) -> None:
    folder = tmp_path / "maps"
    folder.mkdir()
    (folder / "service.toml").write_text(text, encoding="utf-8")
    result = CliRunner().invoke(app, ["mappings", "validate", "--dir", str(folder)])
    assert result.exit_code == 2
    assert f"{folder / 'service.toml'}:" in result.output
    assert "OK:" not in result.output


@pytest.mark.parametrize(
    ("increment", "mode", "value", "expected"),
    [
        ("0.01", "half_up", "1.005", "1.01"),
        ("0.01", "half_up", "1.004", "1.00"),
        ("0.25", "up", "0.1", "0.25"),
        ("0.25", "up", "1.0", "1.00"),
        ("0.25", "up", "1.01", "1.25"),
        ("0.25", "half_up", "1.12", "1.00"),
        ("0.25", "half_up", "1.125", "1.25"),
        ("0.5", "up", "0", "0.0"),
        ("1", "up", "2.0001", "3"),
    ],
)
def test_rounding(increment: str, mode: str, value: str, expected: str) -> None:
    rounded = Rounding(Decimal(increment), mode).apply(Decimal(value))  # type: ignore[arg-type]
    assert rounded == Decimal(expected) and str(rounded) == expected


def test_articles_checked_against_the_accounting_system(mappings: Mappings) -> None:
    existing = set(mappings.articles("fortnox")) - {"SK-RAD"}
    (found,) = check_articles_exist(mappings, fortnox.PROFILE, existing)
    assert "service-categories.toml:" in found
    assert "article 'SK-RAD' of category 'business_advisory' does not exist in Fortnox" in found


# --- price history and files that cannot be read ----------------------------------------------


def test_price_history_applies_by_the_day_the_work_was_done(tmp_path: Path) -> None:
    folder = tmp_path / "maps"
    folder.mkdir()
    (folder / "m.toml").write_text(
        '[categories.installation]\narticle = "SK-INST"\nprice = "1150.00"\n'
        'prices = [{ from = 2027-01-01, price = "1250.00" },\n'
        '          { from = "2027-07-01", price = "1300" }]\n',
        encoding="utf-8",
    )
    category = load_mappings(folder).categories["installation"]
    assert category.price_on(date(2026, 12, 31)) == Decimal("1150.00")
    assert category.price_on(date(2027, 1, 1)) == Decimal("1250.00")
    assert category.price_on(date(2027, 7, 2)) == Decimal(1300)


@pytest.mark.parametrize(
    ("prices", "message"),
    [
        ('"1250.00"', "prices must be a list of price changes"),
        ('[{ price = "1250.00" }]', "each price change needs from = a date YYYY-MM-DD"),
        ('[{ from = "2027-13-01", price = "1" }]', "each price change needs from = a date"),
        ('[{ from = "2027-01-01" }]', "the price change from 2027-01-01 has no price"),
        ('[{ from = "2027-01-01", price = 1250.5 }]', "must be a quoted decimal"),
        ('[{ from = "2027-01-01", price = "1" }, { from = "2027-01-01", price = "2" }]',
         "two price changes start on the same day"),
        ('[{ from = "2027-01-01", price = "1", since = "x" }]', "unknown key 'since'"),
    ],
)  # fmt: skip
def test_bad_price_history(tmp_path: Path, prices: str, message: str) -> None:
    text = f'[categories.installation]\narticle = "SK-INST"\nprices = {prices}\n'
    (problem,) = problems_of(tmp_path, ("m.toml", text))
    assert problem.startswith(f"{tmp_path / 'maps' / 'm.toml'}:3: ")
    assert message in problem


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\xef\xbb\xbf" + GOOD.encode(), ":1: starts with a byte-order mark; save it as UTF-8"),
        (b"", ": is empty"),
        (b"  \n\n", ": is empty"),
        ("[categories.guidance]\nname = \"Vägledning\"\n".encode("latin-1"),
         ":2: is not UTF-8 (byte 0xe4); save it as UTF-8"),
        (b"[defaults]\nunit = \"h\x00\"\n", ": contains NUL characters"),
    ],
)  # fmt: skip
def test_unreadable_mapping_files_are_named(tmp_path: Path, content: bytes, message: str) -> None:
    folder = tmp_path / "maps"
    folder.mkdir()
    (folder / "good.toml").write_text(GOOD.replace("installation", "training"), encoding="utf-8")
    (folder / "bad.toml").write_bytes(content)
    with pytest.raises(MappingError) as info:
        load_mappings(folder)
    assert info.value.exit_code == 2
    (problem,) = info.value.problems
    assert problem.startswith(str(folder / "bad.toml")) and message in problem


def test_a_folder_or_an_unreadable_file_named_toml(tmp_path: Path) -> None:
    folder = tmp_path / "maps"
    folder.mkdir()
    (folder / "good.toml").write_text(GOOD, encoding="utf-8")
    (folder / "old.toml").mkdir()
    locked = folder / "locked.toml"
    locked.write_text('[categories.training]\narticle = "SK-UTB"\n', encoding="utf-8")
    locked.chmod(0)
    with pytest.raises(MappingError) as info:
        load_mappings(folder)
    problems = info.value.problems
    assert f"{folder / 'old.toml'}: is a folder, not a mapping file" in problems[-1]
    if os.geteuid() != 0:  # root reads any file
        assert f"{locked}: cannot be read" in problems[0]


def test_validate_command_names_an_unreadable_file(tmp_path: Path) -> None:
    folder = tmp_path / "maps"
    folder.mkdir()
    (folder / "m.toml").write_bytes(b"\xef\xbb\xbf" + GOOD.encode())
    result = CliRunner().invoke(app, ["mappings", "validate", "--dir", str(folder)])
    assert result.exit_code == 2
    assert "byte-order mark" in result.stderr and str(folder / "m.toml") in result.stderr
