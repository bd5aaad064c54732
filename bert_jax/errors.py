"""The one exception type for bad user input.

Anything a user can fix (a config field, a file, a flag) raises `UserError` with a
message that names the field, file or value and what was expected. The CLI prints it on
one line and exits with status 2; anything else is a bug and keeps its traceback.
"""


class UserError(ValueError):
    """Bad input from the user: a config, a file, a flag."""
