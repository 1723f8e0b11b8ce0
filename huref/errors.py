"""huref's error types: what a user got wrong (and, among those, what may pass on a retry), and what
is wrong with the installation; and `excerpt`, how a message quotes a value read from a file."""


class HurefError(Exception):
    """A user-facing problem (bad path, malformed checkpoint, unknown architecture, ...).

    The message is one line meant for a person; the CLI prints it and exits with code 2.
    """


class TransientError(HurefError):
    """A failure that may pass when tried again: the Hub timed out, refused the connection or answered
    5xx / 429 after huggingface_hub's own retries. One line and exit 2 like any HurefError; a batch
    job (`huref registry add --from`) retries the model later instead of recording it as failed."""


class InstallationError(Exception):
    """Part of huref's own installation is missing or broken (packaged encoder or generator weights).

    Not a HurefError: the user's input is not at fault. The message says what is missing, in one
    line; the CLI prints it as an installation fault and exits with code 3.
    """


def excerpt(value, limit: int = 40) -> str:
    """repr(value) cut to at most `limit` characters: a file's contents quoted in a message stay short."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
