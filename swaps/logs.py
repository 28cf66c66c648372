"""How every Hotswap process logs: to stderr, as text or as JSON lines (LOG_FORMAT).

One configuration serves every process kind. Django processes (the console under
daphne, `manage.py rqworker` and the other commands) get it through settings.LOGGING
(`logging_config`); a replica, which runs without Django settings, through
`configure`. Both read LOG_FORMAT and LOG_LEVEL and refuse a bad value at start-up.

With LOG_FORMAT=json each record is one JSON object on one line: `time` (UTC,
milliseconds), `level`, `logger`, `message`, `exc_info` (the traceback) when there is
one, and the context fields a record carries (`log.info(..., extra={"model": ...})`):
`model`, `version`, `operation_id`, `replica`. A field the record does not carry is left
out, never written as null. A replica's records all carry `replica` (`ReplicaField`).
"""

from __future__ import annotations

import json
import logging
import logging.config
import time
from collections.abc import Mapping
from typing import Any

import orjson

from hotswap_site.env import env_choice

LOG_FORMATS = ("text", "json")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
# What a record may carry beyond its message, in the order a JSON line gives them.
CONTEXT_FIELDS = ("model", "version", "operation_id", "replica")
TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(process)d %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    """A record as one line of JSON (the fields are in this module's docstring)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in CONTEXT_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                entry[name] = value
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exc_info"] = record.exc_text
        if record.stack_info:
            entry["stack_info"] = self.formatStack(record.stack_info)
        try:
            return orjson.dumps(entry, default=str).decode()
        except TypeError:
            # orjson refuses what the json module writes escaped (a lone surrogate from an
            # undecodable file name, an integer past 64 bits): a record is never lost.
            return json.dumps(entry, default=str)

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        # ISO-8601 in UTC with milliseconds, e.g. 2025-01-31T12:00:00.123Z, whatever the
        # host's time zone: lines from several hosts sort and compare as they are.
        seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        return f"{seconds}.{int(record.msecs):03d}Z"


class ReplicaField(logging.Filter):
    """Names the replica on every record it passes (set on the handler, it sees them all)."""

    def __init__(self, replica: str) -> None:
        super().__init__()
        self.replica = replica

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "replica", None) is None:
            record.replica = self.replica
        return True


def logging_config(
    *, log_format: str = "text", level: str = "INFO", replica: str | None = None
) -> dict[str, Any]:
    """The `logging.config.dictConfig` of a process: one stderr handler, in `log_format`;
    with `replica`, every record names it."""
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log_format must be one of {', '.join(LOG_FORMATS)}, got {log_format!r}")
    handler: dict[str, Any] = {
        "class": "logging.StreamHandler",
        "stream": "ext://sys.stderr",
        "formatter": log_format,
    }
    filters: dict[str, Any] = {}
    if replica:
        filters["replica"] = {"()": ReplicaField, "replica": replica}
        handler["filters"] = ["replica"]
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "text": {"format": TEXT_FORMAT},
            "json": {"()": JsonFormatter},
        },
        "filters": filters,
        "handlers": {"stderr": handler},
        "root": {"handlers": ["stderr"], "level": level},
        "loggers": {
            # Replaces Django's default "django" logger, whose console and mail_admins
            # handlers would print each record twice (and try to send mail).
            "django": {"handlers": ["stderr"], "level": level, "propagate": False},
        },
    }


def configure(*, replica: str | None = None, environ: Mapping[str, str] | None = None) -> None:
    """Configure logging for a process without Django settings (a replica) from its
    environment; a bad LOG_FORMAT or LOG_LEVEL raises ImproperlyConfigured, naming it."""
    log_format = env_choice("LOG_FORMAT", choices=LOG_FORMATS, default="text", environ=environ)
    level = env_choice("LOG_LEVEL", choices=LOG_LEVELS, default="INFO", environ=environ)
    logging.config.dictConfig(logging_config(log_format=log_format, level=level, replica=replica))
