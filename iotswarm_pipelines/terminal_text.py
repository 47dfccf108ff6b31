"""Text that came from outside (an argument, a file) printed safely in a one-line message."""

from __future__ import annotations

import re

_CONTROL = re.compile(r"[\x00-\x1f\x7f\x85\u2028\u2029]")


def one_line(text: str) -> str:
    """``text`` with newlines and other control characters escaped (``\\n``, ``\\x1b``): a
    hostile argument can neither break the message in two nor send terminal escapes."""
    return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode(), text)
