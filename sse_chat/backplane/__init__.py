"""Backplanes: the embedded one (default) and, when configured, Redis."""

from .base import (
    Backplane,
    BackplaneUnavailable,
    IdempotencyConflict,
    OutcomeUnknown,
    Replay,
    subscribed,
)
from .memory import MemoryBackplane

__all__ = [
    "Backplane",
    "BackplaneUnavailable",
    "IdempotencyConflict",
    "MemoryBackplane",
    "OutcomeUnknown",
    "Replay",
    "subscribed",
]
