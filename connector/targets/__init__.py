"""The accounting systems the connector writes to: a registry, name -> `TargetSpec`.

Each system is a package `connector/targets/<name>/` whose `__init__` exposes `SPEC` and imports
only light modules (profile, settings, OAuth app); its HTTP client loads when a run opens it.
Adding a system is one package, one fake (`connector/sandbox/<name>.py`) and one line here
(docs/architecture.md, Adding an accounting system).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from connector.errors import ConfigError

if TYPE_CHECKING:
    from connector.targets.base import TargetProfile, TargetSpec

TARGETS: dict[str, str] = {
    "fortnox": "connector.targets.fortnox",
    "visma": "connector.targets.visma",
}


def names() -> tuple[str, ...]:
    return tuple(TARGETS)


def spec(name: str) -> TargetSpec:
    try:
        module = TARGETS[name]
    except KeyError:
        raise ConfigError(
            f"unknown accounting system {name!r}: use one of {', '.join(TARGETS)}"
        ) from None
    found: TargetSpec = importlib.import_module(module).SPEC
    return found


def specs() -> list[TargetSpec]:
    return [spec(name) for name in TARGETS]


def profile(name: str) -> TargetProfile:
    return spec(name).profile
