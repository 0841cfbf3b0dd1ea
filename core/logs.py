"""JSON logs through structlog, with secrets scrubbed from every line (irbot's and its libraries')."""

from __future__ import annotations

import logging
import re
import sys
from typing import Iterable

import structlog

# Slack tokens have a recognisable shape even when we were not told their value.
TOKEN_SHAPES = re.compile(r"\b(?:xox[abposre]|xapp)-[A-Za-z0-9-]{6,}")
SECRET_KEY_NAMES = re.compile(r"(token|secret|password|signature|authorization|credential)", re.I)
REDACTED = "[redacted]"


class Redactor:
    """A structlog processor that removes known secret values and token-shaped strings."""

    def __init__(self, secrets: Iterable[str] = ()):
        # Longest first, so a secret that contains another is removed whole.
        self.secrets = sorted({s for s in secrets if s and len(s) >= 6}, key=len, reverse=True)

    def scrub(self, value):
        if isinstance(value, str):
            for secret in self.secrets:
                value = value.replace(secret, REDACTED)
            return TOKEN_SHAPES.sub(REDACTED, value)
        if isinstance(value, dict):
            return {k: (REDACTED if SECRET_KEY_NAMES.search(str(k)) else self.scrub(v)) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self.scrub(v) for v in value]
        return value

    def __call__(self, logger, method_name, event_dict):
        return {
            k: (REDACTED if k not in ("event", "logger", "level") and SECRET_KEY_NAMES.search(k) else self.scrub(v))
            for k, v in event_dict.items()
        }


def configure(secrets: Iterable[str] = (), level: str = "INFO", stream=None) -> None:
    """Send irbot's and every library's log records to ``stream`` (stderr) as redacted JSON lines."""
    redactor = Redactor(secrets)
    shared = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            redactor,
            structlog.processors.JSONRenderer(sort_keys=True),
        ],
    )
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # These libraries log request bodies and headers at DEBUG; keep them quiet whatever the level.
    for noisy in ("slack_sdk", "slack_bolt", "botocore", "boto3", "urllib3", "s3transfer"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))


def get_logger(name: str):
    return structlog.stdlib.get_logger(name)
