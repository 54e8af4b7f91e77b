"""The one exception type for mistakes a user can fix, and messages for a full or read-only disk.

The CLI turns a `LabError` into one line on stderr and exit code 2; the app shows it in an
error box. Its message says what went wrong and what to do next.
"""

from __future__ import annotations

import errno


class LabError(Exception):
    """Bad input or an unmet precondition, with a message that says how to fix it."""


# Errors of the disk rather than of the program: the user can act on them.
DISK_ERRNOS = frozenset(
    {errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, errno.EDQUOT, errno.EFBIG}
)


def disk_error_message(exc: OSError) -> str:
    where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        advice = "free some space, or set TL_LAB_HOME to a folder on another disk"
    else:
        advice = "make it writable, or set TL_LAB_HOME to a writable folder"
    return f"cannot write to disk{where}: {exc.strerror or exc}; {advice}. Nothing already saved was changed"


def as_lab_error(exc: OSError) -> LabError | None:
    """A LabError for disk-full and read-only errors; None for other OS errors."""
    return LabError(disk_error_message(exc)) if exc.errno in DISK_ERRNOS else None
