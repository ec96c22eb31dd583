"""What crosses a worker's process boundary: bounded, escaped text and linear line reading.

Everything a worker sends is built from text a kernel can influence (exception messages, tensor
names). Before it leaves the worker every string is made valid UTF-8 (lone surrogates and other
unencodable code points become backslash escapes, control characters too) and failure messages
are cut to `MAX_MESSAGE_CHARS`, so any answer parses and none can flood the parent.
"""

from __future__ import annotations

import os
import re
import selectors
import time
from typing import Any

MAX_MESSAGE_CHARS = 4096
MAX_ANSWER_BYTES = 512 << 20  # one JSON line from a worker; larger is a broken worker
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def clean_text(text: str, limit: int | None = None) -> str:
    """`text` as valid UTF-8 with control characters escaped, cut to `limit` characters."""
    if limit is not None and len(text) > limit:
        cut = len(text) - limit
        text = text[:limit] + f"... [{cut} more characters]"
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    if _CONTROL.search(text):
        text = _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)
    return text


def clean(obj: Any) -> Any:
    """Every string inside `obj` (dict keys included) made safe to encode; other values as is."""
    if isinstance(obj, str):
        return clean_text(obj)
    if isinstance(obj, dict):
        return {clean(k): clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean(v) for v in obj]
    return obj


class LineReader:
    """Reads newline-terminated answers from a pipe in time linear in their size."""

    def __init__(self, fd: int, max_bytes: int = MAX_ANSWER_BYTES) -> None:
        self.fd = fd
        self.max_bytes = max_bytes
        self._chunks: list[bytes] = []
        self._size = 0

    def read_line(self, deadline: float) -> bytes | None:
        """The next line without its newline, or None at end of file or past `deadline`.
        Raises OverflowError when a line exceeds `max_bytes`."""
        line = self._take_line()
        if line is not None:
            return line
        with selectors.DefaultSelector() as sel:
            sel.register(self.fd, selectors.EVENT_READ)
            while True:
                left = deadline - time.monotonic()
                if left <= 0 or not sel.select(left):
                    return None
                chunk = os.read(self.fd, 1 << 20)
                if not chunk:
                    return None
                self._chunks.append(chunk)
                self._size += len(chunk)
                if b"\n" in chunk:  # only the new chunk is scanned: linear overall
                    return self._take_line()
                if self._size > self.max_bytes:
                    raise OverflowError(f"an answer line exceeded {self.max_bytes} bytes")

    def _take_line(self) -> bytes | None:
        if not self._chunks or b"\n" not in self._chunks[-1]:
            return None
        data = b"".join(self._chunks)
        line, _, rest = data.partition(b"\n")
        self._chunks = [rest] if rest else []
        self._size = len(rest)
        return line
