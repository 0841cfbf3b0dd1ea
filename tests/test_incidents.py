"""Incidents over HTTP: declare (a channel and a pinned card), work in it, the card follows, the report."""

from __future__ import annotations

import json
import re

import boto3

from tests.helpers import CHANNEL, RESPONDER, SECOND_RESPONDER, THIRD_RESPONDER, evidence_keys
from core.audit import AuditTrail


def declare(irbot, slack, text: str = "Crypto miner on web-1 --severity high") -> dict:
    status, reply, elapsed = irbot.command(f"declare {text}")
    assert status == 200 and elapsed < 3 and reply["response_type"] == "in_channel"
    incident_id = re.search(r"IR-\d{8}-\d{3}", reply["text"]).group(0)
    slack.wait_for(lambda s: s.calls_to("pins.add"))
    [created] = slack.calls_to("conversations.create")
    channel = next(c for c, v in slack.channels.items() if v["name"] == created.params["name"])
    return {"id": incident_id, "channel": channel, "card_ts": slack.calls_to("pins.add")[0].params["timestamp"], "name": created.params["name"]}


def card(slack, incident) -> str:
    return slack.current(incident["channel"], incident["card_ts"])["text"]


def test_declare_makes_a_private_channel_invites_the_responders_and_pins_the_card(run_irbot, world, slack):
    irbot = run_irbot()
    incident = declare(irbot, slack)
    assert re.fullmatch(r"ir-\d{8}-\d{3}-crypto-miner-on-web-1", incident["name"])
    assert slack.channels[incident["channel"]]["is_private"] is True
    assert {RESPONDER, SECOND_RESPONDER, THIRD_RESPONDER} <= slack.channels[incident["channel"]]["members"]
    text = card(slack, incident)
    assert f"*{incident['id']}* — Crypto miner on web-1" in text and "Severity *high*" in text and f"commander <@{RESPONDER}>" in text
    announced = slack.wait_for(lambda s: [m for m in s.messages(CHANNEL) if "declared" in m["text"]])
    assert f"in <#{incident['channel']}>" in announced[0]["text"]


def test_work_in_the_incident_channel_belongs_to_it_and_the_card_follows(run_irbot, world, slack, redis_url):
    irbot = run_irbot(IR_UNTRACK_PAUSE_SECONDS="0")
    incident = declare(irbot, slack)
    status, reply, _ = irbot.command(f"isolate {world['instance']}", channel=incident["channel"])
    assert "needs approval" in reply["text"]
    approval = slack.wait_for(lambda s: next((m for m in s.messages(incident["channel"]) if "Approval needed" in m["text"]), None))
    slack.wait_for(lambda s: f"/ir isolate {world['instance']}" in card(s, incident))  # waiting for approval, on the card
    request_id = next(b for b in approval["blocks"] if b["type"] == "actions")["elements"][0]["value"]
    irbot.click(SECOND_RESPONDER, "ir_approve", request_id, channel=incident["channel"])
    slack.wait_for(lambda s: "Done" in s.current(incident["channel"], approval["ts"])["text"])
    text = slack.wait_for(lambda s: f"`{world['instance']} (123456789012, us-east-1)`: isolated" in card(s, incident) and card(s, incident))
    assert "*Approvals waiting*: none" in text and "*Evidence objects*: 1" in text
    # The trail is the incident's, not the channel's.
    import redis as _redis

    trail = AuditTrail(_redis.Redis.from_url(redis_url)).for_incident(incident["id"])
    assert [r["action"] for r in trail][:2] == ["incident.declared", "request.opened"]

    status, reply, _ = irbot.command("status", channel=incident["channel"])
    # Only the asker sees it (the pinned card is there for everyone), unless asked to share it.
    assert reply["response_type"] == "ephemeral" and f"`{world['instance']} (123456789012, us-east-1)`: isolated" in reply["text"]
    status, reply, _ = irbot.command("status --share", channel=incident["channel"])
    assert reply["response_type"] == "in_channel" and f"`{world['instance']} (123456789012, us-east-1)`: isolated" in reply["text"]

    status, reply, _ = irbot.command("close --summary Contained: web-1 isolated, miner gone.", channel=incident["channel"])
    text = slack.wait_for(lambda s: "status *CLOSED*" in card(s, incident) and card(s, incident))
    assert "*Summary*: Contained: web-1 isolated, miner gone." in text


def test_the_report_is_uploaded_and_kept_and_its_timeline_is_the_audit_trail(run_irbot, world, slack, redis_url):
    irbot = run_irbot()
    incident = declare(irbot, slack)
    irbot.command(f"collect {world['instance']}", channel=incident["channel"])
    slack.wait_for(lambda s: any("Evidence from" in m["text"] for m in s.messages(incident["channel"])))
    irbot.command("report", channel=incident["channel"])
    [done] = slack.wait_for(lambda s: s.calls_to("files.completeUploadExternal"))
    assert done.params["channel_id"] == incident["channel"]
    [file_id] = [f["id"] for f in json.loads(done.params["files"])]
    report = slack.uploads[file_id].decode()

    import redis as _redis

    trail = AuditTrail(_redis.Redis.from_url(redis_url)).for_incident(incident["id"])
    # Every record is in the timeline, oldest first: alone, or in a folded run ("12–19").
    rows = [line.split("|")[1].strip() for line in report.splitlines() if re.match(r"\| \d+(–\d+)? \| ", line)]
    numbers = [n for row in rows for n in range(int(row.split("–")[0]), int(row.split("–")[-1]) + 1)]
    assert numbers == [r["seq"] for r in trail[: len(numbers)]]
    assert report.startswith(f"# {incident['id']}: Crypto miner on web-1")
    assert "instance.json" in report and "## Evidence" in report and "## Actions by target" in report
    # Kept as evidence too, with its digest.
    [key] = [k for k in evidence_keys() if k.endswith("report.md")]
    assert boto3.client("s3").get_object(Bucket="ir-evidence", Key=key)["Body"].read().decode() == report


def test_an_incident_is_declared_from_a_finding_cards_button(run_irbot, world, slack):
    irbot = run_irbot()
    value = json.dumps({"title": "EC2 instance is querying a Bitcoin domain", "severity": "high", "finding": "16afba5c"})
    irbot.click(RESPONDER, "ir_declare_finding", value, channel="C0ALERTS01")
    slack.wait_for(lambda s: s.calls_to("pins.add"))
    [created] = slack.calls_to("conversations.create")
    assert re.fullmatch(r"ir-\d{8}-\d{3}-ec2-instance-is-querying-a-bitcoin", created.params["name"])
    channel = next(c for c, v in slack.channels.items() if v["name"] == created.params["name"])
    text = slack.current(channel, slack.calls_to("pins.add")[0].params["timestamp"])["text"]
    assert "EC2 instance is querying a Bitcoin domain" in text and "Severity *high*" in text


def test_a_hostile_title_and_summary_reach_the_report_as_text_not_markup(run_irbot, world, slack):
    """The title may be copied from a finding, the summary typed by anyone in the channel: neither may render as markup."""
    irbot = run_irbot()
    hostile = "M ![](https://a.example/p.png) <img onerror=f()> [Sign in](https://e.example)`x`"
    incident = declare(irbot, slack, f"{hostile} --severity high")
    irbot.command("close --summary Done. ![t](https://attacker.example/t.png) <script>x</script> www.evil.example", channel=incident["channel"])
    slack.wait_for(lambda s: "status *CLOSED*" in card(s, incident))
    irbot.command("report", channel=incident["channel"])
    [done] = slack.wait_for(lambda s: s.calls_to("files.completeUploadExternal"))
    report = slack.uploads[json.loads(done.params["files"])[0]["id"]].decode()
    for markup in ("![", "](http", "<img", "<script", "[Sign in]", "www.evil", "`x`"):
        assert markup not in report, markup
    assert report.startswith(f"# {incident['id']}: M \\!\\[\\]\\(https\\://a.example/p.png\\) &lt;img onerror=f\\(\\)&gt; \\[Sign in\\]")
    assert "- Summary: Done. \\!\\[t\\]\\(https\\://attacker.example/t.png\\) &lt;script&gt;x&lt;/script&gt; www\\.evil.example" in report


def test_the_report_names_people_groups_actions_per_target_folds_repeats_and_is_kept_final_at_close(run_irbot, world, slack):
    """Read outside Slack: people by name with their ID (users.info), the ID alone when Slack can't say; each target's
    requests with who approved them; eight stored objects one line; and the version kept at close says closed."""
    slack.users[RESPONDER] = {"real_name": "Alice Example", "profile": {"real_name": "Alice Example"}}  # Bob: Slack knows no name
    irbot = run_irbot(IR_UNTRACK_PAUSE_SECONDS="0")
    incident = declare(irbot, slack)
    irbot.command(f"collect {world['instance']}", channel=incident["channel"])
    slack.wait_for(lambda s: any("Evidence from" in m["text"] for m in s.messages(incident["channel"])))
    irbot.command(f"isolate {world['instance']}", channel=incident["channel"])
    approval = slack.wait_for(lambda s: next((m for m in s.messages(incident["channel"]) if "Approval needed" in m["text"]), None))
    request_id = next(b for b in approval["blocks"] if b["type"] == "actions")["elements"][0]["value"]
    irbot.click(SECOND_RESPONDER, "ir_approve", request_id, channel=incident["channel"])
    slack.wait_for(lambda s: "Done" in s.current(incident["channel"], approval["ts"])["text"])
    irbot.command("close --summary Contained.", channel=incident["channel"])
    [done] = slack.wait_for(lambda s: s.calls_to("files.completeUploadExternal"))
    assert done.params["channel_id"] == incident["channel"] and "Final report" in done.params["initial_comment"]
    report = slack.uploads[json.loads(done.params["files"])[0]["id"]].decode()
    assert {c.params["user"] for c in slack.calls_to("users.info")} >= {RESPONDER}

    assert "- Commander: Alice Example (U0ALICE01)" in report
    assert "- Status: closed (closed " in report and "- Summary: Contained." in report
    section = report.split("## Actions by target")[1].split("## Timeline")[0]
    assert f"### `{world['instance']} (123456789012, us-east-1)`" in section
    collect = next(line for line in section.splitlines() if line.startswith("- `/ir collect`"))
    assert "requested by Alice Example (U0ALICE01); no approval needed (read-only). Outcome: done; 8 evidence objects stored." in collect
    isolate = next(line for line in section.splitlines() if line.startswith("- `/ir isolate`"))
    assert f"approved by {SECOND_RESPONDER}." in isolate and "Outcome: done" in isolate  # no name from Slack: the ID alone
    assert "nobody" not in report
    timeline = report.split("## Timeline")[1].split("## Evidence")[0]
    assert re.search(r"\| \d+–\d+ \| [^|]+ \| worker:[^|]+ \| 8 evidence objects stored \|", timeline), timeline
    assert "| evidence.stored |" not in timeline
    # Kept as evidence, as it stood when closed.
    [key] = [k for k in evidence_keys() if k.endswith("report-final.md")]
    kept = boto3.client("s3").get_object(Bucket="ir-evidence", Key=key)["Body"].read().decode()
    assert kept == report and "Status: open" not in kept
