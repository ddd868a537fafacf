"""sse-chat: a real-time chat over Server-Sent Events that scales out through Redis."""

from .app import create_app
from .config import Settings
from .ids import MessageId
from .messages import Message

__all__ = ["Message", "MessageId", "Settings", "create_app"]
