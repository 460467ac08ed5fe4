"""The one error type for user mistakes.

Anything the user can fix (a bad flag, a missing file, a malformed dataset) raises
`LLMHDError`; the CLI turns it into a one-line message and exit code 2. Everything else is
a bug and keeps its traceback.
"""


class LLMHDError(Exception):
    """A user-fixable problem. The message is one line that names the file, field or flag."""

    exit_code = 2

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))
