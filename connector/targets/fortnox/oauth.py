"""How a person authorises the connector in Fortnox, and what a service account needs next."""

from __future__ import annotations

from connector.targets.base import OAuthApp

# invoice, article, customer: the sync; companyinformation: the tenant id (DatabaseNumber) for a
# service account; settings: the locked period (and units, for the mapping checks).
SCOPES = "invoice article customer companyinformation settings"
TOKEN_FILE = "fortnox-token.json"  # noqa: S105 - a file name, not a secret

APP = OAuthApp(
    system="Fortnox",
    command="fortnox",
    authorize_path="/auth",
    token_path="/token",  # noqa: S106 - a path, not a secret
    scopes=SCOPES,
    extra_params=(("access_type", "offline"),),
    who="a Fortnox administrator",
    code_minutes=10,
    # Fortnox: "You have to use account_type=service for the consent to be created".
    service_account_params=(("account_type", "service"),),
    refresh_may_be_reused=False,
    token_file=TOKEN_FILE,
    # "Refresh tokens are single-use and last 45 days" (docs/fortnox.md).
    refresh_token_days=45,
)
