"""One idempotent change as a step: look first, then do only what is not so already."""

from __future__ import annotations

from typing import Callable

from actions.errors import ActionError
from actions.steps import Outcome, StepLog


def change(
    steps: StepLog,
    name: str,
    title: str,
    *,
    dry_run: bool,
    already: Callable[[], str | None],
    plan: str,
    do: Callable[[], str],
    skip: Callable[[], str | None] = lambda: None,
    impossible: Callable[[], str | None] = lambda: None,
    done: str | None = None,
) -> Outcome:
    """Record one step: failed because it can't be done (``impossible`` says why), skipped (``skip``
    gives the reason), already so (``already`` says how), planned (dry run), or done by ``do`` (its
    result is the detail, unless ``done`` gives it). An AWS failure is the step's, not the action's."""
    try:
        reason = impossible()
        if reason:
            return steps.add(name, title, Outcome.FAILED, reason).outcome
        reason = skip()
        if reason:
            return steps.add(name, title, Outcome.SKIPPED, reason).outcome
        state = already()
        if state:
            return steps.add(name, title, Outcome.ALREADY, state).outcome
        if dry_run:
            return steps.add(name, title, Outcome.PLANNED, plan).outcome
        detail = do()
        return steps.add(name, title, Outcome.DONE, done if done is not None else str(detail)).outcome
    except ActionError as exc:
        return steps.add(name, title, Outcome.FAILED, str(exc)).outcome
