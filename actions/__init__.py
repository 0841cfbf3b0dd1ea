"""AWS and SSH actions: plain functions of a boto3 session and typed arguments.

Nothing here knows about Slack or Redis. Each action is registered with its
risk class and the IAM permissions it needs (see ``registry``), so irbot can
tell which actions need a second person and print its least-privilege policy.
"""

from actions.errors import ActionError
from actions.registry import REGISTRY, ActionSpec, Risk, get

# Importing the action modules registers them.
from actions import collect as _collect  # noqa: F401,E402
from actions import stop as _stop  # noqa: F401,E402
from actions import isolation as _isolation  # noqa: F401,E402
from actions import snapshot as _snapshot  # noqa: F401,E402
from actions import keys as _keys  # noqa: F401,E402
from actions import hunt as _hunt  # noqa: F401,E402
from actions import compromise as _compromise  # noqa: F401,E402

__all__ = ["ActionError", "ActionSpec", "REGISTRY", "Risk", "get"]
