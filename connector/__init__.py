"""Service-account invoicing connector: ledger hours to Fortnox / Visma invoice drafts."""

__version__ = "0.1.0"
