"""The error a user's own input (a file, a column, a setting) causes."""


class DataError(ValueError):
    """A problem with user-supplied data; its message is one line meant for the user (the CLI prints it and exits 2)."""
