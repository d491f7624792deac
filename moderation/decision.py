"""The answer every moderation check gives: what to do, and why, in words a moderator can read.

One type for prompts, input images and generated images, so the bot, the audit log and the CLI
treat every stage alike and several checks combine by taking the most severe action.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Action = Literal["allow", "spoiler", "block"]
SEVERITY: dict[str, int] = {"allow": 0, "spoiler": 1, "block": 2}


@dataclass(frozen=True)
class Decision:
    """``action``: allow, spoiler (deliver blurred behind a spoiler) or block.

    ``categories`` name the rules that fired (sexual, sexual_minors, gore, hate, real_person,
    custom, nsfw_image, ...); ``evidence`` the matched words or detections; ``reason`` one
    sentence for the user and the moderator; ``details`` machine-readable extras (scores).
    """

    action: Action = "allow"
    categories: tuple[str, ...] = ()
    evidence: tuple[str, ...] = ()
    reason: str = ""
    details: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def blocked(self) -> bool:
        return self.action == "block"

    @property
    def allowed(self) -> bool:
        return self.action == "allow"

    @property
    def needs_audit(self) -> bool:
        """Every block and every spoiler is written to the audit log."""
        return self.action != "allow"

    def to_dict(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "categories": list(self.categories),
            "evidence": list(self.evidence),
            "reason": self.reason,
            "details": self.details,
        }

    @classmethod
    def allow(cls, reason: str = "no rule matched", **details: Any) -> Decision:
        return cls("allow", reason=reason, details=details)


def combine(*decisions: Decision) -> Decision:
    """Merge the checks of one stage: the most severe action wins, reasons of that action join."""
    if not decisions:
        return Decision.allow()
    worst = max(SEVERITY[d.action] for d in decisions)
    top = [d for d in decisions if SEVERITY[d.action] == worst]
    categories = tuple(dict.fromkeys(c for d in top for c in d.categories))
    evidence = tuple(dict.fromkeys(e for d in top for e in d.evidence))
    reason = " ".join(dict.fromkeys(d.reason for d in top if d.reason))
    details: dict[str, Any] = {}
    for d in decisions:
        details.update(d.details)
    return Decision(top[0].action, categories, evidence, reason, details)
