"""Log records as JSON lines, each carrying the id of the request it was written for.

One object a line: ``ts`` (UTC, ISO 8601, milliseconds), ``level``, ``logger``, ``message``,
``request_id`` (when the record was written while serving a request), and ``exc`` for a
traceback. What goes in is only what the code logs: prompts and completions never are.

The relay and the portal set :data:`REQUEST_ID` as each request begins; ``TP_LOG_FORMAT``
(``json`` or ``text``; ``json`` unless ``DEBUG`` is on) chooses this formatter for the servers
(``serving``) and the portal's own logging settings.
"""

from __future__ import annotations

import json
import logging
import time
from contextvars import ContextVar

REQUEST_ID: ContextVar[str] = ContextVar("request_id", default="")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        seconds = time.gmtime(record.created)
        entry: dict[str, object] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", seconds) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = REQUEST_ID.get()
        if request_id:
            entry["request_id"] = request_id
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)
