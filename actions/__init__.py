"""AWS and SSH actions: plain functions of a boto3 session and typed arguments.

Nothing here knows about Slack or Redis. Each action is one module that registers itself with
its whole declaration (see ``registry``): risk, IAM permissions, target and options, what it
needs, how a worker runs it. Adding an action is adding a module to ACTION_MODULES.
"""

import importlib

from actions.errors import ActionError
from actions.registry import REGISTRY, ActionSpec, Risk, get

# Importing the action modules registers them; compromise comes last, as it is made of the others.
ACTION_MODULES = ("collect", "isolate", "release", "snapshot", "stop", "keys", "hunt", "memory", "image", "workstation", "analyze", "prep", "compromise")
for _module in ACTION_MODULES:
    importlib.import_module(f"actions.{_module}")

__all__ = ["ActionError", "ActionSpec", "REGISTRY", "Risk", "get"]
