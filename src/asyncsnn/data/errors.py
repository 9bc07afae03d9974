"""Errors raised by the data-set layer.

Both subclass the built-in exception a caller would already catch (``FileNotFoundError`` and
``ValueError``), so ``except FileNotFoundError`` keeps working, while the message says what is
wrong, where, and what to do.
"""

from __future__ import annotations

__all__ = ["CorruptDatasetError", "DatasetNotFoundError"]


class DatasetNotFoundError(FileNotFoundError):
    """A data set, or one of its files or folders, is not where it should be.

    asyncsnn never downloads: the message names the missing path, where it was looked for and
    the expected on-disk layout, so that a local copy can be put in place.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class CorruptDatasetError(ValueError):
    """A data-set file exists but cannot be read: truncated, wrong format or unsafe content.

    Attributes:
        path: the offending file, as given.
        reason: what was wrong with it.
    """

    def __init__(self, path: object, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"corrupt data-set file {path}: {reason}")
