"""The exceptions that mean "the user's input is wrong" rather than "interleaf has a bug"."""

from interleaf.schemas.meta import SchemaMismatchError
from interleaf.shards import ShardError
from interleaf.storage import StorageError


class UsageError(ValueError):
    """Arguments or configuration that cannot work, found before any work starts."""


USER_ERRORS = (UsageError, ShardError, SchemaMismatchError, StorageError, FileNotFoundError,
               NotADirectoryError, IsADirectoryError, PermissionError)
