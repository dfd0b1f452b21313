"""`with` for the tests' background helpers (a server thread, a child process): start on entry,
stop on exit."""

from __future__ import annotations

from types import TracebackType
from typing import Self


class Started:
    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
