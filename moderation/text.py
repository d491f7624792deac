"""De-obfuscation shared by the prompt gate and the deepfake check.

People dodge word filters with look-alike letters from other scripts, accents, zero-width
characters, leetspeak and spaced-out letters. We undo all of that *before* matching, and then
match whole tokens only, so that "cocktail" or "Scunthorpe" never trip a filter for "cock" or
"cunt". The look-alike table comes from Unicode's confusables data (``confusable_homoglyphs``)
and transliteration from ``unidecode``; only the leetspeak map is ours, because no library
ships one.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache

from confusable_homoglyphs import confusables
from unidecode import unidecode

# Leetspeak: digit or symbol -> letter. "1" and "!" read as "i" in the first variant and "l" in
# the second, "|" the other way round, so both "1oli" and "d1ck" decode.
LEET = str.maketrans(
    {"0": "o", "1": "i", "2": "z", "3": "e", "4": "a", "5": "s", "6": "g", "7": "t", "8": "b",
     "9": "g", "@": "a", "$": "s", "!": "i", "|": "l", "+": "t", "€": "e", "£": "l", "¢": "c"}
)
_LEET_SYMBOLS = frozenset("€£¢")
LEET_ALT = str.maketrans({"1": "l", "!": "l", "|": "i", "v": "u"})  # "nvde"

_PIECE = re.compile(r"[a-z0-9]+")
_HAS_LETTER = re.compile(r"[a-z]")
_MASKED = re.compile(r"[a-z]+\*+[a-z*]*[a-z]")  # letters on both sides of the stars
_REPEATS = re.compile(r"([a-z])\1{2,}")  # "nuuuude" -> "nude"
MIN_JOINED_RUN = 3  # "n u d e": runs of at least this many single letters are joined
MIN_SPLIT_RUN = 7  # joined runs this long are also searched for a listed word at either end


@dataclass(frozen=True)
class Token:
    """A normalised word piece and the span of original words it came from (for evidence)."""

    text: str
    first_word: int
    last_word: int
    joined: bool = False  # made from a run of single letters


@dataclass(frozen=True)
class NormalizedText:
    """Every plausible de-obfuscated reading of a prompt; matchers try each one."""

    original: str
    words: tuple[str, ...]
    variants: tuple[tuple[Token, ...], ...]

    @property
    def tokens(self) -> tuple[Token, ...]:
        """The plain reading (no leetspeak), e.g. for cues like "4k" or "35mm"."""
        return self.variants[0]

    @property
    def text(self) -> str:
        return " ".join(t.text for t in self.variants[0])

    def source(self, first_word: int, last_word: int, limit: int = 60) -> str:
        """The original words behind a match, shortened for logs and replies."""
        snippet = " ".join(self.words[first_word : last_word + 1])
        return snippet if len(snippet) <= limit else snippet[: limit - 1] + "…"

    @property
    def is_blank(self) -> bool:
        return not any(self.variants[0])


@lru_cache(maxsize=1 << 16)
def fold_char(ch: str) -> str:
    """Map one character to plain lowercase ASCII: invisible -> "", look-alike -> its Latin twin."""
    if ch.isascii():
        return ch.lower()
    if ch in _LEET_SYMBOLS:
        return ch  # kept for the leetspeak readings ("nud€"); the plain reading drops it
    category = unicodedata.category(ch)
    if category in ("Cf", "Cc", "Mn", "Me", "Cs", "Co", "Cn"):
        return ""  # zero-width joiners, bidi marks, combining accents, unassigned
    if category.startswith("Z"):
        return " "
    found = confusables.is_confusable(ch, preferred_aliases=["latin"])
    if found:
        for glyph in found[0]["homoglyphs"]:
            if glyph["c"].isascii() and glyph["c"].isalnum():
                return glyph["c"].lower()
    stripped = "".join(c for c in unicodedata.normalize("NFKD", ch) if not unicodedata.combining(c))
    if stripped and stripped.isascii():
        return stripped.lower()
    return unidecode(ch).lower()


def fold(text: str) -> str:
    """NFKC (fullwidth, ligatures), then per-character folding; keeps word breaks."""
    return "".join(fold_char(c) for c in unicodedata.normalize("NFKC", text))


def _pieces(word: str, index: int) -> list[Token]:
    return [Token(p, index, index) for p in _PIECE.findall(word)]


def _letter_runs(tokens: list[Token]) -> list[tuple[int, int]]:
    """(start, end) index ranges of runs of at least MIN_JOINED_RUN single-letter tokens."""
    runs, start = [], None
    for i, tok in enumerate(tokens + [Token("..", 0, 0)]):
        single = len(tok.text) == 1 and tok.text.isalpha()
        if single and start is None:
            start = i
        elif not single and start is not None:
            if i - start >= MIN_JOINED_RUN:
                runs.append((start, i))
            start = None
    return runs


def _join_letter_runs(
    tokens: list[Token], runs: list[tuple[int, int]], *, keep_article: bool = False
) -> list[Token]:
    """Join runs of single letters ("n u d e", "n.u.d.e") into one token, keep the rest.

    With ``keep_article`` a leading "a" or "i" stays a word of its own ("a n u d e").
    """
    out: list[Token] = []
    last = 0
    for start, end in runs:
        out.extend(tokens[last:start])
        if keep_article and end - start > MIN_JOINED_RUN and tokens[start].text in ("a", "i"):
            out.append(tokens[start])
            start += 1
        run = tokens[start:end]
        out.append(
            Token("".join(t.text for t in run), run[0].first_word, run[-1].last_word, joined=True)
        )
        last = end
    out.extend(tokens[last:])
    return out


def normalize(text: str) -> NormalizedText:
    """All readings of ``text``: plain, leetspeak (two ways), repeats collapsed, letters joined."""
    words = tuple(text.split())
    folded = [fold(w) for w in words]
    variants: list[tuple[Token, ...]] = []
    seen: set[tuple[str, ...]] = set()

    def add(tokens: list[Token]) -> None:
        key = tuple(t.text for t in tokens)
        if key not in seen:
            seen.add(key)
            variants.append(tuple(tokens))

    leet = [w.translate(LEET) if _HAS_LETTER.search(w) else w for w in folded]
    leet_alt = [
        w.translate(LEET_ALT).translate(LEET) if _HAS_LETTER.search(w) else w for w in folded
    ]
    readings: list[list[str]] = []
    for reading in (folded, leet, leet_alt, [_REPEATS.sub(r"\1", w) for w in leet]):
        if reading not in readings:  # most prompts have one reading only
            readings.append(reading)
    for reading in readings:
        tokens = [tok for i, w in enumerate(reading) for tok in _pieces(w, i)]
        add(tokens)
        if runs := _letter_runs(tokens):
            add(_join_letter_runs(tokens, runs))
            add(_join_letter_runs(tokens, runs, keep_article=True))
    return NormalizedText(original=text, words=words, variants=tuple(variants))


@dataclass(frozen=True)
class Match:
    """One listed term found in a prompt: what it counts as, and the original words behind it."""

    label: str
    term: str
    source: str
    first_word: int
    last_word: int

    def within(self, other: Match) -> bool:
        return other.first_word <= self.first_word and self.last_word <= other.last_word


class TermMatcher:
    """Whole-token phrase matching over every reading of a prompt.

    Terms are normalised with the same ``normalize`` as prompts, so a list entry written with
    accents or in capitals still matches; a trailing "s" on a prompt token is also tried.
    """

    def __init__(self, terms: dict[str, str]) -> None:
        self._phrases: dict[tuple[str, ...], tuple[str, str]] = {}
        for term, label in terms.items():
            key = tuple(t.text for t in normalize(term).tokens)
            if key:
                self._phrases.setdefault(key, (label, " ".join(key)))
        self._max_len = max((len(k) for k in self._phrases), default=0)
        self._first = frozenset(k[0] for k in self._phrases)  # most tokens start no phrase
        self._single = [k[0] for k in self._phrases if len(k) == 1]

    def __len__(self) -> int:
        return len(self._phrases)

    def find(self, text: NormalizedText) -> list[Match]:
        found: dict[tuple[str, int, int], Match] = {}
        phrases = self._phrases
        for tokens in text.variants:
            words = [t.text for t in tokens]
            n = len(words)
            for i in range(n):
                word = words[i]
                if word not in self._first and not (word.endswith("s") and word[:-1] in self._first):
                    continue
                for length in range(1, min(self._max_len, n - i) + 1):
                    key = tuple(words[i : i + length])
                    hit = phrases.get(key)
                    if hit is None and length == 1 and len(key[0]) > 3 and key[0].endswith("s"):
                        hit = phrases.get((key[0][:-1],))
                    if hit is None:
                        continue
                    first, last = tokens[i].first_word, tokens[i + length - 1].last_word
                    label, term = hit
                    if (term, first, last) not in found:
                        found[(term, first, last)] = Match(
                            label, term, text.source(first, last), first, last
                        )
        for tokens in text.variants:
            for tok in tokens:
                if tok.joined and len(tok.text) >= MIN_SPLIT_RUN:
                    for match in self._find_in_run(text, tok):
                        found.setdefault((match.term, match.first_word, match.last_word), match)
        for match in self._find_masked(text):
            found.setdefault((match.term, match.first_word, match.last_word), match)
        return _drop_nested(list(found.values()))

    def _find_in_run(self, text: NormalizedText, tok: Token) -> list[Match]:
        """A long run of spaced letters may hold several words ("n u d e w o m a n"): a listed
        word of 4+ letters at its start or end counts. Not in the middle ("s c u n t h o r p e")
        and not in short runs, which are usually one innocent word ("g r a p e")."""
        out = []
        for term in self._single:
            if len(term) >= 4 and (tok.text.startswith(term) or tok.text.endswith(term)):
                label = self._phrases[(term,)][0]
                out.append(Match(label, term, text.source(tok.first_word, tok.last_word),
                                 tok.first_word, tok.last_word))
        return out

    def _find_masked(self, text: NormalizedText) -> list[Match]:
        """Words with letters hidden by "*" ("n*de", "p**n") match a listed word of that length."""
        out = []
        for index, word in enumerate(text.words):
            if "*" not in word:
                continue
            for masked in _MASKED.findall(fold(word)):
                kept = len(masked) - masked.count("*")
                if kept < 2 or kept * 2 < len(masked):  # "s**" or "f***" could be anything
                    continue
                pattern = re.compile(masked.replace("*", "[a-z]"))
                for term in self._single:
                    if len(term) == len(masked) and pattern.fullmatch(term):
                        label = self._phrases[(term,)][0]
                        out.append(Match(label, term, text.source(index, index), index, index))
        return out


def _drop_nested(matches: list[Match]) -> list[Match]:
    """Keep "lego figure" rather than also "lego": a shorter match inside a longer one of the
    same label counts once."""
    keep = []
    for m in matches:
        if not any(
            o is not m and o.label == m.label and m.within(o) and len(o.term) > len(m.term)
            for o in matches
        ):
            keep.append(m)
    return keep


def without_safe(matches: list[Match], safe: list[Match]) -> list[Match]:
    """Drop matches that sit inside a safe phrase ("nude lipstick", "musk ox")."""
    return [m for m in matches if not any(m.within(s) for s in safe)]
