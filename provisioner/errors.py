"""The exception tree of U-Cloud TRE.

Every error the platform raises on purpose is a `TreError`. The CLI is the only place that
turns them into exit codes (`provisioner.cli.main`). Two branches matter to callers that retry
(the controller):

- `PermanentError`: retrying with the same input gives the same answer (bad input, refused by
  policy, missing dataset). Report and stop.
- `TemporaryError`: the world may change (API server restarting, S3 unreachable, conflict).
  Retry with back-off.

Library errors are chained with ``raise ... from exc`` so the cause stays visible.
Nothing here logs: constructors only store the message.
"""

from __future__ import annotations


class TreError(Exception):
    """Base class of every error the platform raises on purpose."""

    exit_code = 1


class PermanentError(TreError):
    """Retrying with the same input will fail the same way."""


class TemporaryError(TreError):
    """The operation may succeed later; callers may retry with back-off."""

    exit_code = 75  # EX_TEMPFAIL


class InvalidInputError(PermanentError):
    """User input failed validation. The message names the field and the fix."""

    exit_code = 2


class NotFoundError(PermanentError):
    """A named object (dataset, request, workspace) does not exist."""

    exit_code = 3


class RefusedError(PermanentError):
    """The API server (admission policy or RBAC) or a platform rule refused the action."""

    exit_code = 4


class BudgetExceededError(PermanentError):
    """Work stopped at a limit the operator sets (the message names the setting to raise),
    such as a dataset verification that lists too many objects or takes too long."""


class ForbiddenError(RefusedError):
    """The API server refused a read or write to this caller (HTTP 403), whether or not the
    object exists."""


class ConflictError(TemporaryError):
    """Someone else changed the object first; re-read and retry."""


class DevClusterError(TreError):
    """The local development control plane could not start or stop."""

    exit_code = 5


class AuditChainError(PermanentError):
    """The audit log failed verification: an entry was edited, dropped or reordered."""

    exit_code = 6


class DataChangedError(PermanentError):
    """A dataset's data no longer matches the manifest the controller recorded (and that
    approvals pinned): workspaces withhold it once the controller re-verifies."""

    exit_code = 7
