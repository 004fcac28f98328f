"""Visma eAccounting settings: `CONNECTOR_VISMA__*`."""

from __future__ import annotations

from connector.targets.base import TargetSettings


class VismaSettings(TargetSettings):
    api_url: str = "https://eaccountingapi.vismaonline.com/v2"
    auth_url: str = "https://identity.vismaonline.com/connect"
    redirect_uri: str = "http://localhost:8790/visma/callback"
    # Visma allows 600 requests per minute per client and endpoint. The limiter keeps one window
    # for every endpoint (stricter), counts each request from its answer and shares the window
    # with every process on this state directory, so it can use Visma's whole limit.
    rate_limit: str = "600/60"
