"""What an action's target and an AWS region look like: one set of rules for the typed /ir grammar,
the buttons drawn on cards and the clicks that come back from them.

Kept here, below the bot and the cards, so a value on a button is checked by the same rule as a
typed command: a card offers no button that the command itself would refuse.
"""

from __future__ import annotations

import re
from functools import lru_cache

import botocore.session

INSTANCE_ID = re.compile(r"i-(?:[0-9a-f]{8}|[0-9a-f]{17})")
ACCESS_KEY_ID = re.compile(r"(?:AKIA|ASIA)[A-Z0-9]{16}")
SNAPSHOT_ID = re.compile(r"snap-(?:[0-9a-f]{8}|[0-9a-f]{17})")


def instance_id(word: str) -> str | None:
    """The instance ID ``word`` names (case is forgiven, as people type it), or None."""
    return word.lower() if isinstance(word, str) and INSTANCE_ID.fullmatch(word.lower()) else None


def snapshot_id(word: str) -> str | None:
    return word.lower() if isinstance(word, str) and SNAPSHOT_ID.fullmatch(word.lower()) else None


def access_key_id(word: str) -> str | None:
    return word.upper() if isinstance(word, str) and ACCESS_KEY_ID.fullmatch(word.upper()) else None


# The kinds of target a button may name; a memory target (user@host) is typed, never drawn from a finding.
BUTTON_TARGETS = {"instance": instance_id, "access-key": access_key_id}


def button_target(kind: str, word: str) -> str | None:
    """``word`` as a target of ``kind`` a button may carry, or None when it is not one."""
    check = BUTTON_TARGETS.get(kind)
    return check(word) if check else None


def region(word: str) -> str | None:
    """The region ``word`` names, or None when botocore knows no such region."""
    return word.lower() if isinstance(word, str) and word.lower() in known_regions() else None


@lru_cache(maxsize=1)
def known_regions() -> frozenset[str]:
    """Every region botocore knows, in every partition (aws, aws-cn, aws-us-gov, ...)."""
    session = botocore.session.get_session()
    regions: set[str] = set()
    for partition in session.get_available_partitions():
        regions.update(session.get_available_regions("ec2", partition_name=partition))
    return frozenset(regions)
