"""Every message builder, fed hostile strings where outside text goes: nothing reaches Slack as markup.

Outside text is whatever AWS, SQS, a finding or a user wrote: resource names and tags, key-pair
names, step details quoting AWS, targets, notes, titles and summaries. Slack's mrkdwn turns
`<!channel>` into a ping, `<https://…|label>` into a link with any label, `<@U…>` and `<#C…>` into
mentions; escaped, they show as the characters they are.
"""

from __future__ import annotations

import inspect
import os
import json

import pytest

from actions.artefacts import Result
from chat import messages, threads
from core.approvals import PendingRequest
from core.evidence import Protection, StoredObject
from core.incidents import Incident
from core.request import CommandRequest

HOSTILE = "<!channel> <https://evil.example/sso|Slack SSO expired - sign in> <@U0EVIL> <#C0EVIL> <!subteam^S0EVIL>"
MARKUP = ("<!channel>", "<https://evil", "<@U0EVIL>", "<#C0EVIL>", "<!subteam")


def request(**changes) -> CommandRequest:
    values = dict(command="isolate", targets=(f"i-0abc {HOSTILE}",), options={"region": HOSTILE}, user_id="U0ALICE01",
                  channel_id="C0INCIDENT", incident=f"IR-1 {HOSTILE}")
    values.update(changes)
    return CommandRequest(**values)


def step(outcome: str = "done") -> dict:
    return {"name": "x", "title": f"Cut {HOSTILE}", "outcome": outcome, "detail": f"AWS said {HOSTILE}"}


def pending(state: str) -> PendingRequest:
    return PendingRequest(request=request(), state=state, quorum=1, expires_at=1e9, approvals={"U0BOB0002": 1e9 - 5},
                          plan=[step("would do")], steps=[step()] if state in ("running", "finished", "failed") else [],
                          ended_by="U0BOB0002", ended_at=1e9, note=f"Saved {HOSTILE}\nthe move failed: {HOSTILE}")


def built() -> dict[str, object]:
    stored = StoredObject(name=f"console {HOSTILE}", bucket="ir-evidence", key=f"C0/{HOSTILE}", size=3, sha256="0" * 64, version_id=None,
                          url="https://s3.example/x")
    result = Result("collect", f"i-0abc {HOSTILE}", HOSTILE, notes=[f"tag Name={HOSTILE}"])
    finding = {"kind": f"key-pair {HOSTILE}", "id": HOSTILE, "region": HOSTILE, "by_key": False, "detail": f"named {HOSTILE}",
               "created": HOSTILE}
    record = {"seq": 7, "time": "2026-11-26T10:00:00.000+00:00", "actor": HOSTILE, "action": "step", "target": HOSTILE,
              "params": {"title": HOSTILE, "request": "0123456789ab", "why": HOSTILE}, "outcome": HOSTILE}
    incident = Incident(id="IR-20261126-001", title=HOSTILE, severity=HOSTILE, commander="U0ALICE01", summary=HOSTILE)
    summary = {"targets": {HOSTILE: [HOSTILE]}, "keys_revoked": [HOSTILE], "waiting": [HOSTILE], "evidence": 1}
    rows = {HOSTILE: {"state": "failed", "reason": HOSTILE}, f"ok {HOSTILE}": {"state": "complete", "sha256": "0" * 64, "uri": f"s3://b/{HOSTILE}"}}
    out = {
        "evidence_summary": threads.evidence_summary(request(command="collect"), result, [stored], Protection(False), "ir-evidence", f"C0/{HOSTILE}"),
        "evidence_detail": threads.evidence_detail(result, [stored], seal=f"Audit records 1-2 sealed to s3://b/audit/x; chain head sha256 {'0' * 12}…"),
        "failed": messages.failed(request(), f"AWS refused: {HOSTILE}"),
        "request_started": threads.request_started(request(), HOSTILE),
        "steps_summary": threads.steps_summary(request(command="hunt-key"), [step(), step("failed")], HOSTILE, state="Done", notes=2,
                                               worst=[finding], findings=4),
        "detail": threads.detail(f"Steps {HOSTILE}", [step(), step("failed")], notes=[HOSTILE, f"Saved {HOSTILE}"]),
        "finding_card": messages.finding_card(request(command="hunt-key"), finding),
        "finding_line": messages.finding_line(finding),
        "request_button_blocks": messages.request_button_blocks(request(command="hunt-key"), finding),
        "audit_trail": messages.audit_trail(f"IR-1 {HOSTILE}", [record], (7, "f" * 64), 7),
        "memory_progress": messages.memory_progress(request(command="memory"), rows),
        "image_progress": messages.image_progress(request(command="image"), rows | {f"moving {HOSTILE}": {"state": HOSTILE, "done": 1, "expected": 2, "rate": 1.0}}),
        "transfer_progress": messages.transfer_progress(request(command="image"), rows, "Disk imaging", ":floppy_disk:", "image"),
        "incident_card": messages.incident_card(incident, summary, (7, "f" * 64)),
    }
    for state in messages.STATE_HEADINGS:
        out[f"approval_card:{state}"] = messages.approval_card(pending(state))
    return out


def test_every_message_builder_is_covered():
    """A new builder must be added here too: this test is only as good as its list."""
    # Not fed here: helpers that show no outside text, or only through a builder that is.
    helpers = ("escape", "human_size", "step_lines", "command_line", "consequences", "headline", "fit", "request_button", "place", "short",
               "shorten_digests", "outcome_counts", "finding_buttons")
    builders = {name for module in (messages, threads) for name, f in inspect.getmembers(module, inspect.isfunction)
                if f.__module__ == module.__name__ and not name.startswith("_") and name not in helpers}
    covered = {name.split(":")[0] for name in built()} | {"finding_alert"}  # finding cards of GuardDuty/Security Hub: tests/test_findings.py
    assert builders <= covered, f"not fed hostile strings: {sorted(builders - covered)}"


@pytest.mark.parametrize("name", sorted(built()))
def test_hostile_strings_reach_slack_as_text_in_every_message(name):
    payload = json.dumps(built()[name])
    for markup in MARKUP:
        assert markup not in payload, f"{name} lets {markup!r} through"
    assert "&lt;!channel&gt;" in payload  # shown, as the characters it is


# -- command texts: whatever a responder (or a stolen Slack session) types after /ir ----------------------------

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import actions as _actions  # noqa: E402

WORDS = (*_actions.REGISTRY, "declare", "close", "status", "report", "audit", "help", "--region", "us-east-1", "xx-nowhere-9",
         "--dry-run", "--delete", "--stop", "--since", "2026-01-01", "--severity", "--summary", "--copy-to-kms", "alias/k",
         "i-0123456789abcdef0", "AKIAIOSFODNN7EXAMPLE", "ec2-user@10.0.0.1:22", HOSTILE, "<!here>", "<@U0EVIL>", "&", "`", "*", "\n")


@pytest.fixture
def bot(irbot_env):
    from slack_bolt.request import BoltRequest

    from bot.app import create_app
    from core.queues import connect
    from core.settings import load
    from tests.helpers import signed_headers, slash_command

    app = create_app(load(os.environ, "serve"), connect(irbot_env["REDIS_URL"]))

    def send(text: str):
        body = slash_command(text)
        return app.dispatch(BoltRequest(body=body, headers={k.lower(): [v] for k, v in signed_headers(body).items()}))

    return send


@settings(max_examples=1500, deadline=None, derandomize=True, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.lists(st.one_of(st.sampled_from(WORDS), st.text(max_size=12)), max_size=7).map(" ".join))
def test_any_command_text_gets_a_sentence_and_nothing_it_says_reaches_slack_as_markup(bot, text):
    answer = bot(text)
    assert answer.status == 200
    if not text.strip():  # `/ir` alone: the command form opens (tests/test_help.py), nothing is said
        assert answer.body == ""
        return
    reply = json.loads(answer.body)["text"]
    assert reply.strip()
    for markup in ("<!channel>", "<!here>", "<https://evil", "<@U0EVIL>", "<#C0EVIL>", "<!subteam"):
        assert markup not in reply, (text, reply)
