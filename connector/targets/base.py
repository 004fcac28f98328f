"""What every accounting system target offers the sync, and the limits the planner must respect.

A target module defines a `PROFILE` (pure data the planner and the mapping validator use) and,
from the Fortnox issue on, a client implementing `Target`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class TargetProfile:
    name: str
    display_name: str
    # Longest row text the target stores; longer texts are cut by the planner.
    row_text_max: int
    article_max: int
    # None when the target documents no character rule for article numbers.
    article_pattern: re.Pattern[str] | None
    article_rule: str
    # Decimals a quantity may carry on the wire.
    quantity_places: int
    # Decimals a unit price may carry on the wire.
    price_places: int

    def article_problem(self, article: str) -> str | None:
        """Why the target would reject this article number, or None."""
        if not article:
            return f"{self.display_name} needs a non-empty article number"
        if len(article) > self.article_max:
            return (
                f"article {article!r} is {len(article)} characters; "
                f"{self.display_name} allows at most {self.article_max}"
            )
        if self.article_pattern is not None and not self.article_pattern.fullmatch(article):
            return f"article {article!r} is not valid in {self.display_name}: {self.article_rule}"
        return None


class Target(Protocol):
    """An accounting system the sync writes invoice drafts to."""

    profile: TargetProfile
