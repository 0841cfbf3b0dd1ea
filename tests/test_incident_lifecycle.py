"""An incident behaves like one: close ends what waits, a closed incident takes no new work until reopened,
status outside an incident says so, declare adopts earlier work, and commander, severity and updates."""

from __future__ import annotations

import json

import redis

from core.audit import AuditTrail, verify
from tests.helpers import CHANNEL, RESPONDER, SECOND_RESPONDER
from tests.test_incidents import card, declare

UPDATES = "C0UPDATES1"


def trail(redis_url: str, incident: str) -> list[dict]:
    return AuditTrail(redis.Redis.from_url(redis_url)).for_incident(incident)


def test_close_cancels_the_requests_still_waiting_and_says_so(run_irbot, world, slack, redis_url):
    irbot = run_irbot(IR_UNTRACK_PAUSE_SECONDS="0")
    incident = declare(irbot, slack)
    irbot.command(f"isolate {world['instance']}", channel=incident["channel"])
    approval = slack.wait_for(lambda s: next((m for m in s.messages(incident["channel"]) if "Approval needed" in m["text"]), None))
    request_id = next(b for b in approval["blocks"] if b["type"] == "actions")["elements"][0]["value"]

    status, reply, _ = irbot.command("close --summary False alarm.", channel=incident["channel"])
    said = slack.wait_for(lambda s: next((m["text"] for m in s.messages(incident["channel"]) if "closed" in m["text"]), None))
    assert "Cancelled 1 request still waiting for approval" in said and f"/ir isolate {world['instance']}" in said and request_id in said
    redrawn = slack.wait_for(lambda s: "Cancelled" in s.current(incident["channel"], approval["ts"])["text"] and s.current(incident["channel"], approval["ts"]))
    assert not any(b["type"] == "actions" for b in redrawn["blocks"])  # no Approve button left
    shown = "\n".join([redrawn["text"], *(m["text"] for m in slack.thread(incident["channel"], approval["ts"]))])
    assert f"Cancelled because {incident['id']} was closed." in shown, shown
    text = slack.wait_for(lambda s: "status *CLOSED*" in card(s, incident) and card(s, incident))
    assert "*Approvals waiting*: none" in text
    cancelled = [r for r in trail(redis_url, incident["id"]) if r["action"] == "request.cancelled"]
    assert cancelled and cancelled[0]["actor"] == RESPONDER and cancelled[0]["params"]["request"] == request_id

    # A late Approve changes nothing.
    irbot.click(SECOND_RESPONDER, "ir_approve", request_id, channel=incident["channel"])
    refusal = slack.wait_for(lambda s: s.ephemerals(SECOND_RESPONDER))
    assert "was cancelled" in refusal[-1]
    irbot.settle()
    assert not any(r["action"] == "job.started" for r in trail(redis_url, incident["id"]))


def test_a_closed_incident_refuses_new_work_until_reopened(run_irbot, world, slack, redis_url):
    irbot = run_irbot()
    incident = declare(irbot, slack)
    irbot.command("close", channel=incident["channel"])
    slack.wait_for(lambda s: "status *CLOSED*" in card(s, incident))

    status, reply, _ = irbot.command(f"collect {world['instance']}", channel=incident["channel"])
    assert status == 200 and reply["response_type"] == "ephemeral"
    assert f"{incident['id']} is closed" in reply["text"] and "`/ir reopen`" in reply["text"] and "nothing was queued" in reply["text"]
    irbot.settle()
    assert not any("Evidence from" in m["text"] for m in slack.messages(incident["channel"]))
    assert [r["params"]["why"] for r in trail(redis_url, incident["id"]) if r["action"] == "request.refused"] == ["incident closed"]

    status, reply, _ = irbot.command("reopen", channel=incident["channel"])
    assert reply["response_type"] == "ephemeral" and "Reopening" in reply["text"]
    slack.wait_for(lambda s: "status *open*" in card(s, incident))
    slack.wait_for(lambda s: any("reopened" in m["text"] for m in s.messages(incident["channel"])))
    assert "incident.reopened" in [r["action"] for r in trail(redis_url, incident["id"])]
    status, reply, _ = irbot.command(f"collect {world['instance']}", channel=incident["channel"])
    assert reply["response_type"] == "ephemeral" and "Queued" in reply["text"]  # the asker's; the channel gets the request's message
    status, reply, _ = irbot.command("reopen", channel=incident["channel"])
    assert "open already" in reply["text"]


def test_status_outside_an_incident_says_there_is_none_privately(run_irbot, world, slack):
    irbot = run_irbot()
    status, reply, _ = irbot.command("status", channel=CHANNEL)
    assert status == 200 and reply["response_type"] == "ephemeral"
    assert "No incident is declared in this channel" in reply["text"] and "`/ir declare <title>" in reply["text"]
    assert "Severity" not in reply["text"] and not slack.calls_to("chat.postMessage")


def test_declare_adopts_the_work_already_done_in_the_channel(run_irbot, world, slack, redis_url):
    irbot = run_irbot()
    irbot.command(f"collect {world['instance']}", channel=CHANNEL)
    slack.wait_for(lambda s: any("Evidence from" in m["text"] for m in s.messages(CHANNEL)))
    irbot.settle()
    before = trail(redis_url, CHANNEL)
    assert any(r["action"] == "evidence.stored" for r in before)

    incident = declare(irbot, slack)
    mine = trail(redis_url, incident["id"])
    assert {r["seq"] for r in before} <= {r["seq"] for r in mine}  # the channel's records are the incident's
    assert mine[len(before)]["action"] == "incident.declared" and mine[len(before)]["params"]["adopted"] == CHANNEL
    text = card(slack, incident)
    assert "*Evidence objects*: 0" not in text and f"`{world['instance']} (123456789012, us-east-1)`" in text
    announced = slack.wait_for(lambda s: [m for m in s.messages(CHANNEL) if "declared" in m["text"]])
    assert "The work done here so far belongs to it." in announced[0]["text"]

    status, reply, _ = irbot.command("audit", channel=incident["channel"])
    assert "request.queued" in reply["text"] and "evidence.stored" in reply["text"]
    irbot.command("report", channel=incident["channel"])
    [done] = slack.wait_for(lambda s: s.calls_to("files.completeUploadExternal"))
    report = slack.uploads[json.loads(done.params["files"])[0]["id"]].decode()
    assert "instance.json" in report
    # Adopting wrote nothing but the declaration: the chain and every index stay intact.
    assert verify(AuditTrail(redis.Redis.from_url(redis_url)), []) == []


def test_commander_severity_and_updates_change_the_incident_and_reach_the_stakeholders(run_irbot, world, slack, redis_url):
    irbot = run_irbot(IR_UPDATES_CHANNEL=UPDATES)
    incident = declare(irbot, slack)

    status, reply, _ = irbot.command(f"commander <@{SECOND_RESPONDER}|bob>", channel=incident["channel"])
    assert reply["response_type"] == "ephemeral"
    slack.wait_for(lambda s: f"commander <@{SECOND_RESPONDER}>" in card(s, incident))
    irbot.command("severity critical", channel=incident["channel"])
    slack.wait_for(lambda s: "Severity *critical*" in card(s, incident))

    irbot.command("update Web-1 isolated — no data left the VPC. <!channel> <https://evil.example|click>", channel=incident["channel"])
    posted = slack.wait_for(lambda s: next((m["text"] for m in s.messages(UPDATES)), None))
    assert incident["id"] in posted and "Web-1 isolated — no data left the VPC." in posted
    assert "<!channel>" not in posted and "&lt;!channel&gt;" in posted and "<https://evil" not in posted
    here = [m["text"] for m in slack.messages(incident["channel"]) if "Update on" in m["text"]]
    assert here and "&lt;!channel&gt;" in here[0]

    # The update is recorded after it is posted (a post that fails is not an update): wait for the record.
    actions = slack.wait_for(lambda s: (lambda found: found if "incident.update" in found else None)(
        {r["action"]: r for r in trail(redis_url, incident["id"])}))
    assert actions["incident.commander"]["params"] == {"from": RESPONDER, "to": SECOND_RESPONDER}
    assert actions["incident.severity"]["params"] == {"from": "high", "to": "critical"}
    assert actions["incident.update"]["params"]["text"].startswith("Web-1 isolated — no data")

    status, reply, _ = irbot.command("commander @bob", channel=incident["channel"])
    assert reply["response_type"] == "ephemeral" and "member ID" in reply["text"]
    status, reply, _ = irbot.command("severity huge", channel=incident["channel"])
    assert "not a severity" in reply["text"]
    status, reply, _ = irbot.command("update nothing to see", channel=CHANNEL)
    assert "not a declared incident's channel" in reply["text"]
