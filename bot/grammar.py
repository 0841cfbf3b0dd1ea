"""The /ir grammar: one parser for every command, and sentences for every mistake."""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from datetime import date, datetime, timezone

import actions
from actions import targets as target_rules  # not `targets`: parse() has a list of that name
from actions.accounts import partition
from actions.registry import ACCOUNT, REGION, TARGETS, Option
from core.incidents import SEVERITIES

MAX_LENGTH = 1000

USER = r"[a-z_][a-z0-9_.-]{0,31}"
HOSTNAME = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*"
SSH_TARGET = re.compile(rf"^(?:(?P<user>{USER})@)?(?P<host>{HOSTNAME}|\[[0-9A-Fa-f:.]+\])(?::(?P<port>\d{{1,5}}))?$")

# Slack clients (and phones) turn "--" into a dash; accept what people actually send.
DASHES = {"\u2014": "--", "\u2013": "--", "\u2212": "-"}


class UsageError(Exception):
    """A mistake in a command; ``str(error)`` says what was wrong and how to write it."""


@dataclass(frozen=True)
class Spec:
    name: str
    summary: str
    target: str | None = None  # "instance", "access-key", "memory-target", "title", "command"
    many: bool = False
    options: tuple[Option, ...] = ()
    optional: bool = False  # the target may be left out

    @property
    def usage(self) -> str:
        parts = [f"/ir {self.name}"]
        if self.target:
            word = f"<{TARGET_WORDS[self.target]}>" + ("..." if self.many or self.target in ("title", "text") else "")
            parts.append(f"[{word}]" if self.optional else word)
        parts += [f"[{o.name}{' ' + o.takes if o.takes else ''}]" for o in self.options]
        return " ".join(parts)


# The bot's own kinds of argument: an incident's title, a person, a severity, free text (an update), a command (help).
TARGET_WORDS = {kind: word for kind, (word, _) in TARGETS.items()} | {"title": "title", "user": "person", "severity": "low|medium|high|critical",
                                                                     "text": "text", "command": "command"}
TARGET_EXAMPLES = {kind: example for kind, (_, example) in TARGETS.items()} | {
    "title": "Crypto miner on web-1", "user": "U0123ABCDEF", "severity": "high", "text": "web-1 is isolated; no data left the VPC",
    "command": "collect"}
# A person as Slack sends a mention (<@U…> or <@U…|name>), or their member ID as typed.
MENTION = re.compile(r"^<@(?P<id>[UW][A-Z0-9]{2,20})(?:\|[^>]*)?>$|^(?P<bare>[UW][A-Z0-9]{2,20})$")
UPDATE_LENGTH = 900
# What each option does, for `/ir help <command>`; a flag without an entry here is explained by its own `says`.
OPTION_HELP = {
    "--region": "the AWS region to act in (default: the worker's AWS_REGION)",
    "--account": "the 12-digit AWS account to act in (default: IR_DEFAULT_ACCOUNT, else irbot's own)",
    "--dry-run": "work out and show the plan, change nothing (so no approval is needed)",
    "--since": "how far back to look, a date (default: 30 days ago)",
    "--accounts": "search these accounts (comma-separated), or `all` the accounts irbot may act in",
    "--region R|all": "the AWS region to check (default: the worker's AWS_REGION), or `all`: every enabled region",
    "--account ACCOUNT|all": "the 12-digit AWS account to check (default: IR_DEFAULT_ACCOUNT, else irbot's own), or `all`: every account irbot may act in",
    "--copy-to-kms": "also copy each snapshot, encrypted with this KMS key (key ID, ARN or alias/NAME)",
    "--delete": "delete the key after deactivating it: it can't be made active again",
    "--stop": "stop the instance at the end (never after a failed memory capture)",
    "--public": "reach instances at their public IP address, not their private one",
    "--severity": "the incident's severity (default: medium)",
    "--summary": "a closing summary: the rest of the line",
}
# What an example adds after the target, where the target alone shows too little.
EXAMPLE_TAILS = {"declare": "--severity high", "close": "--summary web-1 isolated and imaged", "hunt-key": "--since 2026-11-01",
                 "memory": "ec2-user@10.0.1.5:22"}
SHARE = Option("--share")  # an answer shown to the channel instead of to the asker alone


def _action_spec(action: actions.ActionSpec) -> Spec:
    return Spec(action.name, action.summary[:1].lower() + action.summary[1:].rstrip("."), action.target, action.many, action.options)


# The bot's own commands, about the incident rather than AWS; every AWS command comes from the registry.
SPECS: dict[str, Spec] = {
    s.name: s
    for s in (
        Spec("help", "list the commands, or explain one", "command", optional=True),
        *(_action_spec(a) for a in actions.REGISTRY.values()),
        Spec("declare", "declare an incident: its own channel, with a pinned card that keeps itself up to date", "title",
             options=(Option("--severity", "low|medium|high|critical", "severity"),)),
        Spec("status", "show this incident's card (to you alone; `--share`: to the channel)", options=(SHARE,)),
        Spec("audit", "show this incident's audit trail (to you alone; `--share`: to the channel)", options=(SHARE,)),
        Spec("report", "build the incident report (timeline, actions, evidence, approvals) and upload it here"),
        Spec("close", "close this incident; requests still waiting for approval are cancelled",
             options=(Option("--summary", "TEXT", "text", rest=True),)),
        Spec("reopen", "open this closed incident again, so it takes new work"),
        Spec("commander", "make someone this incident's commander", "user"),
        Spec("severity", "change this incident's severity: low, medium, high or critical", "severity"),
        Spec("update", "post an update on this incident here (and to IR_UPDATES_CHANNEL when set), kept in its timeline", "text"),
    )
}


@dataclass(frozen=True)
class Command:
    name: str
    targets: tuple[str, ...] = ()
    options: dict = field(default_factory=dict)

    @property
    def spec(self) -> Spec:
        return SPECS[self.name]


def help_text(available=frozenset(SPECS), gated=frozenset()) -> str:
    lines = ["*irbot* — AWS incident response from this channel. Commands:"]
    for spec in SPECS.values():
        soon = "" if spec.name in available else " _(not available yet)_"
        approval = " _(needs approval by a second person, except with --dry-run)_" if spec.name in gated else ""
        lines.append(f"• `{spec.usage}` — {spec.summary}{approval}{soon}")
    lines.append("Targets: an instance ID like `i-0123456789abcdef0`, an access key ID like `AKIAIOSFODNN7EXAMPLE`, or for memory `user@host[:port]`.")
    lines.append("`--region R` and `--account ACCOUNT` work on every AWS command; without them the worker's default region and account are used.")
    lines.append("`/ir help <command>` explains one command, with an example; `/ir` alone opens a form to pick a command and fill it in.")
    return "\n".join(lines)


def example(spec: Spec) -> str:
    """A command line that works, for help and for sentences about mistakes."""
    words = [f"/ir {spec.name}"]
    if spec.target:
        words.append(TARGET_EXAMPLES[spec.target].split(" or ")[0])
    if spec.name in EXAMPLE_TAILS:
        words.append(EXAMPLE_TAILS[spec.name])
    return " ".join(words)


def explain(name: str, gated=frozenset()) -> str:
    """`/ir help <command>`: what the command does, its usage, each option, and an example."""
    spec = SPECS[name]
    lines = [f"*`/ir {spec.name}`* — {spec.summary}.", f"Usage: `{spec.usage}`"]
    if spec.name in gated:
        lines.append("It needs approval by a second person (an approver other than you), except with `--dry-run`.")
    if spec.target:
        lines.append(f"`<{TARGET_WORDS[spec.target]}>`: {TARGET_HINTS[spec.target]}")
    for option in spec.options:
        said = OPTION_HELP.get(f"{option.name} {option.takes}") or OPTION_HELP.get(option.name) or option.says.format(value=option.takes or "")
        lines.append(f"• `{option.name}{' ' + option.takes if option.takes else ''}` — {said}")
    lines.append(f"Example: `{example(spec)}`")
    return "\n".join(lines)


TARGET_HINTS = {
    "instance": "an EC2 instance ID, like `i-0123456789abcdef0`",
    "access-key": "an AWS access key ID, like `AKIAIOSFODNN7EXAMPLE` (a user's key) or `ASIA…` (a temporary one)",
    "memory-target": "one or more hosts: an instance ID (`i-0123456789abcdef0`) or `user@host[:port]` (`ec2-user@10.0.1.5:22`)",
    "disk": "one or more snapshot IDs (`snap-0123456789abcdef0`) or instance IDs (`i-0123456789abcdef0`: the snapshots this incident took of its volumes)",
    "title": "the incident's title, in words (under 80 characters)",
    "command": "a command's name, like `collect`",
    "user": "a person: mention them (`@name`, sent by Slack as a mention) or give their member ID, like `U0123ABCDEF`",
    "severity": "low, medium, high or critical",
    "text": "the update, in words: the rest of the line",
}


def parse(text: str) -> Command:
    """Parse the text after ``/ir``; raises UsageError with the sentence to show."""
    if len(text) > MAX_LENGTH:
        raise UsageError(f"That command is {len(text)} characters long; /ir commands are short, like `/ir collect i-0123456789abcdef0`. See `/ir help`.")
    as_typed = text
    for dash, plain in DASHES.items():
        text = text.replace(dash, plain)
    words = text.split()
    if not words:
        raise UsageError("Tell irbot what to do, e.g. `/ir collect i-0123456789abcdef0`; `/ir help` lists every command.")

    name = words[0].lower()
    spec = SPECS.get(name)
    if spec is None:
        close = difflib.get_close_matches(name, SPECS, n=1, cutoff=0.6)
        hint = f" Did you mean `/ir {close[0]}`?" if close else ""
        raise UsageError(f"`{_show(words[0])}` is not an /ir command.{hint} `/ir help` lists them all.")

    if spec.target == "text":
        return Command(name, (_free_text(spec, as_typed),))
    targets: list[str] = []
    options: dict = {}
    by_name = {o.name: o for o in spec.options}
    rest = iter(words[1:])
    for word in rest:
        if word.startswith("-"):
            flag, _, inline = word.partition("=")
            option = by_name.get(flag.lower())
            if option is None:
                allowed = ", ".join(f"`{o.name}`" for o in spec.options) or "none"
                raise UsageError(f"`/ir {name}` has no option `{_show(flag)}` (its options: {allowed}). Usage: `{spec.usage}`.")
            if option.key in options:
                raise UsageError(f"`{option.name}` is given twice. Usage: `{spec.usage}`.")
            if option.takes is None:
                if inline:
                    raise UsageError(f"`{option.name}` takes no value. Usage: `{spec.usage}`.")
                options[option.key] = True
                continue
            if option.rest:
                value = " ".join(([inline] if inline else []) + list(rest))
            else:
                value = inline or next(rest, None)
            if not value or value.startswith("--"):
                raise UsageError(f"`{option.name}` needs a value: `{option.name} {option.takes}`. Usage: `{spec.usage}`.")
            if option.every and value.lower() == "all":
                options[option.every] = "all"  # the option's own key stays free for the one place the request starts in
                continue
            options[option.key] = _option_value(option, value)
        elif spec.target == "title":
            targets.append(word)
        else:
            targets.append(_target(spec, word))

    if spec.target == "title" and targets:
        title = " ".join(targets)
        if len(title) > 80:
            raise UsageError(f"The title is {len(title)} characters long; keep it under 80, e.g. `/ir declare Crypto miner on web-1 --severity high`.")
        targets = [title]
    if spec.target is None and targets:
        raise UsageError(f"`/ir {name}` takes no arguments. Usage: `{spec.usage}`.")
    if spec.target and not targets and not spec.optional:
        raise UsageError(f"`/ir {name}` needs {_article(TARGET_WORDS[spec.target])}, e.g. `/ir {name} {TARGET_EXAMPLES[spec.target].split(' or ')[0]}`. Usage: `{spec.usage}`.")
    if spec.target and not spec.many and len(targets) > 1:
        raise UsageError(f"`/ir {name}` takes one {TARGET_WORDS[spec.target]} at a time. Usage: `{spec.usage}`.")
    if len(set(targets)) != len(targets):
        raise UsageError(f"A target is named twice. Usage: `{spec.usage}`.")
    return Command(name, tuple(targets), options)


PARTITION_NAMES = {"aws": "AWS", "aws-cn": "AWS China", "aws-us-gov": "AWS GovCloud (US)"}


def check_partition(command: Command, home_region: str | None) -> None:
    """A region of another partition than irbot's own (its AWS_REGION's) can't be reached with irbot's credentials:
    said now, as a sentence, rather than "not found" from the worker later."""
    asked = command.options.get("region")
    if not asked or not home_region or partition(asked) == partition(home_region):
        return
    theirs, ours = partition(asked), partition(home_region)
    raise UsageError(f"`--region {asked}` is in {PARTITION_NAMES.get(theirs, theirs)} ({theirs}), but irbot's credentials are for "
                     f"{PARTITION_NAMES.get(ours, ours)} ({ours}, region {home_region}), which can't reach it. Give a region of {ours}, "
                     f"e.g. `--region {home_region}`, or ask in an irbot that runs in {theirs}.")


def button_command(name: str, target, region, account=None) -> Command:
    """The command a card's button asks for, built from its parts: each part meets the rule it would meet typed,
    and none is spliced into command text, so a value can't bring a word or an option of its own."""
    spec = SPECS.get(name) if isinstance(name, str) else None
    if spec is None or spec.target not in target_rules.BUTTON_TARGETS:
        raise UsageError("This button asks for no command a card offers.")
    if not isinstance(target, str) or not all(part is None or isinstance(part, str) for part in (region, account)):
        raise UsageError("This button's value is not one irbot drew.")
    options = {"region": _option_value(REGION, region)} if region is not None else {}
    if account is not None:
        options["account"] = _option_value(ACCOUNT, account)
    return Command(spec.name, (_target(spec, target),), options)


def _free_text(spec: Spec, as_typed: str) -> str:
    """Everything after the command's name, as typed (dashes, options-looking words and line breaks kept)."""
    parts = as_typed.strip().split(None, 1)
    text = parts[1].strip() if len(parts) > 1 else ""
    if not text:
        raise UsageError(f"`/ir {spec.name}` needs the {TARGET_WORDS[spec.target]} to post, e.g. `/ir {spec.name} {TARGET_EXAMPLES[spec.target]}`.")
    if len(text) > UPDATE_LENGTH:
        raise UsageError(f"That update is {len(text)} characters long; keep it under {UPDATE_LENGTH} (the report and the evidence hold the detail).")
    return text


def _target(spec: Spec, word: str) -> str:
    if spec.target is None:
        raise UsageError(f"`/ir {spec.name}` takes no arguments. Usage: `{spec.usage}`.")
    if spec.target == "user":
        match = MENTION.match(word)
        if match:
            return match["id"] or match["bare"]
        if word.startswith("@"):
            # The slash command reaches irbot unescaped (manifest.yml: should_escape false), so a name is only text.
            raise UsageError(f"`{_show(word)}` reached irbot as a name, which it can't look up: give the person's member ID "
                             "(their Slack profile → ⋮ → Copy member ID), e.g. `/ir commander U0123ABCDEF`.")
        raise UsageError(f"`{_show(word)}` is not a Slack person: give their member ID, e.g. `/ir commander U0123ABCDEF`. Usage: `{spec.usage}`.")
    if spec.target == "severity":
        if word.lower() not in SEVERITIES:
            raise UsageError(f"`{_show(word)}` is not a severity: use one of {', '.join(SEVERITIES)}, e.g. `/ir severity high`.")
        return word.lower()
    if spec.target == "command":
        if word.lower() in SPECS:
            return word.lower()
        close = difflib.get_close_matches(word.lower(), SPECS, n=1, cutoff=0.6)
        hint = f" Did you mean `/ir help {close[0]}`?" if close else ""
        raise UsageError(f"`{_show(word)}` is not an /ir command.{hint} `/ir help` lists them all.")
    if spec.target in ("instance", "memory-target", "disk") and target_rules.instance_id(word):
        return target_rules.instance_id(word)
    if spec.target == "instance":
        raise UsageError(
            f"`{_show(word)}` is not an EC2 instance ID: it should look like `i-0123456789abcdef0` (i- and 8 or 17 hex digits). Usage: `{spec.usage}`."
        )
    if spec.target == "disk":
        if target_rules.snapshot_id(word):
            return target_rules.snapshot_id(word)
        raise UsageError(f"`{_show(word)}` is not a snapshot or instance ID: give `snap-0123456789abcdef0` or `i-0123456789abcdef0`. Usage: `{spec.usage}`.")
    if spec.target == "access-key":
        if target_rules.access_key_id(word):
            return target_rules.access_key_id(word)
        raise UsageError(
            f"`{_show(word)}` is not an AWS access key ID: it should be 20 characters starting with AKIA (a user's key) or ASIA (a temporary key), like `AKIAIOSFODNN7EXAMPLE`. Usage: `{spec.usage}`."
        )
    match = SSH_TARGET.match(word)
    if match and (match["port"] is None or 0 < int(match["port"]) < 65536) and not word.lower().startswith("i-"):
        return word
    raise UsageError(
        f"`{_show(word)}` is not a memory target: give an instance ID (`i-0123456789abcdef0`) or `user@host[:port]` (`ec2-user@10.0.1.5:22`). Usage: `{spec.usage}`."
    )


def _option_value(option: Option, value: str) -> str:
    if option.kind == "region":
        region = target_rules.region(value)
        if region is None:
            close = sorted(difflib.get_close_matches(value.lower(), target_rules.known_regions(), n=2, cutoff=0.75))
            hint = f" Did you mean {' or '.join(f'`{c}`' for c in close)}?" if close else ""
            raise UsageError(f"`{_show(value)}` is not an AWS region.{hint} Write it like `--region us-east-1`.")
        return region
    if option.kind == "account":
        if not re.fullmatch(r"\d{12}", value):
            raise UsageError(f"`{_show(value)}` is not an AWS account ID: give its 12 digits, e.g. `--account 222222222222`.")
        return value
    if option.kind == "accounts":
        listed = [a.strip() for a in value.split(",") if a.strip()]
        if value.lower() == "all":
            return "all"
        if not listed or any(not re.fullmatch(r"\d{12}", a) for a in listed):
            raise UsageError(f"`{_show(value)}` is not a list of accounts: write `--accounts all` or `--accounts 111111111111,222222222222`.")
        return ",".join(dict.fromkeys(listed))
    if option.kind == "date":
        try:
            day = date.fromisoformat(value)
        except ValueError:
            raise UsageError(f"`{_show(value)}` is not a date: write `--since YYYY-MM-DD`, e.g. `--since 2026-11-01`.") from None
        if day > datetime.now(timezone.utc).date():
            raise UsageError(f"`--since {day}` is in the future: give the day the key may have leaked.")
        return day.isoformat()
    if option.kind == "severity":
        if value.lower() not in SEVERITIES:
            raise UsageError(f"`{_show(value)}` is not a severity: use one of {', '.join(SEVERITIES)}, e.g. `--severity high`.")
        return value.lower()
    if option.kind == "text":
        return value.strip()[:2000]
    if option.kind == "kms-key":
        if not re.match(r"^(arn:aws[a-z-]*:kms:[a-z0-9-]+:\d{12}:(key|alias)/[A-Za-z0-9/_-]+|alias/[A-Za-z0-9/_-]+|[0-9a-f-]{36})$", value):
            raise UsageError(f"`{_show(value)}` is not a KMS key: give a key ID, a key ARN or `alias/NAME`.")
        return value
    return value


def _article(noun: str) -> str:
    return ("an " if noun[0] in "aeiou" else "a ") + noun


def _show(word: str) -> str:
    """User input echoed back: short, and unable to ping or link."""
    word = word if len(word) <= 40 else word[:40] + "…"
    return word.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("`", "'")
