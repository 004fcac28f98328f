"""Fortnox API v3 (docs/fortnox.md). Only light modules here: the client loads on use."""

from __future__ import annotations

from connector.targets.base import TargetSpec
from connector.targets.fortnox.oauth import APP
from connector.targets.fortnox.profile import PROFILE
from connector.targets.fortnox.settings import FortnoxSettings

SPEC = TargetSpec(
    profile=PROFILE,
    settings=FortnoxSettings,
    oauth=APP,
    factory="connector.targets.fortnox.client:build",
    after_service_login="connector.targets.fortnox.client:service_account_lines",
)

__all__ = ["PROFILE", "SPEC", "FortnoxSettings"]
