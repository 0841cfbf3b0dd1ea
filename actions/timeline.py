"""The analysis as evidence: one JSON line per finding, and a timeline in the JSONL that Timesketch imports.

Timesketch needs three fields on every line (message, datetime in ISO 8601, timestamp_desc) and keeps any
others as attributes, so each line carries the finding whole plus the evidence it came from (the image's key,
version and SHA-256): a line read on its own still says which image to check it against.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Iterable, Iterator

from actions.analysis import Finding

# What the finding's time is, in the words plaso uses for the same timestamp, so the two sort together in Timesketch.
MODIFIED = "Content Modification Time"


def finding_lines(findings: Iterable[Finding], evidence: dict) -> Iterator[str]:
    """One JSON line per finding, each naming ``evidence`` (e.g. {"image": key, "version_id": ..., "sha256": ...})."""
    for finding in findings:
        yield json.dumps({**finding.record(), "evidence": evidence}, sort_keys=True)


def timesketch_lines(findings: Iterable[Finding], evidence: dict) -> Iterator[str]:
    """Timesketch JSONL: one event per finding whose file has a time; findings without one can't be placed, and are left out."""
    for finding in findings:
        if not finding.modified:
            continue
        moment = datetime.fromisoformat(finding.modified)
        event = {
            "message": f"{finding.kind.replace('_', ' ')}: {finding.value} ({finding.path}{f' line {finding.line}' if finding.line else ''})",
            "datetime": moment.isoformat(),
            "timestamp": int(moment.timestamp() * 1_000_000),  # microseconds, as Timesketch stores it
            "timestamp_desc": MODIFIED,
            "data_type": f"irbot:finding:{finding.kind}",
            **{key: value for key, value in finding.record().items() if key != "modified"},
            **{f"evidence_{key}": value for key, value in evidence.items()},
        }
        yield json.dumps(event, sort_keys=True)
