"""Shared dict round trip of the head configs (the task spec's `head` dict <-> a validated dataclass)."""

from __future__ import annotations

from dataclasses import asdict, fields

from .errors import UserInputError


class HeadConfig:
    """Mixin for head-config dataclasses; subclasses name themselves in `head_kind` for error messages."""

    head_kind = "head"

    @classmethod
    def from_dict(cls, head: dict | None):
        """Build from a task spec's `head` dict (missing fields take their defaults; unknown ones are an error)."""
        head = dict(head or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(head) - known)
        if unknown:
            raise UserInputError(f"Unknown {cls.head_kind} head field(s) {unknown}; valid fields: {sorted(known)}.")
        return cls(**head)

    def to_dict(self) -> dict:
        """JSON-serialisable dict, the inverse of `from_dict`."""
        return asdict(self)
