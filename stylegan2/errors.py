"""stylegan2's one error type."""


class GeneratorError(Exception):
    """A generator file, download or configuration cannot be used; the message is one line for a person."""
