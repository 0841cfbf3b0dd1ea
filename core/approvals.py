"""Approval state: the two-person rule as a state machine in Redis.

A request that changes AWS (or runs code on a host) waits here until enough
approvers other than the requester approve it. Every transition is one atomic
Lua script, so a replayed click or two approvers clicking together can move a
request only once, and exactly one execution can start.

    planning → pending → approved → running → finished | failed
                   ↘ denied | cancelled | expired
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Callable, Iterable

from redis import Redis

from core.audit import AuditTrail
from core.request import CommandRequest

PLANNING, PENDING, APPROVED, RUNNING = "planning", "pending", "approved", "running"
FINISHED, FAILED, DENIED, CANCELLED, EXPIRED = "finished", "failed", "denied", "cancelled", "expired"
OPEN_STATES = (PLANNING, PENDING, APPROVED, RUNNING)
ENDED = frozenset({FINISHED, FAILED, DENIED, CANCELLED, EXPIRED})
SELF_APPROVAL = "You asked for this, so you can't approve it: the two-person rule needs an approver other than the requester."
KEEP_SECONDS = 90 * 24 * 3600  # a request's record outlives its incident's evidence links


def request_key(request_id: str) -> str:
    return f"irbot:request:{request_id}"


def approvals_key(request_id: str) -> str:
    return f"irbot:request:{request_id}:approvals"


# Moves a request from one of ARGV[1] (comma-separated states) to ARGV[2], setting the
# field/value pairs that follow. A pending request past its expiry becomes expired instead.
TRANSITION = """
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return {'missing', ''} end
local now = redis.call('TIME')
now = tonumber(now[1]) + tonumber(now[2]) / 1000000
if state == 'pending' and ARGV[2] ~= 'expired' and tonumber(redis.call('HGET', KEYS[1], 'expires_at')) <= now then
  redis.call('HSET', KEYS[1], 'state', 'expired', 'ended_at', tostring(now), 'ended_by', 'irbot')
  return {'refused', 'expired'}
end
if string.find(',' .. ARGV[1] .. ',', ',' .. state .. ',', 1, true) == nil then return {'refused', state} end
redis.call('HSET', KEYS[1], 'state', ARGV[2], 'updated_at', tostring(now))
for i = 3, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
return {'ok', state}
"""

# Counts ARGV[1]'s approval of a pending request; approved once the quorum is reached.
APPROVE = """
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return {'missing', ''} end
local now = redis.call('TIME')
now = tonumber(now[1]) + tonumber(now[2]) / 1000000
if state == 'pending' and tonumber(redis.call('HGET', KEYS[1], 'expires_at')) <= now then
  redis.call('HSET', KEYS[1], 'state', 'expired', 'ended_at', tostring(now), 'ended_by', 'irbot')
  return {'refused', 'expired'}
end
if state ~= 'pending' then return {'refused', state} end
if redis.call('HGET', KEYS[1], 'requester') == ARGV[1] then return {'self', state} end
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1 then return {'again', state} end
redis.call('HSET', KEYS[2], ARGV[1], tostring(now))
redis.call('EXPIRE', KEYS[2], tonumber(ARGV[2]))
if redis.call('HLEN', KEYS[2]) >= tonumber(redis.call('HGET', KEYS[1], 'quorum')) then
  redis.call('HSET', KEYS[1], 'state', 'approved', 'approved_at', tostring(now), 'updated_at', tostring(now))
  return {'approved', 'pending'}
end
return {'counted', 'pending'}
"""


def waiting_for_approval(connection: Redis) -> int:
    """How many requests wait for an approval now: plan shown, buttons live, window still open (on Redis's clock)."""
    keys = [key for key in connection.scan_iter("irbot:request:*", count=1000) if key.count(b":") == 2]
    with connection.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.hmget(key, "state", "expires_at")
        found = pipe.execute()
    seconds, micros = connection.time()
    now = seconds + micros / 1_000_000
    return sum(1 for state, expires_at in found if state == PENDING.encode() and expires_at and float(expires_at) > now)


@dataclass
class PendingRequest:
    """A gated request as stored in Redis."""

    request: CommandRequest
    state: str
    quorum: int
    expires_at: float
    approvals: dict[str, float] = field(default_factory=dict)  # approver → when
    plan: list[dict] = field(default_factory=list)
    steps: list[dict] = field(default_factory=list)
    message_ts: str = ""
    detail_ts: str = ""  # the message in the card's thread with the plan, then the steps as they finish
    ended_by: str = ""
    ended_at: float | None = None
    note: str = ""

    @property
    def id(self) -> str:
        return self.request.id

    @property
    def requester(self) -> str:
        return self.request.user_id

    @property
    def approvers(self) -> list[str]:
        return sorted(self.approvals, key=self.approvals.get)


@dataclass(frozen=True)
class Decision:
    ok: bool
    state: str  # the request's state after the call
    reason: str = ""  # for a refusal: the sentence to show the person who clicked
    request: PendingRequest | None = None


class ApprovalBook:
    def __init__(
        self,
        connection: Redis,
        audit: AuditTrail,
        *,
        responders: Iterable[str],
        approvers: Iterable[str] = (),
        group_members: Callable[[], Iterable[str]] | None = None,
        responder_members: Callable[[], Iterable[str]] | None = None,
        quorum: int = 1,
        expiry_seconds: int = 1800,
    ):
        self.connection = connection
        self.audit = audit
        self.responders = frozenset(responders)
        self.approvers = frozenset(approvers)
        self.group_members = group_members
        self.responder_members = responder_members
        self.quorum = quorum
        self.expiry_seconds = expiry_seconds
        self._transition = connection.register_script(TRANSITION)
        self._approve = connection.register_script(APPROVE)

    # -- reading ----------------------------------------------------------------------

    def now(self) -> float:
        """Redis's clock: every time irbot writes or compares is on the one clock, whatever the hosts' clocks say."""
        seconds, micros = self.connection.time()
        return seconds + micros / 1_000_000

    def get(self, request_id: str) -> PendingRequest | None:
        data = {k.decode(): v.decode() for k, v in self.connection.hgetall(request_key(request_id)).items()}
        if not data:
            return None
        approvals = {k.decode(): float(v) for k, v in self.connection.hgetall(approvals_key(request_id)).items()}
        return PendingRequest(
            request=CommandRequest.from_dict(json.loads(data["request"])),
            state=data["state"],
            quorum=int(data["quorum"]),
            expires_at=float(data["expires_at"]),
            approvals=approvals,
            plan=json.loads(data.get("plan") or "[]"),
            steps=json.loads(data.get("steps") or "[]"),
            message_ts=data.get("message_ts", ""),
            detail_ts=data.get("detail_ts", ""),
            ended_by=data.get("ended_by", ""),
            ended_at=float(data["ended_at"]) if data.get("ended_at") else None,
            note=data.get("note", ""),
        )

    def open_requests(self) -> list[PendingRequest]:
        """Every request not ended yet, oldest first."""
        found = (self.get(key.decode().rsplit(":", 1)[-1]) for key in self.connection.scan_iter("irbot:request:*") if key.count(b":") == 2)
        return sorted((p for p in found if p and p.state in OPEN_STATES), key=lambda p: p.request.received_at)

    def overdue(self) -> list[PendingRequest]:
        """Requests still waiting for a plan or an approval after their window closed."""
        now = self.now()
        return [p for p in self.open_requests() if p.state in (PLANNING, PENDING) and p.expires_at <= now]

    def is_responder(self, user_id: str) -> bool:
        """In IR_RESPONDERS, or a member of the IR_RESPONDER_GROUP user group (read live, cached briefly)."""
        if user_id in self.responders:
            return True
        return bool(self.responder_members) and user_id in set(self.responder_members())

    def approvers_now(self) -> frozenset[str]:
        """Everyone who may approve at this moment: IR_APPROVERS and the IR_APPROVER_GROUP's members."""
        return self.approvers | frozenset(self.group_members() if self.group_members else ())

    def responders_now(self) -> frozenset[str]:
        return self.responders | frozenset(self.responder_members() if self.responder_members else ())

    def may_approve(self, user_id: str) -> bool:
        if user_id in self.approvers:
            return True
        return bool(self.group_members) and user_id in set(self.group_members())

    # -- transitions ------------------------------------------------------------------

    def open(self, request: CommandRequest) -> Decision:
        """Record a new gated request, waiting for its plan."""
        if not self.is_responder(request.user_id):
            return Decision(False, "", "You are not on irbot's responder list (IR_RESPONDERS or IR_RESPONDER_GROUP), so you can't ask for this.")
        key = request_key(request.id)
        created = self.connection.hsetnx(key, "state", PLANNING)
        if not created:
            return Decision(False, "", f"Request {request.id} exists already.")
        self.connection.hset(
            key,
            mapping={
                "request": json.dumps(request.to_dict()),
                "requester": request.user_id,
                "quorum": self.quorum,
                "expires_at": self.now() + self.expiry_seconds,
                "created_at": self.now(),
            },
        )
        self.connection.expire(key, KEEP_SECONDS)
        self._record(request, request.user_id, "request.opened", {"quorum": self.quorum, "expires_in_seconds": self.expiry_seconds}, PLANNING)
        return Decision(True, PLANNING, request=self.get(request.id))

    def plan_ready(self, request_id: str, plan: list[dict], *, actor: str = "worker") -> Decision:
        """The dry-run plan is known; the request now waits for approvers."""
        expires_at = self.now() + self.expiry_seconds
        return self._move(request_id, [PLANNING], PENDING, actor, "request.pending",
                          fields={"plan": json.dumps(plan), "expires_at": expires_at},
                          params={"plan": [s.get("title", "") + ": " + s.get("detail", "") for s in plan]})

    def note_account(self, request_id: str, account: str) -> None:
        """The account the worker found the request acts in (a key's owner), so its card and records name it."""
        pending = self.get(request_id)
        if pending is not None and not pending.request.options.get("account"):
            request = pending.request.to_dict()
            request["options"] = {**request["options"], "account": account}
            self.connection.hset(request_key(request_id), "request", json.dumps(request))

    def attach_message(self, request_id: str, message_ts: str) -> None:
        """Where the request's card is, so every later change redraws it in place."""
        self.connection.hset(request_key(request_id), "message_ts", message_ts)

    def attach_detail(self, request_id: str, detail_ts: str) -> None:
        """Where the request's detail is (in its card's thread): the plan, then the steps, the notes and the seal."""
        self.connection.hset(request_key(request_id), "detail_ts", detail_ts)

    def plan_failed(self, request_id: str, reason: str, *, actor: str = "worker") -> Decision:
        return self._move(request_id, [PLANNING], FAILED, actor, "request.failed", fields={"note": reason, "ended_at": self.now(), "ended_by": "irbot"}, params={"reason": reason})

    def approve(self, request_id: str, user_id: str, *, break_glass: dict | None = None) -> Decision:
        """``break_glass``: the approval came from the command line (OS user, host, reason), recorded with it."""
        pending = self.get(request_id)
        if pending is None:
            return Decision(False, "", f"irbot has no request {request_id}.")
        if user_id == pending.requester:
            self._record(pending.request, user_id, "approval.refused", {"why": "self-approval"}, "refused")
            return Decision(False, pending.state, SELF_APPROVAL, pending)
        if not self.may_approve(user_id):
            self._record(pending.request, user_id, "approval.refused", {"why": "not an approver"}, "refused")
            # The ID as text: it is what the person must give whoever runs irbot to become an approver.
            you = f"you (user ID {user_id})" if re.fullmatch(r"[UW][A-Z0-9]{2,20}", user_id or "") else "you"
            return Decision(False, pending.state, f"Only irbot's approvers (IR_APPROVERS, or the IR_APPROVER_GROUP user group) can approve, and {you} are not one of them.", pending)
        verdict, state = (v.decode() for v in self._approve(keys=[request_key(request_id), approvals_key(request_id)], args=[user_id, KEEP_SECONDS]))
        pending = self.get(request_id)
        if verdict == "self":
            self._record(pending.request, user_id, "approval.refused", {"why": "self-approval"}, "refused")
            return Decision(False, pending.state, SELF_APPROVAL, pending)
        if verdict == "again":
            return Decision(False, pending.state, "You have approved this request already; it needs a different approver.", pending)
        if verdict in ("refused", "missing"):
            if state == EXPIRED and pending.ended_by == "irbot" and not self._audited(pending, "request.expired"):
                self._record(pending.request, "irbot", "request.expired", {}, EXPIRED)
            return Decision(False, pending.state, self._ended_sentence(pending, "approved"), pending)
        self._record(pending.request, user_id, "request.approved" if verdict == "approved" else "approval.counted",
                     {"approvals": len(pending.approvals), "quorum": pending.quorum, **({"approved_from": break_glass} if break_glass else {})},
                     verdict)
        return Decision(True, pending.state, request=pending)

    def deny(self, request_id: str, user_id: str) -> Decision:
        pending = self.get(request_id)
        if pending is None:
            return Decision(False, "", f"irbot has no request {request_id}.")
        if user_id != pending.requester and not self.may_approve(user_id):
            return Decision(False, pending.state, "Only irbot's approvers can deny a request; the requester can cancel it.", pending)
        if user_id == pending.requester:
            return self.cancel(request_id, user_id)
        return self._move(request_id, [PENDING, PLANNING], DENIED, user_id, "request.denied", fields={"ended_by": user_id, "ended_at": self.now()}, verb="denied")

    def cancel(self, request_id: str, user_id: str) -> Decision:
        pending = self.get(request_id)
        if pending is None:
            return Decision(False, "", f"irbot has no request {request_id}.")
        if user_id != pending.requester:
            return Decision(False, pending.state, f"Only <@{pending.requester}>, who asked for this, can cancel it.", pending)
        return self._move(request_id, [PENDING, PLANNING], CANCELLED, user_id, "request.cancelled", fields={"ended_by": user_id, "ended_at": self.now()}, verb="cancelled")

    def withdraw(self, request_id: str, user_id: str, why: str) -> Decision:
        """Cancel a request still waiting for its plan or its approval, for a reason other than its requester's
        change of mind: its incident was closed, so nothing may be approved into it."""
        return self._move(request_id, [PENDING, PLANNING], CANCELLED, user_id, "request.cancelled",
                          fields={"ended_by": user_id, "ended_at": self.now(), "note": why}, params={"why": why}, verb="cancelled")

    def expire(self, request_id: str) -> Decision:
        """Called when the expiry is due; a request already decided is left as it is."""
        pending = self.get(request_id)
        if pending is None:
            return Decision(False, "", f"irbot has no request {request_id}.")
        if pending.state in (PENDING, PLANNING) and pending.expires_at > self.now():
            return Decision(False, pending.state, "not due yet", pending)
        if pending.state == EXPIRED:
            if not self._audited(pending, "request.expired"):
                self._record(pending.request, "irbot", "request.expired", {}, EXPIRED)
            return Decision(True, EXPIRED, request=pending)
        return self._move(request_id, [PENDING, PLANNING], EXPIRED, "irbot", "request.expired", fields={"ended_by": "irbot", "ended_at": self.now()})

    def start(self, request_id: str, worker: str) -> Decision:
        """Approved → running, once. Re-checks the two-person rule before anything runs."""
        pending = self.get(request_id)
        if pending is None:
            return Decision(False, "", f"irbot has no request {request_id}.")
        # Whoever approved must still be an approver other than the requester: the listener
        # checked this at the click, and the worker checks again before anything runs.
        others = [a for a in pending.approvals if a != pending.requester and self.may_approve(a)]
        if pending.state == APPROVED and len(others) < pending.quorum:
            self._move(request_id, [APPROVED], FAILED, worker, "request.failed", fields={"note": "approvals do not satisfy the two-person rule", "ended_at": self.now(), "ended_by": worker})
            return Decision(False, FAILED, "The approvals on record do not satisfy the two-person rule; nothing was run.", pending)
        return self._move(request_id, [APPROVED], RUNNING, worker, "job.started", verb="started")

    def finish(self, request_id: str, worker: str, *, ok: bool, steps: list[dict], note: str = "") -> Decision:
        return self._move(request_id, [RUNNING], FINISHED if ok else FAILED, worker, "job.finished",
                          fields={"steps": json.dumps(steps), "note": note, "ended_at": self.now(), "ended_by": worker},
                          params={"ok": ok, "note": note})

    # -- helpers ----------------------------------------------------------------------

    def _move(self, request_id, sources, target, actor, audit_action, *, fields=None, params=None, verb="") -> Decision:
        args = [",".join(sources), target]
        for name, value in (fields or {}).items():
            args += [name, str(value)]
        verdict, before = (v.decode() for v in self._transition(keys=[request_key(request_id)], args=args))
        after = self.get(request_id)
        if verdict == "missing" or after is None:
            return Decision(False, "", f"irbot has no request {request_id}.")
        if verdict != "ok":
            if after.state == EXPIRED and not self._audited(after, "request.expired"):
                self._record(after.request, "irbot", "request.expired", {}, EXPIRED)
            return Decision(False, after.state, self._ended_sentence(after, verb or target), after)
        self._record(after.request, actor, audit_action, params or {}, target)
        return Decision(True, target, request=after)

    def _record(self, request: CommandRequest, actor: str, action: str, params: dict, outcome: str) -> None:
        self.audit.append(
            incident=request.incident or request.channel_id,
            actor=actor,
            action=action,
            target=" ".join(request.targets),
            params={"request": request.id, "command": request.command, "options": request.options,
                    **({"break_glass": request.break_glass} if request.break_glass else {}), **params},
            outcome=outcome,
        )

    def _audited(self, pending: PendingRequest, action: str) -> bool:
        return any(r["action"] == action and r["params"].get("request") == pending.id
                   for r in self.audit.for_incident(pending.request.incident or pending.request.channel_id))

    @staticmethod
    def _ended_sentence(pending: PendingRequest, verb: str) -> str:
        state = pending.state
        who = f" by <@{pending.ended_by}>" if pending.ended_by and pending.ended_by.startswith(("U", "W")) else ""
        if state == EXPIRED:
            return f"Request {pending.id} expired unapproved, so it can't be {verb}. Run the command again to ask anew."
        if state in (DENIED, CANCELLED):
            return f"Request {pending.id} was {state}{who}, so it can't be {verb}. Run the command again to ask anew."
        if state == APPROVED:
            return f"Request {pending.id} is approved already and about to run."
        if state == RUNNING:
            return f"Request {pending.id} is running already."
        if state in (FINISHED, FAILED):
            return f"Request {pending.id} has run already ({state})."
        if state == PLANNING:
            return f"Request {pending.id} is still being planned; try again in a moment."
        return f"Request {pending.id} is {state}, so it can't be {verb}."


def book_from_settings(settings, connection: Redis, group_members: Callable[[], Iterable[str]] | None = None,
                       audit: AuditTrail | None = None, responder_members: Callable[[], Iterable[str]] | None = None) -> ApprovalBook:
    """The approval book as configured; ``group_members`` and ``responder_members`` read the approver and
    responder groups (chat.directory)."""
    return ApprovalBook(
        connection,
        audit or AuditTrail(connection),
        responders=settings.responders,
        approvers=settings.approvers,
        group_members=group_members,
        responder_members=responder_members,
        quorum=settings.approval_quorum,
        expiry_seconds=settings.approval_expiry_seconds,
    )
