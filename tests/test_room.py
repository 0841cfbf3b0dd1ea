"""Who is in the room: declaring invites everyone who may act or approve, responders may come from a user group,
and a quorum nobody could meet stops `irbot serve` before it starts."""

from __future__ import annotations

import subprocess

from tests.helpers import CHANNEL, OUTSIDER, RESPONDER, SECOND_RESPONDER
from tests.processes import IRBOT, irbot_environment
from tests.test_incidents import declare

APPROVER_ONLY = "U0DAVE004"  # in IR_APPROVERS, not a responder
GROUP_APPROVER = "U0ERIN005"  # a member of the approvers' user group only
GROUP_RESPONDER = "U0FRANK06"  # a member of the responders' user group only


def test_declare_invites_the_approvers_and_both_groups_members(run_irbot, world, slack):
    slack.usergroups["S0APPROVE"] = {"handle": "ir-approvers", "users": [GROUP_APPROVER]}
    slack.usergroups["S0RESPOND"] = {"handle": "ir-responders", "users": [GROUP_RESPONDER]}
    irbot = run_irbot(IR_APPROVERS=f"{SECOND_RESPONDER},{APPROVER_ONLY}", IR_APPROVER_GROUP="ir-approvers", IR_RESPONDER_GROUP="S0RESPOND")
    incident = declare(irbot, slack)
    invited = {u for call in slack.calls_to("conversations.invite") if call.params["channel"] == incident["channel"]
               for u in call.params["users"].split(",")}
    assert {RESPONDER, SECOND_RESPONDER, APPROVER_ONLY, GROUP_APPROVER, GROUP_RESPONDER} <= invited
    assert OUTSIDER not in invited
    assert {APPROVER_ONLY, GROUP_APPROVER} <= slack.channels[incident["channel"]]["members"]


def test_a_responder_groups_member_may_run_commands_and_a_change_to_the_group_needs_no_restart(run_irbot, world, slack):
    slack.usergroups["S0RESPOND"] = {"handle": "ir-responders", "users": [GROUP_RESPONDER]}
    irbot = run_irbot(IR_RESPONDER_GROUP="@ir-responders")
    status, reply, _ = irbot.command("audit", user=GROUP_RESPONDER)
    assert status == 200 and "not on irbot's responder list" not in reply["text"] and "audit" in reply["text"].lower()
    status, reply, _ = irbot.command("audit", user=OUTSIDER)
    assert reply["response_type"] == "ephemeral" and "not on irbot's responder list" in reply["text"]
    # The group is read live (cached a minute): someone added to it is let in without restarting irbot.
    slack.usergroups["S0RESPOND"]["users"].append(OUTSIDER)
    for members in _group_readers():
        members._read_at = members._asked_at = float("-inf")  # the minute's cache, run out
    status, reply, _ = irbot.command("audit", user=OUTSIDER)
    assert "not on irbot's responder list" not in reply["text"]


def _group_readers():
    """The user-group readers of the bot running in this process (their cache is what a minute's wait would run out)."""
    import gc

    from chat.directory import GroupMembers

    return [o for o in gc.get_objects() if isinstance(o, GroupMembers)]


def test_a_quorum_the_approvers_can_never_meet_stops_serve_with_one_sentence(slack, redis_url, moto_endpoint):
    env = irbot_environment(moto_endpoint, redis_url, slack, IR_APPROVERS=SECOND_RESPONDER, IR_APPROVAL_QUORUM="3")
    done = subprocess.run([IRBOT, "serve"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert "IR_APPROVAL_QUORUM is 3" in lines[0] and "at most 1 approver" in lines[0] and "IR_APPROVERS" in lines[0]


def test_every_responder_being_an_approver_leaves_one_fewer_and_a_group_may_grow(slack, redis_url, moto_endpoint):
    from core.settings import ConfigError, check_quorum, load

    env = irbot_environment(moto_endpoint, redis_url, slack, IR_RESPONDERS=f"{RESPONDER},{SECOND_RESPONDER}",
                            IR_APPROVERS=f"{RESPONDER},{SECOND_RESPONDER}", IR_APPROVAL_QUORUM="2")
    try:
        check_quorum(load(env, "serve"))
        raise AssertionError("a quorum of 2 with two approvers who are the only responders was accepted")
    except ConfigError as exc:
        assert "at most 1 approver" in str(exc)
    check_quorum(load({**env, "IR_APPROVER_GROUP": "ir-approvers"}, "serve"))  # a group may grow: nothing to refuse
    check_quorum(load({**env, "IR_RESPONDERS": f"{RESPONDER},{SECOND_RESPONDER},U0CAROL03"}, "serve"))  # Carol's requests can reach 2


def test_a_group_slack_cant_read_keeps_its_last_members_a_while_then_none(slack):
    from slack_sdk import WebClient

    from chat.directory import GroupMembers

    slack.usergroups["S0RESPOND"] = {"handle": "ir-responders", "users": [GROUP_RESPONDER]}
    members = GroupMembers(WebClient(token=slack.token, base_url=slack.api_url), "S0RESPOND")
    assert members() == {GROUP_RESPONDER}
    del slack.usergroups["S0RESPOND"]  # Slack can't say any more
    members._read_at -= members.ttl_seconds + 1
    members._asked_at = float("-inf")
    assert members() == {GROUP_RESPONDER}  # the last members read, for a while
    members._read_at -= members.STALE_SECONDS
    members._asked_at = float("-inf")
    assert members() == frozenset()  # then nobody: fail closed
