"""One exception hierarchy: the CLI turns any of these into one line and an exit code."""

from __future__ import annotations


class BottomlessError(Exception):
    """Base of every error this package raises on purpose."""

    exit_code = 1


class ConfigError(BottomlessError):
    """A bad option or input given by the user (date, generation id, codec...)."""

    exit_code = 2


class LocalDatabaseError(BottomlessError):
    """The local database cannot be used (missing, not SQLite, not in WAL mode, ...)."""


class StorageError(BottomlessError):
    """The object store failed or refused a request."""


class UnreachableError(StorageError):
    """The endpoint could not be reached, timed out or kept failing: retrying can fix it."""


class PreconditionFailedError(StorageError):
    """A conditional write found the object changed (another writer got there first)."""


class LeaseHeldError(BottomlessError):
    """Another replicator (another host or process) is writing this database's generations."""


class BucketNotFoundError(StorageError):
    """The bucket does not exist."""


class NotFoundError(BottomlessError):
    """A generation or object that was asked for does not exist."""


class NoBackupError(NotFoundError):
    """The bucket holds no (restorable) generation of the database, or none before a time."""


class CorruptBackupError(BottomlessError):
    """An object in the bucket cannot be decoded or breaks the checksum chain."""


class EncryptionError(BottomlessError):
    """Encrypted objects without (or with the wrong) identity."""

    exit_code = 2


class RestoreRefusedError(BottomlessError):
    """Restore would overwrite an existing database without --force."""


class Interrupted(BaseException):
    """A signal asked the process to stop: unwinds through ``finally`` blocks like
    KeyboardInterrupt, and no ``except Exception`` swallows it."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum

    @property
    def signal_name(self) -> str:
        import signal

        return signal.Signals(self.signum).name
