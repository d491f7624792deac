"""The prompt gate: decides on a prompt before it costs any GPU time.

Matching is on whole tokens of every de-obfuscated reading (``moderation/text.py``), so
"n.u.d.e" and "nudе" (Cyrillic e) are caught while "Scunthorpe" and "cocktail" pass. Rules:
sexual content involving minors (a listed term, an age under 18, or a minor word together with
a sexual or suggestive word anywhere in the prompt) and hate terms block in every channel under
every policy; sexual and gore terms block outside age-restricted channels and follow
``nsfw_mode`` inside them; the server's banned terms and regexes block; the deepfake-risk
rules (``moderation/deepfake.py``) block per ``deepfake_level``. The server allowlist overrides
the word lists and names, never the minors rule.
"""

from __future__ import annotations

import logging
import re
from functools import lru_cache

import regex

from generation.errors import UserInputError
from moderation import deepfake
from moderation.decision import Decision, combine
from moderation.policy import Policy
from moderation.text import Match, NormalizedText, normalize, without_safe
from moderation.wordlists import custom_matcher, word_lists

log = logging.getLogger(__name__)

MAX_CHECK_CHARS = 20_000  # far above any model's prompt limit; bounds the work per prompt
REGEX_TIMEOUT_S = 0.05
_NUMBER_WORDS = {
    w: i for i, w in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
        "fifteen sixteen seventeen".split()
    )
}
# "12 year old", "12yo", "12 y o", "aged 12", "twelve years old" (on the normalised text).
_AGE = re.compile(
    r"\b(\d{1,2}|" + "|".join(_NUMBER_WORDS) + r") ?(?:yo|y o|yrs? olds?|years? olds?|years? of age)\b"
    r"|\b(?:aged?|age of) (\d{1,2}|" + "|".join(_NUMBER_WORDS) + r")\b"
)

REASONS = {
    "sexual_minors": "sexual content involving minors is never allowed",
    "hate": "hateful slurs and slogans are not allowed",
    "sexual": "sexual or nude content",
    "gore": "graphic gore",
    "custom": "this server bans these words",
}


def _age_under_18(text: NormalizedText) -> list[Match]:
    found = []
    for tokens in text.variants[:2]:  # plain and leetspeak readings
        joined = " ".join(t.text for t in tokens)
        for m in _AGE.finditer(joined):
            raw = m.group(1) or m.group(2)
            age = _NUMBER_WORDS.get(raw, int(raw) if raw.isdigit() else 99)
            if age < 18:
                found.append(Match("minor", m.group(0), m.group(0), 0, 0))
    return found


@lru_cache(maxsize=512)
def _compiled(patterns: tuple[str, ...]) -> tuple[regex.Pattern, ...]:
    return tuple(regex.compile(p, regex.IGNORECASE) for p in patterns)


def _regex_hits(text: NormalizedText, patterns: tuple[str, ...]) -> list[str]:
    """Server regexes run on the original and the normalised text, each under a timeout."""
    hits = []
    for pattern in _compiled(patterns):
        for subject in (text.original, text.text):
            try:
                m = pattern.search(subject, timeout=REGEX_TIMEOUT_S)
            except TimeoutError:
                log.warning("banned regex %r timed out; treated as a match", pattern.pattern)
                hits.append(f"{pattern.pattern} (timed out)")
                break
            if m:
                hits.append(f"{pattern.pattern} matched {m.group(0)[:40]!r}")
                break
    return hits


def _evidence(matches: list[Match]) -> tuple[str, ...]:
    out = []
    for m in matches:
        src = m.source.lower().strip(".,;:!?\"'()")
        out.append(f"{m.label}: {m.term!r}" + ("" if src == m.term else f" (from {m.source!r})"))
    return tuple(dict.fromkeys(out))


def _channel_rule(category: str, matches: list[Match], policy: Policy, nsfw_channel: bool) -> Decision:
    what = REASONS[category]
    if not nsfw_channel:
        return Decision("block", (category,), _evidence(matches),
                        f"Blocked: {what} is only allowed in age-restricted channels.")
    action = policy.nsfw_mode
    note = {"block": "this server blocks it even in age-restricted channels",
            "spoiler": "results will be hidden behind a spoiler",
            "allow": "allowed in this age-restricted channel"}[action]
    verb = {"block": "Blocked", "spoiler": "Spoiler", "allow": "Allowed"}[action]
    return Decision(action, (category,), _evidence(matches), f"{verb}: {what}; {note}.")


def check_prompt(text: str, policy: Policy | None = None, *, nsfw_channel: bool = False) -> Decision:
    """Decide on a prompt. Never raises for any string; non-strings are a ``UserInputError``."""
    if not isinstance(text, str):
        raise UserInputError(f"the prompt must be text, not {type(text).__name__}")
    policy = policy or Policy.default()
    if len(text) > MAX_CHECK_CHARS:
        return Decision("block", ("too_long",), (f"{len(text)} characters",),
                        f"Blocked: the prompt has {len(text)} characters; "
                        f"the most that is checked is {MAX_CHECK_CHARS}.")
    norm = normalize(text)
    if norm.is_blank:
        return Decision("block", ("empty",), (),
                        "Blocked: the prompt is empty (only spaces, emoji, symbols or invisible "
                        "characters); describe the image in words.")
    lists = word_lists()
    matches = without_safe(lists.gate.find(norm), lists.safe.find(norm))
    allowed = custom_matcher(policy.allowlist, "allow").find(norm) if policy.allowlist else []
    by: dict[str, list[Match]] = {}
    for m in matches:
        by.setdefault(m.label, []).append(m)

    decisions: list[Decision] = []
    minors = by.get("minor", []) + _age_under_18(norm)
    sexualish = by.get("sexual", []) + by.get("suggestive", [])
    if by.get("sexual_minors") or (minors and sexualish):
        evidence = _evidence(by.get("sexual_minors", []) + (minors + sexualish if sexualish else []))
        decisions.append(Decision("block", ("sexual_minors",), evidence,
                                  f"Blocked: {REASONS['sexual_minors']}."))

    def unless_allowed(ms: list[Match]) -> list[Match]:
        return without_safe(ms, allowed) if allowed else ms

    if hate := unless_allowed(by.get("hate", [])):
        decisions.append(Decision("block", ("hate",), _evidence(hate), f"Blocked: {REASONS['hate']}."))
    for category in ("sexual", "gore"):
        if found := unless_allowed(by.get(category, [])):
            decisions.append(_channel_rule(category, found, policy, nsfw_channel))
    custom = []
    if policy.banned_terms:
        custom = unless_allowed(custom_matcher(policy.banned_terms, "custom").find(norm))
    regex_hits = _regex_hits(norm, policy.banned_regexes) if policy.banned_regexes else []
    if regex_hits and allowed and not custom:
        # An allowlisted phrase covering the whole prompt's hit overrides a regex too.
        regex_hits = [h for h in regex_hits if not any(a.term in h.lower() for a in allowed)]
    if custom or regex_hits:
        decisions.append(Decision("block", ("custom",),
                                  _evidence(custom) + tuple(f"regex: {h}" for h in regex_hits),
                                  f"Blocked: {REASONS['custom']}."))
    risk = deepfake.assess(norm, policy, gate_matches=matches, allowed=allowed)
    decisions.append(deepfake.decide(risk, policy))
    decision = combine(*decisions)
    if decision.allowed and not decision.categories:
        return Decision("allow", (), (), "Allowed: no moderation rule matched.", decision.details)
    return decision
