"""JSON logs (structlog) that carry the correlation id of the event or request being handled, and never a
person's address: every text that goes into a log line (or an error text that leaves the service) is scrubbed
of e-mail addresses, and SQL parameters are hidden by the engines (db.py)."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import structlog
from structlog.contextvars import bind_contextvars, reset_contextvars

_configured = False
# An e-mail address, also inside a longer text (an SMTP reply, an exception): what scrubbing hides.
_ADDRESS = re.compile(r"[^\s<>\"'(),;:@]+@[^\s<>\"'(),;:@]+\.[^\s<>\"'(),;:@]+")


def scrub(text: str) -> str:
    """`text` without e-mail addresses (a failure text or a log field must not name a person)."""
    return _ADDRESS.sub("<address>", text)


def _scrub_event(_logger: Any, _name: str, event: dict[str, Any]) -> dict[str, Any]:
    for key, value in event.items():
        if isinstance(value, str) and "@" in value:
            event[key] = scrub(value)
    return event


def configure_logging(service: str, level: str = "INFO") -> None:
    """Route stdlib and structlog output through one JSON renderer on stderr."""
    global _configured
    if _configured:
        return
    _configured = True
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    last: list[Any] = [
        structlog.stdlib.ProcessorFormatter.remove_processors_meta,
        structlog.processors.format_exc_info,
        _scrub_event,
        structlog.processors.JSONRenderer(),
    ]
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=last,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    bind_contextvars(service=service)


@contextmanager
def log_context(**values: Any) -> Iterator[None]:
    """Bind values (correlation_id, ce_id, ...) to every log line inside the block."""
    tokens = bind_contextvars(**values)
    try:
        yield
    finally:
        reset_contextvars(**tokens)


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)
