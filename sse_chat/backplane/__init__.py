"""Backplanes: the embedded one (default) and, when configured, Redis."""

from .base import Backplane, BackplaneUnavailable, Replay, subscribed
from .memory import MemoryBackplane

__all__ = ["Backplane", "BackplaneUnavailable", "MemoryBackplane", "Replay", "subscribed"]
