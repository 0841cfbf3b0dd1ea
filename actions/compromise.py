"""compromise: the whole playbook under one approval — collect, protect and isolate, snapshot,
memory when SSH access is set up, and stop only when asked."""

from __future__ import annotations

import boto3

from actions.artefacts import Result
from actions.collect import collect
from actions.context import RunContext
from actions.errors import ActionError
from actions.isolate import isolate
from actions.memory import capture
from actions.registry import REGISTRY, Need, Option, Risk, action
from actions.snapshot import snapshot
from actions.steps import Outcome, StepLog
from actions.stop import stop as stop_instance
from actions.words import count

PARTS = ("collect", "isolate", "snapshot", "memory", "stop")


def _state(options: dict) -> str:
    return "isolated + snapshotted" + (" + stopped" if options.get("stop") else "")


@action("compromise", risk=Risk.CHANGE,
        summary="The whole playbook: collect, isolate, snapshot, memory, and stop with --stop.",
        permissions=tuple(p for part in PARTS for p in REGISTRY[part].permissions),
        grants=tuple(g for part in PARTS for g in REGISTRY[part].grants),
        extra_options=(Option("--stop", says="and then STOP the instance: whatever is only in its memory is lost"),), needs=(Need.RECORD,), card_state=_state, loses_memory=True, timeout_seconds=60 * 60)
def compromise(session: boto3.Session, instance_id: str, region: str, *, context: RunContext, steps: StepLog, dry_run: bool = False,
               stop: bool = False) -> Result:
    result = Result("compromise", instance_id, region)

    # Evidence first: the metadata and console as they were before irbot touched anything.
    if dry_run:
        steps.add("collect", "Collect metadata and console output", Outcome.PLANNED, "save them to the evidence bucket")
    else:
        try:
            collected = collect(session, instance_id, region, context=context, steps=StepLog())
            where = [context.store(a) for a in collected.artefacts]
            steps.add("collect", "Collect metadata and console output", Outcome.DONE, f"{count(len(where), 'object')} saved")
            result.notes.extend(collected.notes)
        except ActionError as exc:
            steps.add("collect", "Collect metadata and console output", Outcome.FAILED, str(exc))

    isolated = isolate(session, instance_id, region, context=context, steps=steps, dry_run=dry_run)
    result.notes.extend(isolated.notes)
    result.facts["record"] = isolated.facts.get("record")
    snapped = snapshot(session, instance_id, region, context=context, steps=steps, dry_run=dry_run)
    result.facts["snapshots"] = snapped.facts.get("snapshots", [])
    captured = True
    if context.memory is None:
        steps.add("memory", "Capture memory", Outcome.SKIPPED, "SSH access is not set up (IR_SSH_KEY)")
    elif not context.capture_path:
        # Isolation came first and admits SSH from nowhere: trying would only time out, and --stop would then wait in vain.
        steps.add("memory", "Capture memory", Outcome.FAILED,
                  "the isolated instance admits SSH from nowhere, so the capture can't reach it: set IR_ANALYST_CIDR to the "
                  "workers' (or bastion's) address range, or IR_CAPTURE_SOURCE_SG to their security group")
        captured = False
    else:
        before = len(steps.steps)
        memory = capture(session, instance_id, region, context=context, steps=steps, dry_run=dry_run)
        result.artefacts.extend(memory.artefacts)
        captured = not any(s.outcome is Outcome.FAILED for s in steps.steps[before:])
    if stop and not captured and not dry_run:
        # A host whose memory capture failed stays up, so the capture can be tried again.
        steps.add("stop-instance", f"Stop {instance_id}", Outcome.SKIPPED, "the memory capture failed; stopping would lose the memory")
    elif stop:
        stop_instance(session, instance_id, region, context=context, steps=steps, dry_run=dry_run)
    else:
        steps.add("stop-instance", f"Stop {instance_id}", Outcome.SKIPPED, "not asked for (add --stop); it stays running, isolated")
    result.steps = steps.steps
    return result
