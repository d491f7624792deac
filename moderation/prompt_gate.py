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
from typing import NamedTuple

import regex

from core.errors import UserInputError
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
# Words for "years old" after a number: English, then other languages as ``normalize`` spells
# them (Russian "лет" -> "let", Japanese/Chinese "歳"/"岁" -> "sui", Korean "살" -> "sal").
_AGE_UNITS = (
    r"yo|y o|yrs? olds?|years? olds?|years? of age|anos|ans|jahre|jahrige\w*|anni|jaar|jarige"
    r"|lat|let|letn\w*|roda|etov|khpovov|sui|sal|saal|yasinda\w*|tahun|godina|rocn\w*|eves"
    r"|vuotias"
)
_NUMBER = r"(\d{1,2}|" + "|".join(_NUMBER_WORDS) + r")"
# "12 year old", "12yo", "12 y o", "aged 12", "twelve years old", "12 лет" (normalised text).
_AGE = re.compile(
    r"\b" + _NUMBER + r" ?(?:" + _AGE_UNITS + r")\b|\b(?:aged?|age of) " + _NUMBER + r"\b"
)
# Acts of self-harm written with a reflexive pronoun ("to hang himself", "slicing her wrists"),
# whatever the verb's form; on the normalised text.
_SELF_HARM_ACT = re.compile(
    r"\b(?:kill|hang|hung|shoot|shot|cut|slash|slic|slit|drown|stab|poison|starv|suffocat|strangl"
    r"|electrocut|overdos|immolat|throw|threw|mutilat)\w* (?:\w+ )?"
    r"(?:him|her|them|my|your|one|our)sel(?:f|ves)\b"
    r"|\b(?:cut|slash|slic|slit|carv)\w* (?:\w+ )?(?:wrists?|forearms?|thighs?)\b"
)
# Standing against a hate group ("heroes who fought the nazis") is no glorification of it.
_AGAINST = re.compile(
    r"\b(?:against|fought|fight|fighting|defeat\w*|victory over|resist\w*|liberat\w*|punch\w*"
    r"|oppos\w*|escap\w*|surviv\w*) (?:the |a )?(?:nazi|fascis|klan|kkk|isis|hitler|racis|hate)"
)
# A year in the 1800s or 1900s dates a scene: history, for the hate rule.
_PAST_YEAR = re.compile(r"\b1[89]\d\d s?\b")

REASONS = {
    "sexual_minors": "sexual content involving minors is never allowed",
    "hate": "hateful slurs, slogans, glorification of hate groups or genocide, and hate-group "
            "rituals are not allowed (history and education are fine)",
    "self_harm": "depictions of suicide or self-harm are not allowed (awareness and help are "
                 "fine)",
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
                word = tokens[joined.count(" ", 0, m.start())].first_word
                found.append(Match("minor", m.group(0), m.group(0), word, word))
    return found


def _minor_is_meant(minors: list[Match], cues: list[Match], adults: list[Match]) -> bool:
    """Whether a suggestive word is said of a child. Without a grown-up in the prompt it is;
    with one, it goes with the nearest person word before it (or, failing that, after it):
    "a mother in a bikini with her kids" is about the mother, "a boy in speedos next to his
    dad" about the boy."""
    if not adults:
        return True
    people = [(m.first_word, True) for m in minors] + [(m.first_word, False) for m in adults]
    for cue in cues:
        before = [p for p in people if p[0] < cue.first_word]
        after = [p for p in people if p[0] > cue.last_word]
        subject = max(before) if before else min(after) if after else None
        if subject is None or subject[1]:
            return True
    return False


def _compound(text: NormalizedText, match: Match, heads: set[int], people: set[int]) -> bool:
    """A one-word sexual match right before a food, drink, animal or plant word names a thing
    ("naked cake", "nude cat"), unless a person word follows that ("naked bunny girl")."""
    after = match.last_word + 1
    return match.first_word == match.last_word and after in heads and after + 1 not in people


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
    found = _find(norm, policy)
    decisions = _list_decisions(norm, found, policy, nsfw_channel)
    if custom := _custom_decision(norm, found.allowed, policy):
        decisions.append(custom)
    risk = deepfake.assess(norm, policy, gate_matches=found.matches, allowed=found.allowed)
    decisions.append(deepfake.decide(risk, policy))
    decision = combine(*decisions)
    if decision.allowed and not decision.categories:
        return Decision("allow", (), (), "Allowed: no moderation rule matched.", decision.details)
    return decision


class _Found(NamedTuple):
    """What the word lists found in a prompt, before any rule is applied."""

    matches: list[Match]  # listed words and sound-alikes, safe phrases taken out
    context: dict[str, list[Match]]  # context words by label (education, help, adult, ...)
    by: dict[str, list[Match]]  # matches by label, compounds ("sex toy") left out
    allowed: list[Match]  # the server's allowlist hits


def _find(norm: NormalizedText, policy: Policy) -> _Found:
    lists = word_lists()
    safe = lists.safe.find(norm)
    # Listed words, then misspellings by sound of them ("nekkid", "seggs").
    matches = without_safe(lists.gate.find(norm) + lists.soundalike.find(norm), safe)
    context: dict[str, list[Match]] = {}
    if matches:
        for m in without_safe(lists.context.find(norm), safe):
            for label in m.label.split("+"):
                context.setdefault(label, []).append(m)
    if context.get("dish_names") and (context.get("dish_context") or context.get("compound_heads")):
        matches = without_safe(matches, context["dish_names"])  # "sex on the beach and a mojito"
    allowed = custom_matcher(policy.allowlist, "allow").find(norm) if policy.allowlist else []
    by: dict[str, list[Match]] = {}
    heads = {m.first_word for m in context.get("compound_heads", [])}
    people = {m.first_word for m in matches if m.label == "minor"}
    people |= {m.first_word for m in context.get("adult", [])}
    for m in matches:
        if m.label == "sexual" and heads and _compound(norm, m, heads, people):
            continue
        by.setdefault(m.label, []).append(m)
    return _Found(matches, context, by, allowed)


def _list_decisions(
    norm: NormalizedText, found: _Found, policy: Policy, nsfw_channel: bool
) -> list[Decision]:
    """The word-list rules, in order: sexual content with minors, hate, self-harm, then the
    channel rules for sexual content and gore."""
    by, context, allowed = found.by, found.context, found.allowed
    decisions: list[Decision] = []
    minors = by.get("minor", []) + _age_under_18(norm)
    explicit = by.get("sexual", [])
    suggestive = by.get("suggestive", [])
    sexualish = explicit + suggestive
    if by.get("sexual_minors") or (minors and explicit) or (
        minors and suggestive and _minor_is_meant(minors, suggestive, context.get("adult", []))
    ):
        evidence = _evidence(by.get("sexual_minors", []) + (minors + sexualish if sexualish else []))
        decisions.append(Decision("block", ("sexual_minors",), evidence,
                                  f"Blocked: {REASONS['sexual_minors']}."))
    if hate := _unless_allowed(_hate(norm, found), allowed):
        decisions.append(Decision("block", ("hate",), _evidence(hate), f"Blocked: {REASONS['hate']}."))
    if self_harm := _unless_allowed(_self_harm(norm, found), allowed):
        decisions.append(Decision("block", ("self_harm",), _evidence(self_harm),
                                  f"Blocked: {REASONS['self_harm']}."))
    for category in ("sexual", "gore"):
        if hits := _unless_allowed(by.get(category, []), allowed):
            decisions.append(_channel_rule(category, hits, policy, nsfw_channel))
    return decisions


def _unless_allowed(ms: list[Match], allowed: list[Match]) -> list[Match]:
    return without_safe(ms, allowed) if allowed else ms


def _hate(norm: NormalizedText, found: _Found) -> list[Match]:
    """Hate words; rituals and glorified hate groups only outside a history/education context."""
    by, context = found.by, found.context
    hate = by.get("hate", [])
    history = (context.get("education") or _PAST_YEAR.search(norm.text)
               or _AGAINST.search(norm.text))
    if not history:
        hate += by.get("hate_ritual", [])
        if glorify := context.get("hate_glorify"):
            entities = by.get("hate_entity", [])
            hate += entities + glorify if entities else []
    return hate


def _self_harm(norm: NormalizedText, found: _Found) -> list[Match]:
    """Graphic self-harm words and acts; the milder words only where no help is asked for."""
    self_harm = found.by.get("self_harm_graphic", [])
    for reading in norm.variants[:2]:
        joined = " ".join(t.text for t in reading)
        if act := _SELF_HARM_ACT.search(joined):
            word = reading[joined.count(" ", 0, act.start())].first_word
            self_harm.append(Match("self_harm", act.group(0), norm.source(word, word), word, word))
            break
    if not found.context.get("help"):
        self_harm += found.by.get("self_harm", [])
    return self_harm


def _custom_decision(norm: NormalizedText, allowed: list[Match], policy: Policy) -> Decision | None:
    """The server's own banned terms and regexes (its allowlist wins over both)."""
    custom = []
    if policy.banned_terms:
        custom = _unless_allowed(custom_matcher(policy.banned_terms, "custom").find(norm), allowed)
    regex_hits = _regex_hits(norm, policy.banned_regexes) if policy.banned_regexes else []
    if regex_hits and allowed and not custom:
        # An allowlisted phrase covering the whole prompt's hit overrides a regex too.
        regex_hits = [h for h in regex_hits if not any(a.term in h.lower() for a in allowed)]
    if not (custom or regex_hits):
        return None
    return Decision("block", ("custom",),
                    _evidence(custom) + tuple(f"regex: {h}" for h in regex_hits),
                    f"Blocked: {REASONS['custom']}.")
