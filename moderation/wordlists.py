"""The shipped word lists (``moderation/data/*.txt``), parsed once and compiled into matchers.

Lists live in plain text files so moderators and contributors can review and extend them
without reading code; each section is described at the top of its file.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache, lru_cache
from importlib import resources

from wordfreq import zipf_frequency

from moderation.text import SoundAlikeMatcher, TermMatcher, is_known_word

GATE_SECTIONS = (
    "sexual", "suggestive", "minor", "sexual_minors", "gore", "hate", "hate_entity", "hate_ritual",
    "self_harm", "self_harm_graphic",
)
# Words that change what a gate word means, matched separately (``context``).
CONTEXT_SECTIONS = (
    "hate_glorify", "education", "help", "adult", "compound_heads", "dish_names", "dish_context",
)
# Gate labels whose single words are also matched by sound ("seggs", "pornografy"); first wins.
SOUNDALIKE_LABELS = ("sexual_minors", "sexual")
SOUNDALIKE_MIN_MINORS = 6
SOUNDALIKE_TARGET_ZIPF = 2.0  # listed words in common English use (wordfreq) get sound-alikes  # "pedofile", "lolicon"; not "pedo" or "loli", too many near words
SENSITIVE_SECTIONS = (
    "sensitive_sexual", "sensitive_violence", "sensitive_crime", "sensitive_drugs",
    "sensitive_politics",
)


def read_terms() -> dict[str, list[str]]:
    """terms.txt with multilingual.txt merged in (terms.txt first in every section)."""
    sections = read_sections("terms.txt")
    for name, entries in read_sections("multilingual.txt").items():
        sections.setdefault(name, []).extend(entries)
    return sections


def read_sections(name: str) -> dict[str, list[str]]:
    """``[section]`` headers followed by one entry per line; ``#`` starts a comment line."""
    text = resources.files("moderation").joinpath("data", name).read_text(encoding="utf-8")
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], [])
        elif current is not None:
            current.append(line)
    return sections


def read_public_figures() -> dict[str, str]:
    """Spelling -> canonical name; each full name also matches written as one word."""
    text = resources.files("moderation").joinpath("data", "public_figures.txt").read_text("utf-8")
    names: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        spellings = [s.strip() for s in line.split("|") if s.strip()]
        canonical = spellings[0]
        for spelling in spellings:
            names.setdefault(spelling, canonical)
        names.setdefault("".join(ch for ch in canonical if ch.isalnum()), canonical)
    return names


def _matcher(
    sections: dict[str, list[str]], wanted: tuple[str, ...], *, all_labels: bool = False
) -> TermMatcher:
    """With ``all_labels`` a term in several sections gets them all, joined by "+"."""
    terms: dict[str, str] = {}
    for section in wanted:
        for term in sections.get(section, []):
            if all_labels and term in terms and section not in terms[term].split("+"):
                terms[term] += "+" + section
            else:
                terms.setdefault(term, section)
    return TermMatcher(terms)


@dataclass(frozen=True)
class WordLists:
    gate: TermMatcher  # labels: the GATE_SECTIONS
    soundalike: SoundAlikeMatcher  # labels: the SOUNDALIKE_LABELS
    context: TermMatcher  # labels: the CONTEXT_SECTIONS, "+"-joined where a word is in several
    safe: TermMatcher
    safe_names: TermMatcher
    photoreal: TermMatcher
    stylised: TermMatcher
    sensitive: TermMatcher  # labels: the SENSITIVE_SECTIONS
    figures: TermMatcher  # label: canonical name


@cache
def word_lists() -> WordLists:
    """Built on first use (about 1 s with wordfreq's lists), then shared by every check."""
    s = read_terms()
    # A term in two gate sections keeps its first label; "loli" is listed under both minor and
    # sexual_minors, and must count as sexual_minors on its own.
    gate_order = ("sexual_minors",) + tuple(x for x in GATE_SECTIONS if x != "sexual_minors")
    gate = _matcher(s, gate_order)
    # Sound-alikes of English words only: across languages every short word sounds like some
    # listed one ("deti" like Italian "tette"), and misspellings of misspellings ("porm") or of
    # foreign words ("nackte") find mostly innocent words.
    main = _matcher(read_sections("terms.txt"), gate_order).terms()
    sounds = {
        t: label for t, label in main.items()
        if (label == "sexual" or (label == "sexual_minors" and len(t) >= SOUNDALIKE_MIN_MINORS))
        and zipf_frequency(t, "en", wordlist="large") >= SOUNDALIKE_TARGET_ZIPF
    }
    is_known_word("zzzq")  # loads wordfreq's lists now, not in the middle of a user's check
    return WordLists(
        gate=gate,
        soundalike=SoundAlikeMatcher(sounds, SOUNDALIKE_LABELS),
        context=_matcher(s, CONTEXT_SECTIONS, all_labels=True),
        safe=_matcher(s, ("safe_phrases",)),
        safe_names=_matcher(s, ("safe_names",)),
        photoreal=_matcher(s, ("photoreal",)),
        stylised=_matcher(s, ("stylised",)),
        sensitive=_matcher(s, SENSITIVE_SECTIONS),
        figures=TermMatcher(read_public_figures()),
    )


@lru_cache(maxsize=512)
def custom_matcher(terms: tuple[str, ...], label: str) -> TermMatcher:
    """Matchers for a server's own lists, cached per distinct list (policies rarely change)."""
    return TermMatcher({t: (label if label != "name" else t) for t in terms})
