"""Objects that hold something open (a connection) and release it in `close`, usable in a `with` block."""

from __future__ import annotations

from typing import TypeVar

T = TypeVar("T", bound="Closing")


class Closing:
    """A base for what holds something open: `with obj:` calls `obj.close()` at the block's end."""

    def close(self) -> None:
        """Release what is held open; a subclass says what."""
        raise NotImplementedError

    def __enter__(self: T) -> T:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
