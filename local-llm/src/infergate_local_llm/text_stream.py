"""Token bytes to client text: whole UTF-8 characters only, and nothing from a stop sequence on.

A token can end in the middle of a multi-byte character, and a stop sequence can span tokens,
so text is held back until it can no longer turn out to be either.
"""

from __future__ import annotations

import codecs
from collections.abc import Callable, Sequence


class TextStream:
    """Feeds decoded text to `emit`, cutting at the first stop sequence."""

    def __init__(self, stops: Sequence[str], emit: Callable[[str], None]) -> None:
        self._stops = [stop for stop in stops if stop]
        self._emit = emit
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._pending = ""

    def feed(self, data: bytes) -> bool:
        """Add one token's bytes; True when a stop sequence was completed (text ends there)."""
        text = self._pending + self._decoder.decode(data)
        cut = min((text.find(stop) for stop in self._stops if stop in text), default=-1)
        if cut >= 0:
            self._pending = ""
            self._send(text[:cut])
            return True
        held = self._partial_stop_length(text)
        self._pending = text[len(text) - held :]
        self._send(text[: len(text) - held])
        return False

    def close(self) -> None:
        """The output ended without a stop sequence: release everything still held back."""
        self._send(self._pending + self._decoder.decode(b"", final=True))
        self._pending = ""

    def _partial_stop_length(self, text: str) -> int:
        # The longest end of `text` that is the start of some stop sequence.
        longest = 0
        for stop in self._stops:
            for size in range(min(len(stop) - 1, len(text)), longest, -1):
                if text.endswith(stop[:size]):
                    longest = size
                    break
        return longest

    def _send(self, text: str) -> None:
        if text:  # an empty chunk would be a useless NDJSON line
            self._emit(text)
