"""Visma eAccounting API v2 (docs/visma.md). Only light modules here: the client loads on use."""

from __future__ import annotations

from connector.targets.base import TargetSpec
from connector.targets.visma.oauth import APP
from connector.targets.visma.profile import PROFILE
from connector.targets.visma.settings import VismaSettings

SPEC = TargetSpec(
    profile=PROFILE,
    settings=VismaSettings,
    oauth=APP,
    factory="connector.targets.visma.client:build",
)

__all__ = ["PROFILE", "SPEC", "VismaSettings"]
