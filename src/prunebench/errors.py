"""The one exception type that carries a user-facing message."""


class PrunebenchError(Exception):
    """Bad input or an impossible request, reported to the user as one clear line (no stack trace)."""
