"""`irbot demo` as a user runs it: no Slack, no AWS account, no Redis server."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

IRBOT = str(Path(sys.executable).with_name("irbot"))


def test_demo_prints_the_transcript_and_exits_0_whatever_the_shell_has_set():
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "SLACK_", "IR_", "REDIS_"))}
    # A real account or workspace configured in the shell must never be touched by the demo.
    env.update({"AWS_ENDPOINT_URL": "http://127.0.0.1:9", "AWS_PROFILE": "production", "SLACK_API_URL": "http://127.0.0.1:9/api/", "REDIS_URL": "redis://127.0.0.1:9/0"})
    result = subprocess.run([IRBOT, "demo"], env=env, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "alice: /ir help" in out and "/ir collect <instance-id> [--region R]" in out
    assert "irbot (only mallory sees this): @mallory, you are not on irbot's responder list" in out
    assert "Did you mean `/ir collect`?" in out
    assert re.search(r"irbot: Evidence from i-[0-9a-f]{17} \(us-east-1\) collected for @alice: 8 objects", out)
    assert "Evidence bucket s3://irbot-demo-evidence: 8 evidence objects, 8 of them match their sha256 metadata." in out
    # The two-person rule: alice's own approval is refused, bob's runs the stop.
    assert "alice: [clicks Approve" in out
    assert "irbot (only alice sees this): You asked for this, so you can't approve it" in out
    assert "irbot (only mallory sees this): Only irbot's approvers" in out
    assert re.search(r"Done: `/ir stop i-[0-9a-f]{17}` in us-east-1, requested by @alice", out)
    assert "Approved by @bob" in out and "done: running → stopping" in out
    assert "*Audit trail of C0DEMOINC1*" in out
    assert re.search(r"Audit trail \(as `irbot audit verify` checks it\): \d+ records, 2 sealed batches, chain intact\.", out)
    assert '"level"' not in out and "Traceback" not in result.stderr
