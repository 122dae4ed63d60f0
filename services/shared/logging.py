"""Structured logging with structlog: JSON in containers, readable in a terminal.

The hub's own log lines come from structlog. Lines of the libraries underneath (Faust, mode,
aiokafka, uvicorn, SQLAlchemy, Python's warnings) go through the standard library's logging;
`stdlib_logging_config` renders those through structlog as well, so a container's log is one
JSON object a line whoever wrote it. The matcher hands the same configuration to Faust's
worker, which would otherwise put its own coloured handler on the root logger.
"""

from __future__ import annotations

import logging
import logging.config
import sys
from typing import Any

import structlog

#: What every line carries, from structlog or from the standard library.
_SHARED: list[structlog.typing.Processor] = [
    structlog.contextvars.merge_contextvars,
    structlog.processors.add_log_level,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
]


def _renderer(json: bool) -> structlog.typing.Processor:
    return (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    )


def stdlib_logging_config(*, json: bool, level: str = "INFO") -> dict[str, Any]:
    """A `logging.config.dictConfig` for the standard library's loggers: to stderr, rendered
    by structlog with the logger's name."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "structlog": {
                "()": structlog.stdlib.ProcessorFormatter,
                "foreign_pre_chain": [*_SHARED, structlog.stdlib.add_logger_name],
                "processors": [
                    structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    structlog.processors.format_exc_info,
                    _renderer(json),
                ],
            }
        },
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stderr",
                "formatter": "structlog",
            }
        },
        "root": {"level": level.upper(), "handlers": ["stderr"]},
        # aiokafka logs every coordinator hiccup at ERROR; the consumer retries these itself.
        "loggers": {"aiokafka": {"level": "WARNING"}},
    }


def configure_logging(*, json: bool, level: str = "INFO") -> None:
    structlog.configure(
        processors=[*_SHARED, structlog.processors.format_exc_info, _renderer(json)],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
    logging.config.dictConfig(stdlib_logging_config(json=json, level=level))
    logging.captureWarnings(True)


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    return structlog.get_logger(name)  # type: ignore[no-any-return]
