"""The errors of the export's stores (payload objects and watermark state), apart from the
stores: the pipeline and the commands name them without loading boto3 or Dagster."""

from __future__ import annotations


class StoreUnavailableError(RuntimeError):
    """The store cannot take objects at all (no bucket, refused credentials, unwritable folder):
    found by one request before any upload, so the run stops before reading the source."""


class StateRecoveryError(RuntimeError):
    """Neither copy of the state can be trusted; a person has to decide how to continue."""


class StateLockedError(RuntimeError):
    """Another export holds the table's state lock (only raised when a timeout is given).

    ``holder`` names it when the store knows (``PID/host since …`` for the files).
    """

    def __init__(self, message: str, holder: str | None = None) -> None:
        super().__init__(message)
        self.holder = holder


class StatePartlySavedError(RuntimeError):
    """A save that failed after main was written: the message says which files hold the new
    state (the cause is ``__cause__``), so nobody is told the watermarks were not saved."""


class StateConflictError(RuntimeError):
    """Another writer changed the state since this store read it; nothing was overwritten."""
