"""One error type for bad user input: the CLI prints it without a traceback."""


class UserError(ValueError):
    """Bad input from the user; the message says what was wrong and how to fix it."""
