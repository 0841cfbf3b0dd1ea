"""AWS failures over real HTTP: throttling is retried, refusals become one sentence in the channel.

moto never throttles or denies, so a small proxy in front of it (standins/aws_proxy.py) answers
some calls with the errors AWS really sends, and forwards the rest.
"""

from __future__ import annotations

import pytest

from actions.errors import explain
from standins.aws_proxy import AwsProxy
from tests.helpers import CHANNEL, RESPONDER, evidence_keys, make_world
from workers.jobs import run_command
from core.request import CommandRequest

@pytest.fixture
def faulty(irbot_env, monkeypatch):
    proxies = []

    def make(action: str, code: str, status: int, times: int) -> AwsProxy:
        proxy = AwsProxy(irbot_env["AWS_ENDPOINT_URL"]).start()
        proxy.refuse(action, code, status, times=times)
        proxies.append(proxy)
        # Only EC2 goes through the proxy; S3 (the evidence) talks to moto directly.
        monkeypatch.setenv("AWS_ENDPOINT_URL_EC2", proxy.url)
        return proxy

    yield make
    for proxy in proxies:
        proxy.stop()


def collect_request(instance_id: str) -> dict:
    return CommandRequest(command="collect", targets=(instance_id,), options={}, user_id=RESPONDER, channel_id=CHANNEL).to_dict()


def test_throttling_is_retried_and_the_collect_still_succeeds(irbot_env, slack, faulty):
    world = make_world()
    proxy = faulty("DescribeInstances", "RequestLimitExceeded", 503, times=2)
    outcome = run_command(collect_request(world["instance"]))
    assert outcome["ok"] is True
    assert proxy.tally.seen["DescribeInstances"] == 3  # two throttled answers, then the real one
    assert "Evidence from" in slack.messages(CHANNEL)[0]["text"]


def test_access_denied_is_one_sentence_naming_the_permission_and_nothing_is_stored(irbot_env, slack, faulty):
    world = make_world()
    faulty("DescribeInstances", "UnauthorizedOperation", 403, times=100)
    outcome = run_command(collect_request(world["instance"]))
    expected = "irbot's AWS identity is not allowed to call ec2:DescribeInstances in us-east-1 (UnauthorizedOperation)."
    assert outcome["ok"] is False and outcome["error"].startswith(expected)
    [message] = slack.top_level(CHANNEL)
    assert expected in message["text"] and "Traceback" not in message["text"]
    assert evidence_keys() == []


def test_a_part_that_is_denied_is_noted_and_the_rest_is_still_collected(irbot_env, slack, faulty):
    world = make_world()
    faulty("GetConsoleOutput", "UnauthorizedOperation", 403, times=100)
    outcome = run_command(collect_request(world["instance"]))
    assert outcome["ok"] is True
    assert not any(o["key"].endswith("console-output.txt") for o in outcome["objects"])
    assert any(o["key"].endswith("instance.json") for o in outcome["objects"])
    [message] = slack.top_level(CHANNEL)
    assert "1 note in the thread" in message["text"]
    [detail] = slack.thread(CHANNEL, message["ts"])
    assert "console-output.txt was not collected: irbot's AWS identity is not allowed to call ec2:GetConsoleOutput" in detail["text"]


def test_a_throttle_that_outlasts_every_retry_says_so():
    from botocore.exceptions import ClientError

    error = ClientError(
        {"Error": {"Code": "RequestLimitExceeded", "Message": "x"}, "ResponseMetadata": {"MaxAttemptsReached": True}},
        "DescribeInstances",
    )
    assert explain(error, service="ec2", region="eu-west-1") == (
        "AWS kept throttling ec2:DescribeInstances in eu-west-1 after every retry (RequestLimitExceeded); "
        "wait a minute and run the command again."
    )
