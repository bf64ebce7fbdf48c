"""Exceptions for bad user input.

`UserInputError` subclasses `ValueError` so library callers can catch either; the CLI turns it into
a one-line message and exit code 2 instead of a traceback.
"""


class UserInputError(ValueError):
    """Input (a file, a tensor, a config field) that is wrong in a way the user can fix."""
