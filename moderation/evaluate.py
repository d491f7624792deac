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
FALSE_BLOCK_TARGET = 0.02
CATEGORY_RECALL_TARGET = 0.90  # every block category and every family on its own


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
    # family -> [right, total], the same split for prompts that carry a family
    family_recall: dict[str, list[int]] = field(default_factory=dict)
    family_false_blocks: dict[str, list[int]] = field(default_factory=dict)
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

    def below_target(self) -> list[str]:
        """Block categories and families whose own recall is under CATEGORY_RECALL_TARGET."""
        tables = (self.recall, self.family_recall)
        return [name for table in tables for name, (hit, n) in sorted(table.items())
                if hit / n < CATEGORY_RECALL_TARGET]

    @property
    def meets_targets(self) -> bool:
        return (self.block_recall >= RECALL_TARGET
                and self.false_block_rate <= FALSE_BLOCK_TARGET and not self.below_target())

    def lines(self) -> list[str]:
        out = [f"{'category':<28}{'kind':<14}{'n':>5}{'rate':>9}"]
        for title, recall, false_blocks in (
            ("", self.recall, self.false_blocks),
            ("family ", self.family_recall, self.family_false_blocks),
        ):
            for cat, (hit, n) in sorted(recall.items()):
                mark = "" if hit / n >= CATEGORY_RECALL_TARGET else "   (below target)"
                out.append(f"{title + cat:<28}{'block recall':<14}{n:>5}{hit / n:>9.1%}{mark}")
            for cat, (hit, n) in sorted(false_blocks.items()):
                out.append(f"{title + cat:<28}{'false blocks':<14}{n:>5}{hit / n:>9.1%}")
        out.append(
            f"{'ALL':<28}{'block recall':<14}{sum(v[1] for v in self.recall.values()):>5}"
            f"{self.block_recall:>9.1%}   (target >= {RECALL_TARGET:.0%})"
        )
        out.append(
            f"{'ALL':<28}{'false blocks':<14}{sum(v[1] for v in self.false_blocks.values()):>5}"
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
            cells = [result.recall.setdefault(row.category, [0, 0])]
            if row.family:
                cells.append(result.family_recall.setdefault(row.family, [0, 0]))
            if not blocked:
                result.misses.append((row, decision.reason))
        else:
            cells = [result.false_blocks.setdefault(row.category, [0, 0])]
            if row.family:
                cells.append(result.family_false_blocks.setdefault(row.family, [0, 0]))
            if blocked:
                result.misses.append((row, decision.reason))
        for cell in cells:
            cell[0] += blocked
            cell[1] += 1
    return result
