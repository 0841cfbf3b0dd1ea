"""Named steps: what an action did, or in a dry run would do, one line each."""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass
from typing import Callable


class Outcome(str, enum.Enum):
    DONE = "done"
    ALREADY = "already so"
    SKIPPED = "skipped"
    FAILED = "failed"
    PLANNED = "would do"


@dataclass(frozen=True)
class Step:
    name: str  # stable identifier, e.g. "stop-instance"
    title: str  # what the step does, for people
    outcome: Outcome
    detail: str = ""

    def to_dict(self) -> dict:
        return asdict(self) | {"outcome": self.outcome.value}

    @classmethod
    def from_dict(cls, data: dict) -> "Step":
        return cls(data["name"], data["title"], Outcome(data["outcome"]), data.get("detail", ""))


class StepLog:
    """The steps of one run, in order; ``on_step`` hears of each as it finishes."""

    def __init__(self, on_step: Callable[[Step], None] | None = None):
        self.steps: list[Step] = []
        self.on_step = on_step

    def add(self, name: str, title: str, outcome: Outcome, detail: str = "") -> Step:
        step = Step(name, title, outcome, detail)
        self.steps.append(step)
        if self.on_step:
            self.on_step(step)
        return step

    @property
    def failed(self) -> list[Step]:
        return [s for s in self.steps if s.outcome is Outcome.FAILED]
