"""The /ir grammar: every command parses, every mistake gets a sentence that says how to write it."""

from __future__ import annotations

import pytest

from bot.grammar import SPECS, UsageError, help_text, parse

INSTANCE = "i-0123456789abcdef0"
KEY = "AKIAIOSFODNN7EXAMPLE"


@pytest.mark.parametrize(
    "text, name, targets, options",
    [
        ("help", "help", (), {}),
        (f"collect {INSTANCE}", "collect", (INSTANCE,), {}),
        (f"COLLECT I-0123456789ABCDEF0 --region EU-WEST-1", "collect", (INSTANCE,), {"region": "eu-west-1"}),
        (f"collect i-0123abcd --region=ap-southeast-2", "collect", ("i-0123abcd",), {"region": "ap-southeast-2"}),
        (f"isolate {INSTANCE} --dry-run", "isolate", (INSTANCE,), {"dry_run": True}),
        (f"isolate {INSTANCE} \u2014dry-run", "isolate", (INSTANCE,), {"dry_run": True}),
        (f"release {INSTANCE}", "release", (INSTANCE,), {}),
        (f"snapshot {INSTANCE} --copy-to-kms alias/forensics", "snapshot", (INSTANCE,), {"copy_to_kms": "alias/forensics"}),
        (f"stop {INSTANCE} --region us-gov-west-1", "stop", (INSTANCE,), {"region": "us-gov-west-1"}),
        (f"compromise {INSTANCE} --stop", "compromise", (INSTANCE,), {"stop": True}),
        (f"revoke-key {KEY.lower()} --delete", "revoke-key", (KEY,), {"delete": True}),
        (f"hunt-key {KEY} --since 2026-01-31", "hunt-key", (KEY,), {"since": "2026-01-31"}),
        (f"memory {INSTANCE} ec2-user@10.0.1.5:2222 forensic@host.example.com --public", "memory",
         (INSTANCE, "ec2-user@10.0.1.5:2222", "forensic@host.example.com"), {"public": True}),
        ("audit", "audit", (), {}),
        ("  status  ", "status", (), {}),
    ],
)
def test_every_command_of_the_grammar_parses(text, name, targets, options):
    command = parse(text)
    assert (command.name, command.targets, command.options) == (name, targets, options)


@pytest.mark.parametrize(
    "text, sentence",
    [
        ("", "Tell irbot what to do, e.g. `/ir collect i-0123456789abcdef0`"),
        ("isolat i-0123abcd", "`isolat` is not an /ir command. Did you mean `/ir isolate`?"),
        ("collect", "`/ir collect` needs an instance-id, e.g. `/ir collect i-0123456789abcdef0`"),
        ("collect i-xyz", "`i-xyz` is not an EC2 instance ID: it should look like `i-0123456789abcdef0`"),
        (f"collect {INSTANCE} {INSTANCE[:-1]}1", "`/ir collect` takes one instance-id at a time."),
        (f"collect {INSTANCE} --dry-run", "`/ir collect` has no option `--dry-run` (its options: `--region`, `--account`)."),
        (f"collect {INSTANCE} --region", "`--region` needs a value: `--region R`."),
        (f"collect {INSTANCE} --region us-east-1 --region us-west-2", "`--region` is given twice."),
        (f"collect {INSTANCE} --region us-est-1", "`us-est-1` is not an AWS region. Did you mean `us-east-1` or `us-west-1`?"),
        (f"isolate {INSTANCE} --dry-run=yes", "`--dry-run` takes no value."),
        ("revoke-key AKIA123", "`AKIA123` is not an AWS access key ID: it should be 20 characters starting with AKIA"),
        (f"hunt-key {KEY} --since yesterday", "`yesterday` is not a date: write `--since YYYY-MM-DD`"),
        (f"hunt-key {KEY} --since 2999-01-01", "`--since 2999-01-01` is in the future"),
        ("memory root@", "`root@` is not a memory target"),
        ("memory host:99999", "`host:99999` is not a memory target"),
        (f"memory {INSTANCE} {INSTANCE}", "A target is named twice."),
        ("audit everything", "`/ir audit` takes no arguments."),
        (f"snapshot {INSTANCE} --copy-to-kms not a key", "`not` is not a KMS key"),
        ("x" * 1001, "That command is 1001 characters long"),
        ("<!channel> now", "`&lt;!channel&gt;` is not an /ir command."),
    ],
)
def test_mistakes_get_a_sentence_saying_what_was_wrong_and_how_to_write_it(text, sentence):
    with pytest.raises(UsageError) as raised:
        parse(text)
    assert str(raised.value).startswith(sentence)


def test_help_names_every_command_with_its_usage():
    text = help_text()
    for spec in SPECS.values():
        assert f"`{spec.usage}`" in text
