"""The one exception type for mistakes a user can fix.

The CLI turns a `LabError` into one line on stderr and exit code 2; the app shows it in an
error box. Its message says what went wrong and what to do next.
"""


class LabError(Exception):
    """Bad input or an unmet precondition, with a message that says how to fix it."""
