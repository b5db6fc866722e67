"""The one exception type for a user's mistake (missing file, not a video, bad checkpoint, ...).

The CLI prints its message as one line on stderr and exits with status 2, without a traceback.
Anything else that escapes is a bug and keeps its traceback.
"""


class UserError(Exception):
    """A problem with the user's input or environment, explained in one line."""
