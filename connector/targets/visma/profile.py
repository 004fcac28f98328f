"""What the planner and the mapping validator must know of Visma eAccounting: pure data."""

from __future__ import annotations

from connector.targets.base import TargetProfile

PROFILE = TargetProfile(
    name="visma",
    display_name="Visma eAccounting",
    row_text_max=2000,  # CustomerInvoiceDraftRow.Text maxLength
    article_max=40,  # Article.Number maxLength
    article_pattern=None,
    article_rule="at most 40 characters",
    quantity_places=2,  # draft row Quantity pattern allows 2 decimals
    price_places=2,  # UnitPrice: 2 decimals for domestic customers
    withdrawn="deleted",
    deletable=True,
    row_units=False,  # a draft row's unit is the article's (UnitId is read-only)
)
