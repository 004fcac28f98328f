"""How a person authorises the connector in Visma eAccounting (Visma Online identity server)."""

from __future__ import annotations

from connector.targets.base import OAuthApp

# ea:api is required; offline_access gives a refresh token; ea:sales covers invoices, customers
# and articles.
SCOPES = "ea:api offline_access ea:sales"
TOKEN_FILE = "visma-token.json"  # noqa: S105 - a file name, not a secret

APP = OAuthApp(
    system="Visma eAccounting",
    command="visma",
    authorize_path="/authorize",
    token_path="/token",  # noqa: S106 - a path, not a secret
    scopes=SCOPES,
    # Limits the company picker to companies that have eAccounting (Visma's getting-started
    # page). prompt=select_account is left out: Visma says it does not work in its sandbox.
    extra_params=(("acr_values", "service:44643EB1-3F76-4C1C-A672-402AE8085934"),),
    who="a user of the Visma eAccounting company",
    code_minutes=5,
    # Newer Visma clients keep one reusable refresh token, older ones rotate it: whichever the
    # answer carries is stored, and an answer without one keeps the old.
    refresh_may_be_reused=True,
    token_file=TOKEN_FILE,
)
