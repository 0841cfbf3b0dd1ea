"""moto's IAM enforcement evaluates every call but S3's against Resource "*", so a statement naming
resources (irbot's Deny on its own roles and the break-glass principals) never matches there and the
call is allowed. This teaches moto's check the ARN an IAM call acts on — the role, the user or the
policy its parameters name, as AWS's authorization does — so tests can show such a Deny working.
Only IAM calls change; a test turns it on and off (``naming_iam_resources``)."""

from __future__ import annotations

import contextlib

from moto.iam import access_control
from moto.utilities.utils import get_partition


def _named(request) -> str | None:
    def parameter(name: str) -> str | None:
        value = request._data.get(name)
        return value[0] if isinstance(value, list) and value else value or None

    partition, account = get_partition(request._region), request.account_id
    if parameter("RoleName"):
        return f"arn:{partition}:iam::{account}:role/{parameter('RoleName')}"
    if parameter("UserName"):
        return f"arn:{partition}:iam::{account}:user/{parameter('UserName')}"
    return parameter("PolicyArn")


@contextlib.contextmanager
def naming_iam_resources():
    original = access_control.IAMRequest.check_action_permitted

    def check_action_permitted(self, resource: str) -> None:
        if resource == "*" and self._service == "iam":
            resource = _named(self) or resource
        return original(self, resource)

    access_control.IAMRequest.check_action_permitted = check_action_permitted
    try:
        yield
    finally:
        access_control.IAMRequest.check_action_permitted = original
