"""Fortnox settings: `CONNECTOR_FORTNOX__*`."""

from __future__ import annotations

from connector.targets.base import TargetSettings


class FortnoxSettings(TargetSettings):
    api_url: str = "https://api.fortnox.se/3"
    auth_url: str = "https://apps.fortnox.se/oauth-v1"
    # Set for the client-credentials flow (service account); empty for the refresh-token flow.
    tenant_id: str | None = None
    redirect_uri: str = "http://localhost:8790/fortnox/callback"
    # Fortnox allows 25 requests per 5 seconds per client id and tenant. The limiter counts
    # each request from its answer and shares its window with every process on this state
    # directory (connector/rate_window.py), so it can use the whole window.
    rate_limit: str = "25/5"
