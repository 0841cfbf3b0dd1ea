"""Readiness checks for /ir prep: one module per area, each check declared beside its code (see ``checks``).
Adding a check is adding it to one of these modules (or a module to CHECK_MODULES)."""

import importlib

from actions.readiness.checks import CHECKS, Check, Probe, Scope, Status, Verdict, permissions

CHECK_MODULES = ("cloudtrail", "detection", "network", "s3", "iam", "ec2", "billing", "irbot")
for _module in CHECK_MODULES:
    importlib.import_module(f"actions.readiness.{_module}")

__all__ = ["CHECKS", "Check", "Probe", "Scope", "Status", "Verdict", "permissions"]
