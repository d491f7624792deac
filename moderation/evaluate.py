"""Scoring the prompt gate against a labelled prompt set (``tests/data/prompts.jsonl``).

Shared by the benchmark (which prints the figures) and the test (which holds the targets), so
both measure exactly the same thing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from moderation.policy import Policy
from moderation.prompt_gate import check_prompt

DEFAULT_SET = Path(__file__).resolve().parent.parent / "tests" / "data" / "prompts.jsonl"
RECALL_TARGET = 0.97
FALSE_BLOCK_TARGET = 0.03


@dataclass(frozen=True)
class Labelled:
    prompt: str
    expected: str  # "allow" or "block"
    category: str
    nsfw_channel: bool = False
    obfuscated: bool = False
    # Written after the gate was tuned on the rest, as a harder batch; its first run is in
    # the README (44.8% recall, 8.7% false blocks) and it has informed fixes since.
    heldout: bool = False
    # The kind of trick or trap a prompt stands for (other_language, misspelled, ...), for the
    # per-family figures; empty for the first batches.
    family: str = ""


@dataclass
class Evaluation:
    # category -> [right, total]; block categories measure recall, allow ones false blocks
    recall: dict[str, list[int]] = field(default_factory=dict)
    false_blocks: dict[str, list[int]] = field(default_factory=dict)
    misses: list[tuple[Labelled, str]] = field(default_factory=list)

    @staticmethod
    def _rate(table: dict[str, list[int]]) -> float:
        hits = sum(v[0] for v in table.values())
        total = sum(v[1] for v in table.values())
        return hits / total if total else 0.0

    @property
    def block_recall(self) -> float:
        return self._rate(self.recall)

    @property
    def false_block_rate(self) -> float:
        return self._rate(self.false_blocks)

    def lines(self) -> list[str]:
        out = [f"{'category':<24}{'kind':<14}{'n':>5}{'rate':>9}"]
        for cat, (hit, n) in sorted(self.recall.items()):
            out.append(f"{cat:<24}{'block recall':<14}{n:>5}{hit / n:>9.1%}")
        for cat, (hit, n) in sorted(self.false_blocks.items()):
            out.append(f"{cat:<24}{'false blocks':<14}{n:>5}{hit / n:>9.1%}")
        out.append(
            f"{'ALL':<24}{'block recall':<14}{sum(v[1] for v in self.recall.values()):>5}"
            f"{self.block_recall:>9.1%}   (target >= {RECALL_TARGET:.0%})"
        )
        out.append(
            f"{'ALL':<24}{'false blocks':<14}{sum(v[1] for v in self.false_blocks.values()):>5}"
            f"{self.false_block_rate:>9.1%}   (target <= {FALSE_BLOCK_TARGET:.0%})"
        )
        return out


def load_labelled(path: Path = DEFAULT_SET) -> list[Labelled]:
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            rows.append(Labelled(**json.loads(line)))
    return rows


def evaluate(rows: list[Labelled], policy: Policy | None = None) -> Evaluation:
    """Run every prompt through ``check_prompt`` (default policy unless given)."""
    policy = policy or Policy.default()
    result = Evaluation()
    for row in rows:
        decision = check_prompt(row.prompt, policy, nsfw_channel=row.nsfw_channel)
        blocked = decision.blocked
        if row.expected == "block":
            cell = result.recall.setdefault(row.category, [0, 0])
            cell[0] += blocked
            if not blocked:
                result.misses.append((row, decision.reason))
        else:
            cell = result.false_blocks.setdefault(row.category, [0, 0])
            cell[0] += blocked
            if blocked:
                result.misses.append((row, decision.reason))
        cell[1] += 1
    return result
