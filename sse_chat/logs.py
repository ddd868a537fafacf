"""Logging: one JSON object per line (for collectors), or readable text on a terminal."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime


class JsonFormatter(logging.Formatter):
    """`{"ts", "level", "logger", "replica", "message"}` (and `exc` when there is one)."""

    def __init__(self, replica: str) -> None:
        super().__init__()
        self.replica = replica

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "replica": self.replica,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def configure_logging(replica: str, json_lines: bool | None = None) -> None:
    """Send INFO and above to stderr; JSON unless stderr is a terminal."""
    handler = logging.StreamHandler(sys.stderr)
    if json_lines is None:
        json_lines = not sys.stderr.isatty()
    if json_lines:
        handler.setFormatter(JsonFormatter(replica))
    else:
        handler.setFormatter(
            logging.Formatter(f"%(asctime)s %(levelname)s [{replica}] %(name)s: %(message)s")
        )
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)
