"""Counted nouns, said right: "1 volume", "3 volumes", "0 targets"."""

from __future__ import annotations


def count(n: int, one: str, many: str | None = None) -> str:
    """``n`` and the noun: ``one`` for exactly one, else ``many`` (default: ``one`` + "s")."""
    return f"{n} {plural(n, one, many)}"


def plural(n: int, one: str, many: str | None = None) -> str:
    """The noun alone, for sentences whose number stands elsewhere ("0 of 1 targets")."""
    return one if n == 1 else (many or one + "s")
