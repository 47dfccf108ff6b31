"""How an error is shown in one line: a command's last words, a shard's failure, a run's cause."""

from __future__ import annotations


def first_line(error: BaseException | str) -> str:
    """The first non-blank line of the message, stripped; for an exception without a message,
    its type's name, so the line never comes out empty."""
    text = str(error)
    line = next((line.strip() for line in text.splitlines() if line.strip()), "")
    if line or isinstance(error, str):
        return line
    return type(error).__name__
