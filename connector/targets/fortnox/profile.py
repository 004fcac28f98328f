"""What the planner and the mapping validator must know of Fortnox: pure data."""

from __future__ import annotations

import re

from connector.targets.base import TargetProfile

PROFILE = TargetProfile(
    name="fortnox",
    display_name="Fortnox",
    row_text_max=255,  # InvoiceRow.Description maxLength in the OpenAPI document
    article_max=50,
    # Fortnox: "only alphanumeric characters, with the addition of - + / . and _". We read
    # "alphanumeric" as ASCII letters and digits: the safe reading (docs/mappings.md).
    article_pattern=re.compile(r"[A-Za-z0-9+/._-]+"),
    article_rule="letters A-Z, digits and - + / . _ only",
    quantity_places=2,  # decimals accepted are UNCERTAIN; 2 is what both targets accept
    price_places=2,
    withdrawn="cancelled",
)
