"""Accounting system targets: one module per system, one Protocol in `base`."""

from __future__ import annotations

from connector.targets import fortnox, visma
from connector.targets.base import TargetProfile

PROFILES: dict[str, TargetProfile] = {
    fortnox.PROFILE.name: fortnox.PROFILE,
    visma.PROFILE.name: visma.PROFILE,
}


def profile(name: str) -> TargetProfile:
    return PROFILES[name]
