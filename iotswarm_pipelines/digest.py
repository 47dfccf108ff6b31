"""MD5 digests of payload text that keep the GIL while hashing.

hashlib releases the GIL for any input over 2047 bytes; taking it back while upload threads are
busy costs far more than hashing a payload, so digests are fed pieces below that size.
"""

from __future__ import annotations

import hashlib
from typing import Any

_GIL_HELD_CHUNK = 2047


def md5_update(digest: Any, data: bytes) -> None:
    view = memoryview(data)
    for start in range(0, len(view), _GIL_HELD_CHUNK):
        digest.update(view[start : start + _GIL_HELD_CHUNK])


def md5_of(data: bytes) -> Any:
    """A new MD5 hash object fed ``data``; ``.hexdigest()`` it, or ``.copy()`` it to extend."""
    digest = hashlib.md5(usedforsecurity=False)
    md5_update(digest, data)
    return digest
