"""The one error type the library raises for anything a user can get wrong."""


class HurefError(Exception):
    """A user-facing problem (bad path, malformed checkpoint, unknown architecture, ...).

    The message is one line meant for a person; the CLI prints it and exits with code 2.
    """


class InstallationError(Exception):
    """TEMPORARY (replaced at merge)."""
