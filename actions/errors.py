"""Turning AWS failures into one sentence a responder can act on."""

from __future__ import annotations

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    NoRegionError,
    PartialCredentialsError,
    ReadTimeoutError,
)

THROTTLING_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestLimitExceeded",
        "RequestThrottled",
        "RequestThrottledException",
        "TooManyRequestsException",
        "SlowDown",
    }
)
DENIED_CODES = frozenset(
    {"AccessDenied", "AccessDeniedException", "UnauthorizedOperation", "Forbidden", "AuthorizationError"}
)
BAD_CREDENTIAL_CODES = frozenset(
    {"InvalidClientTokenId", "UnrecognizedClientException", "AuthFailure", "SignatureDoesNotMatch",
     "ExpiredToken", "ExpiredTokenException", "InvalidAccessKeyId"}
)


class ActionError(Exception):
    """An action could not be done; ``str(error)`` is the sentence to show the responder.

    ``code`` is AWS's error code when AWS refused (e.g. ``InvalidInstanceID.NotFound``), so callers
    decide on data, never by searching the sentence."""

    def __init__(self, sentence: str, *, code: str | None = None):
        super().__init__(sentence)
        self.code = code


def error_code(exc: BaseException) -> str | None:
    """AWS's error code of a botocore ClientError, else None."""
    return exc.response.get("Error", {}).get("Code") if isinstance(exc, ClientError) else None


def explain(exc: BaseException, *, service: str = "", region: str = "") -> str:
    """A sentence describing an AWS failure, without stack traces or secrets."""
    where = f" in {region}" if region else ""
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = error.get("Code", "Unknown")
        message = (error.get("Message") or "").strip()
        operation = exc.operation_name
        iam_action = f"{service}:{operation}" if service else operation
        if code in THROTTLING_CODES:
            attempts = exc.response.get("ResponseMetadata", {}).get("MaxAttemptsReached")
            tail = " after every retry" if attempts else ""
            return f"AWS kept throttling {iam_action}{where}{tail} ({code}); wait a minute and run the command again."
        if code in DENIED_CODES:
            return (
                f"irbot's AWS identity is not allowed to call {iam_action}{where} ({code}). "
                f"Grant it that permission (`irbot iam-policy` prints all it needs) and run the command again."
            )
        if code in BAD_CREDENTIAL_CODES:
            return (
                f"AWS did not accept irbot's credentials{where} ({code}): they may be wrong or expired, "
                f"or the region may not be enabled for this account."
            )
        if code.isdigit():  # no AWS error document, only an HTTP status (a proxy, an outage, an endpoint without the call)
            return f"AWS answered {iam_action}{where} with HTTP {code} and no error code; run the command again later."
        detail = f": {_one_line(message)}" if _one_line(message) else ""
        return f"AWS refused {iam_action}{where} ({code}){detail}"
    if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
        return "irbot has no usable AWS credentials: set them the way boto3 reads them (environment, profile or instance role)."
    if isinstance(exc, NoRegionError):
        return "No AWS region is set: pass --region, or set AWS_REGION for the worker."
    if isinstance(exc, (EndpointConnectionError, ConnectTimeoutError)):
        return f"irbot could not reach the AWS endpoint for {service or 'the service'}{where}; check the worker's network and AWS_ENDPOINT_URL."
    if isinstance(exc, ReadTimeoutError):
        return f"AWS did not answer {service or 'a call'}{where} in time; run the command again."
    if isinstance(exc, BotoCoreError):
        return f"The AWS client failed{where}: {type(exc).__name__}."
    return f"Unexpected failure{where}: {type(exc).__name__}."


def _one_line(message: str) -> str:
    """AWS's own message, as one short line; never a page of HTML or XML."""
    if message.lstrip().startswith("<"):
        return ""
    line = " ".join(message.split())
    return line if len(line) <= 200 else line[:199] + "…"


def reason(exc: ActionError) -> str:
    """Why a call failed, in a few words, for a summary line."""
    if exc.code in DENIED_CODES:
        return "access denied by policy"
    if exc.code in BAD_CREDENTIAL_CODES or exc.code in ("OptInRequired", "InvalidClientTokenId"):
        return "region not enabled for this account"
    if exc.code in THROTTLING_CODES:
        return "throttled"
    return str(exc)
