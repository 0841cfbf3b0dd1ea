"""analyze: what the attacker left on disk, read from the incident's raw disk images where they lie in the bucket.

The image /ir image made of a snapshot (found through its custody record in the audit trail; imaged first when
there is none) is opened with dissect.target over S3 range reads of that one object version: nothing is
downloaded whole, nothing is written to the image, and every finding names the image's key, version and SHA-256.
The findings are kept as evidence twice: one JSON line each, and a timeline Timesketch imports as it is.
"""

from __future__ import annotations

import logging
from datetime import date, datetime, time, timedelta, timezone

import boto3

from actions import analysis, timeline
from actions.artefacts import Artefact, Result
from actions.context import RunContext
from actions.errors import ActionError
from actions.image import image as take_image
from actions.image import PERMISSIONS as IMAGE_PERMISSIONS
from actions.registry import Option, Reply, Risk, action
from actions.steps import Outcome, StepLog
from actions.words import count

# Files in /etc modified this long before the request count as changed in the incident, unless --since says otherwise.
DEFAULT_LOOKBACK = timedelta(days=14)
FINDINGS_IN_FACTS = 100  # kept in the request's outcome (Redis) and drawn from on the card
FACT_CHARACTERS = 512


@action("analyze", risk=Risk.READ, summary="What the attacker left on disk: the incident's disk images read in place (dissect), findings and a timeline.",
        permissions=IMAGE_PERMISSIONS, target="disk", many=True, reply=Reply.ANALYSIS, card_state="analyzed", queue="long",
        timeout_seconds=12 * 3600, policy="disks",
        extra_options=(Option("--since", "YYYY-MM-DD", "date", says="counting files in /etc modified since {value} as changed"),))
def analyze(session: boto3.Session, target: str, region: str, *, context: RunContext, steps: StepLog, dry_run: bool = False,
            since: str | None = None) -> Result:
    result = Result("analyze", target, region)
    if context.images_of is None or context.evidence_file is None:
        raise ActionError("No evidence bucket to read images from: set IR_EVIDENCE_BUCKET for the worker.")
    images = context.images_of(target)
    if not images:
        # Nothing imaged yet: image it now, exactly as /ir image does (its steps are this request's too).
        made = take_image(session, target, region, context=context, steps=steps)
        images = made.facts.get("images", [])
        result.artefacts.extend(made.artefacts)
        if not images:
            raise ActionError(f"irbot has no image of {target} and could not make one: see the steps above.")
    start = datetime.combine(date.fromisoformat(since), time(), timezone.utc) if since else datetime.now(timezone.utc) - DEFAULT_LOOKBACK
    window = (start, datetime.now(timezone.utc))
    logging.getLogger("dissect").setLevel(logging.ERROR)  # "adding as raw volume" for a bare filesystem is what it should do
    for custody in images:
        evidence = {"image": custody["s3"], "version_id": custody.get("version_id"), "sha256": custody["sha256"],
                    "snapshot": custody["snapshot"], "volume": custody["volume"]}
        title = f"Analyse {custody['volume']}.raw (of {custody['snapshot']})"
        key = custody["s3"].split("/", 3)[3]
        if not custody.get("version_id"):
            # Without a version, the key could be read as whoever wrote it last left it: not the image the custody names.
            steps.add(f"analyze:{custody['snapshot']}", title, Outcome.FAILED,
                      f"the image {custody['s3']} has no version ID in its custody record (a bucket without versioning): irbot "
                      "reads only the version /ir image wrote; image it again into the evidence bucket")
            continue
        try:
            image = context.evidence_file(key, custody.get("version_id"))
            found = analysis.analyse(analysis.open_image(image), window=window)
        except ActionError as exc:
            steps.add(f"analyze:{custody['snapshot']}", title, Outcome.FAILED, str(exc))
            continue
        except Exception as exc:  # dissect on a hostile disk: one image's failure is a line, the others go on
            steps.add(f"analyze:{custody['snapshot']}", title, Outcome.FAILED,
                      f"dissect could not read {custody['volume']}.raw ({type(exc).__name__}): analyse it on a workstation (`/ir workstation`)")
            continue
        worst = found.worst_first()
        name = custody["snapshot"]  # one image per snapshot: two snapshots of one volume keep both analyses
        result.artefacts.append(Artefact(f"analysis-{name}.jsonl", _lines(timeline.finding_lines(worst, evidence)), "application/x-ndjson",
                                         f"Findings on {custody['volume']}.raw, one JSON line each, naming the image they came from"))
        result.artefacts.append(Artefact(f"timeline-{name}.jsonl", _lines(timeline.timesketch_lines(worst, evidence)), "application/x-ndjson",
                                         f"Timeline of the findings on {custody['volume']}.raw, in the JSONL Timesketch imports"))
        result.facts.setdefault("analyses", []).append({
            **evidence, "os": found.os, "hostname": found.hostname, "version": found.version, "bytes_read": getattr(image, "bytes_fetched", None),
            "since": start.date().isoformat(), "findings_count": len(worst),
            # The card's few, cut: the disk can make hundreds of thousands, all of which are in the evidence.
            "findings": [{k: (v[:FACT_CHARACTERS] if isinstance(v, str) else v) for k, v in f.record().items()} for f in worst[:FINDINGS_IN_FACTS]]})
        steps.add(f"analyze:{custody['snapshot']}", title, Outcome.DONE,
                  f"{found.os} {found.hostname or ''}: {count(len(worst), 'finding')}; read {_size(getattr(image, 'bytes_fetched', 0))} of the image")
    result.steps = steps.steps
    return result


def _lines(lines) -> bytes:
    return "".join(f"{line}\n" for line in lines).encode("utf-8")


def _size(n: int | None) -> str:
    return f"{(n or 0) / 2**20:.1f} MiB"
