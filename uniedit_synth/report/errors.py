"""The errors a user can cause with `uniedit report` and `uniedit inspect` (both are UniEditError subclasses)."""

from __future__ import annotations

from ..core.errors import UniEditError


class ReportError(UniEditError):
    """A report cannot be built: the run dir is missing or has no shards, or the out dir is in the way."""


class SampleNotFoundError(ReportError):
    """`inspect` was given an id that is in none of the run's shard files."""
