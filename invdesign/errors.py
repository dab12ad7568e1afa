"""One exception type for user errors: bad files, off-lattice atoms, bad arguments.

The CLI turns every :class:`InvdesignError` into one line on stderr and a non-zero exit;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class InvdesignError(ValueError):
    """A user-facing error. ``str(err)`` is one line naming the input and the reason."""

    def __init__(self, message: str, source: str | None = None) -> None:
        self.source = source
        self.reason = message
        super().__init__(f"{source}: {message}" if source else message)
