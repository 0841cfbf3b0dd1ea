"""Making AWS calls the same way everywhere: retries, timeouts and error sentences."""

from __future__ import annotations

from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from actions.errors import ActionError, explain

# Standard retry mode backs off on throttling and transient errors; eight attempts
# ride out a burst of RequestLimitExceeded without holding a job for minutes.
CLIENT_CONFIG = Config(
    retries={"mode": "standard", "max_attempts": 8},
    connect_timeout=5,
    read_timeout=60,
    user_agent_extra="irbot",
)


def client(session: boto3.Session, service: str, region: str):
    return session.client(service, region_name=region, config=CLIENT_CONFIG)


def call(aws_client, operation: str, **params: Any) -> dict:
    """Call ``operation`` (the boto3 method name); failures become an ActionError sentence."""
    try:
        response = getattr(aws_client, operation)(**params)
    except (ClientError, BotoCoreError) as exc:
        raise ActionError(
            explain(exc, service=aws_client.meta.service_model.signing_name, region=aws_client.meta.region_name)
        ) from exc
    response.pop("ResponseMetadata", None)
    return response


def paginate(aws_client, operation: str, key: str, **params: Any) -> list:
    """All items under ``key`` across the pages of ``operation``."""
    try:
        items: list = []
        for page in aws_client.get_paginator(operation).paginate(**params):
            items.extend(page.get(key, []))
        return items
    except (ClientError, BotoCoreError) as exc:
        raise ActionError(
            explain(exc, service=aws_client.meta.service_model.signing_name, region=aws_client.meta.region_name)
        ) from exc
