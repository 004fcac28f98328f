"""One exception root for the project, grouped by what the caller must do.

Every error a user can meet carries the exit code the CLI returns for it, so the mapping from
failure to exit code lives here and nowhere else. Problems with a single ledger entry or a single
invoice are not exceptions: they are recorded as "needs attention" and the run goes on.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    ATTENTION = 1
    CONFIG = 2
    LOCKED = 3
    UNREACHABLE = 4
    REAUTH = 5
    # An unexpected exception escaped a command: a bug in the connector (EX_SOFTWARE).
    BUG = 70


class ConnectorError(Exception):
    """Root of every error the connector raises on purpose.

    `status` and `request_id` are filled when the error came from an HTTP answer, so an operator can
    quote them to the remote system's support.
    """

    exit_code: ExitCode = ExitCode.UNREACHABLE

    def __init__(
        self, message: str, *, status: int | None = None, request_id: str | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.request_id = request_id

    def __str__(self) -> str:
        extra = []
        if self.status is not None:
            extra.append(f"HTTP {self.status}")
        if self.request_id:
            extra.append(f"request id {self.request_id}")
        return f"{self.message} ({', '.join(extra)})" if extra else self.message


# Fatal: a person must fix something before anything is sent.
class ConfigError(ConnectorError):
    """Bad settings, bad mapping files, bad command-line usage. Nothing was sent."""

    exit_code = ExitCode.CONFIG


class MappingError(ConfigError):
    """One or more problems in the mapping files; `problems` lists each with file and line."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__(f"{len(problems)} problem(s) in the mapping files")
        self.problems = problems


class RemoteSetupError(ConfigError):
    """The accounting system's own set-up stops the connector (a missing licence for the API or
    a scope). Authorising again cannot fix it; the company must change its subscription."""


class LockHeldError(ConnectorError):
    """Another run holds the state lock; this run did nothing."""

    exit_code = ExitCode.LOCKED


class ReauthRequiredError(ConnectorError):
    """The accounting system refuses our credentials; a person must authorise again."""

    exit_code = ExitCode.REAUTH


class ScopeDeniedError(ReauthRequiredError):
    """The authorisation lacks a scope. Fatal for the operations that need it; optional reads
    (the locked period) go on without the answer."""


# Retriable by the next run: the remote could not be reached; pending work is kept.
class UnreachableError(ConnectorError):
    exit_code = ExitCode.UNREACHABLE


class LedgerUnavailableError(UnreachableError):
    """The ledger did not answer usefully after retries."""


class RemoteUnavailableError(UnreachableError):
    """The accounting system did not answer usefully after retries."""


class StateMismatchError(ConfigError):
    """The state directory does not belong to this ledger or accounting company, or does not
    know invoices this connector made there: writing could invoice hours twice. Nothing was
    sent."""


class TargetRefusal(ConnectorError):
    """The accounting system refused one invoice for a reason a person must fix (an unknown
    customer or article, a locked period). Final for that invoice; the sync goes on with the
    others. `code` is the system's own error code, `request_id` what its support can quote."""

    exit_code = ExitCode.ATTENTION

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        status: int | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(message, status=status, request_id=request_id)
        self.code = code


class OutcomeUnknownError(UnreachableError):
    """A write that is not safe to repeat was sent and its answer was lost (or was a 5xx): it
    may or may not have happened. Never sent again blindly: the caller looks at the remote
    first. Escaping a command, it means the next run must reconcile (exit 4)."""

    def __init__(self, method: str, path: str, detail: str) -> None:
        super().__init__(f"{method} {path}: outcome unknown ({detail})")
        self.method = method
        self.path = path


class StateError(ConnectorError):
    """The local state store is unusable (corrupt file, newer schema than this program)."""

    exit_code = ExitCode.CONFIG
