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
from collections.abc import Iterable
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
# Scripts written without spaces between words or with particles attached to words: their list
# entries are matched as substrings of the prompt in its own script (see ``script_text``).
_SCRIPT_CHARS = re.compile(
    "[\u0590-\u05ff\u0600-\u06ff\u0750-\u077f\u0900-\u0dff\u0e00-\u0e7f"
    "\u1100-\u11ff\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]"
)
_SPACES = re.compile(r"\s+")
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


def script_text(text: str) -> str:
    """The prompt in its own script for substring matching: NFKC (half-width kana, presentation
    forms), lower case, invisible format characters removed."""
    text = unicodedata.normalize("NFKC", text).lower()
    return "".join(c for c in text if unicodedata.category(c) != "Cf")


def _word_index(text: NormalizedText, found: str) -> int:
    """The original word holding a substring match, for evidence."""
    for i, word in enumerate(text.words):
        if found in script_text(word):
            return i
    return 0


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
    fuzzy: bool = False  # found by sound or spelling distance, not as written in a list

    def within(self, other: Match) -> bool:
        return other.first_word <= self.first_word and self.last_word <= other.last_word


class TermMatcher:
    """Whole-token phrase matching over every reading of a prompt.

    Terms are normalised with the same ``normalize`` as prompts, so a list entry written with
    accents or in capitals still matches; a trailing "s" on a prompt token is also tried.
    """

    def __init__(self, terms: dict[str, str]) -> None:
        self._phrases: dict[tuple[str, ...], tuple[str, str]] = {}
        self._stems: dict[str, tuple[str, str]] = {}  # "nackt*": any word starting "nackt"
        script: dict[str, tuple[str, str]] = {}
        for term, label in terms.items():
            if _SCRIPT_CHARS.search(term):
                script.setdefault(script_text(term), (label, term))
                continue
            stem = term.endswith("*")
            key = tuple(t.text for t in normalize(term.rstrip("*")).tokens)
            if stem and len(key) == 1:
                self._stems.setdefault(key[0], (label, term))
            elif key:
                self._phrases.setdefault(key, (label, " ".join(key)))
        self._max_len = max((len(k) for k in self._phrases), default=0)
        self._first = frozenset(k[0] for k in self._phrases)  # most tokens start no phrase
        self._single = [k[0] for k in self._phrases if len(k) == 1]
        self._stem_lengths = sorted({len(k) for k in self._stems})
        self._script = script
        self._script_re = (
            re.compile("|".join(re.escape(t) for t in sorted(script, key=len, reverse=True)))
            if script else None
        )

    def __len__(self) -> int:
        return len(self._phrases) + len(self._stems) + len(self._script)

    def terms(self) -> dict[str, str]:
        """Single-word entries (normalised) -> label, e.g. for sound-alike matching."""
        return {k[0]: label for k, (label, _) in self._phrases.items() if len(k) == 1}

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
        if self._stems:
            for match in self._find_stems(text):
                found.setdefault((match.term, match.first_word, match.last_word), match)
        if self._script_re is not None and not text.original.isascii():
            for match in self._find_script(text):
                found.setdefault((match.term, match.first_word, match.last_word), match)
        for tokens in text.variants:
            for tok in tokens:
                if tok.joined and len(tok.text) >= MIN_SPLIT_RUN:
                    for match in self._find_in_run(text, tok):
                        found.setdefault((match.term, match.first_word, match.last_word), match)
        for match in self._find_masked(text):
            found.setdefault((match.term, match.first_word, match.last_word), match)
        return _drop_nested(list(found.values()))

    def _find_stems(self, text: NormalizedText) -> list[Match]:
        """Inflected forms: a "nackt*" entry matches "nackte", "nackten" (a word longer than
        the stem, or the stem itself)."""
        out = []
        for tokens in text.variants:
            for tok in tokens:
                word = tok.text
                for n in self._stem_lengths:
                    if n > len(word):
                        break
                    hit = self._stems.get(word[:n])
                    if hit is not None:
                        label, term = hit
                        out.append(Match(label, term, text.source(tok.first_word, tok.last_word),
                                         tok.first_word, tok.last_word))
        return out

    def _find_script(self, text: NormalizedText) -> list[Match]:
        """Words in scripts without spaces between words (CJK, Thai) or with attached
        particles (Arabic, Hebrew, Indic): found anywhere, also with spaces squeezed out."""
        subject = script_text(text.original)
        out, seen = [], set()
        for m in self._script_re.finditer(subject):
            seen.add(m.group(0))
            label, term = self._script[m.group(0)]
            index = _word_index(text, m.group(0))
            out.append(Match(label, term, text.source(index, index), index, index))
        for m in self._script_re.finditer(_SPACES.sub("", subject)):
            if m.group(0) not in seen:  # split by spaces ("裸 体"): evidence from its first word
                label, term = self._script[m.group(0)]
                index = _word_index(text, m.group(0)[0])
                out.append(Match(label, term, text.source(index, index), index, index))
        return out

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


# Common words are never read as misspellings: "node" is not "nude", "sax" is not "sex", Italian
# "tetto" (roof) is not "tits". A word counts as common from this Zipf frequency on (wordfreq's
# scale: 3 = once per million words) in English or one of the other listed languages.
COMMON_ZIPF_EN = 3.0
COMMON_ZIPF_OTHER = 3.0
COMMON_LANGUAGES = ("fr", "de", "es", "it", "pt", "nl", "sv", "pl", "tr", "id")
KNOWN_ZIPF_EN = 1.0
MIN_SOUNDALIKE_LEN = 4
SOUNDALIKE_EDITS_SHORT = 1  # edits allowed (on the sound spelling) for a listed word of <= 5
SOUNDALIKE_EDITS = 2  # letters, and for longer ones
SOUNDALIKE_CACHE = 1 << 16  # words remembered (prompts reuse a small vocabulary)


@lru_cache(maxsize=1 << 14)
def is_common_word(word: str) -> bool:
    """Whether ``word`` is an ordinary word in English or another common prompt language.

    Backed by ``wordfreq``'s small lists (frequencies from Wikipedia, subtitles, news, books,
    web text), which load in about 50 ms per language on first use.
    """
    from wordfreq import zipf_frequency

    english = [word, word[:-1]] if word.endswith("s") and len(word) > 4 else [word]
    if any(zipf_frequency(w, "en", wordlist="small") >= COMMON_ZIPF_EN for w in english):
        return True  # plurals too: "tutus"
    return any(
        zipf_frequency(word, lang, wordlist="small") >= COMMON_ZIPF_OTHER
        for lang in COMMON_LANGUAGES
    )


@lru_cache(maxsize=1 << 14)
def is_known_word(word: str) -> bool:
    """Whether ``word`` is in use at all: a common word (``is_common_word``) or in wordfreq's
    large English list (about 1 use in 10 million words and up, plurals too). Established
    misspellings are in use ("nekkid", "secks") and so are listed in terms.txt; the sound-alike
    matcher only reads words nobody writes as they are."""
    from wordfreq import zipf_frequency

    if is_common_word(word):
        return True
    english = [word, word[:-1]] if word.endswith("s") and len(word) > 4 else [word]
    return any(zipf_frequency(w, "en", wordlist="large") >= KNOWN_ZIPF_EN for w in english)


_PUNCT = "\"'.,;:!?()[]{}"


@lru_cache(maxsize=1 << 14)
def _is_english(word: str) -> bool:
    """A common English word, not much more common in another listed language ("photo" yes,
    "une", "dans", "kuva" no)."""
    from wordfreq import zipf_frequency

    english = zipf_frequency(word, "en", wordlist="small")
    return english >= COMMON_ZIPF_EN and all(
        zipf_frequency(word, lang, wordlist="small") <= english + 1 for lang in COMMON_LANGUAGES
    )


def _reads_as_english(words: Iterable[str]) -> bool:
    """At least half the other words (of three letters or more) are English ones."""
    words = [w for w in words if len(w) >= 3 and w.isalpha()]
    return sum(map(_is_english, words)) * 2 >= len(words) - 1


def _has_accent(word: str) -> bool:
    return any("LATIN" in unicodedata.name(c, "") and "WITH" in unicodedata.name(c, "")
               for c in word if not c.isascii())


def _mostly_latin(word: str) -> bool:
    letters = [c for c in word if c.isalpha()]
    latin = sum(1 for c in letters if c.isascii() or "LATIN" in unicodedata.name(c, ""))
    return latin * 2 >= len(letters)


def _squeeze(word: str) -> str:
    """A rough sound spelling for comparing words: letters with the same sound written alike,
    double letters once ("secks" ~ "sex": both "seks"; "nekkid" ~ "nekid")."""
    for pattern, sound in _SOUND_SPELLINGS:
        word = pattern.sub(sound, word)
    return _DOUBLES.sub(r"\1", word)


_DOUBLES = re.compile(r"([a-z])\1+")
_SOUND_SPELLINGS = tuple(
    (re.compile(p), s)
    for p, s in (("ph", "f"), ("ck", "k"), ("x", "ks"), ("c(?=[eiy])", "s"), ("[cq]", "k"),
                 ("z", "s"), ("oo|ou", "u"), ("ee|ea", "i"), ("y$", "i"), ("(?<=...)e$", ""), ("ay", "a"), ("id$", "ed"))
)


def sound_keys(word: str) -> tuple[str, ...]:
    """Two phonetic codes (Metaphone, NYSIIS): spellings that sound alike share one."""
    import jellyfish

    keys = []
    if len(meta := jellyfish.metaphone(word)) >= 2:
        keys.append("m" + meta)
    if len(nysiis := jellyfish.nysiis(word)) >= 2:
        keys.append("n" + nysiis)
    return tuple(keys)


class SoundAlikeMatcher:
    """Misspellings by sound of listed single words: letters dropped, doubled or swapped for
    ones that sound the same ("nekkid", "seggs", "hentia", "vajina", "pornografy").

    A prompt word matches a listed word when they share a phonetic code, their rough sound
    spellings differ by at most one edit (two for listed words of six letters or more), and the
    prompt word is in no word list at all (``is_known_word``): "prawn" is not "porn", "pushy"
    not "pussy". Leetspeak, look-alike letters and spacing are undone first by ``normalize``,
    as for exact matching.
    """

    def __init__(self, terms: dict[str, str], priority: tuple[str, ...] = ()) -> None:
        self._terms = {
            t: label for t, label in terms.items() if t.isascii() and t.isalpha() and len(t) >= 3
        }
        self._known = frozenset(terms)
        self._rank = {label: i for i, label in enumerate(priority)}
        self._cache: dict[str, str | None] = {}  # prompt word -> listed word or None
        self._by_key: dict[str, list[str]] = {}
        for term in self._terms:
            for key in sound_keys(term):
                # A three-letter word needs a three-letter Metaphone code: "sex" (SKS) yes, "cum"
                # (KM) no; the key is the kind letter ("m" or "n") and the code.
                if len(term) >= MIN_SOUNDALIKE_LEN or (key[0] == "m" and len(key) > 3):
                    self._by_key.setdefault(key, []).append(term)

    def _closest(self, word: str) -> str | None:
        """The listed word ``word`` is a misspelling of, if any (best label, then fewest edits)."""
        from rapidfuzz.distance import OSA

        candidates = {t for key in sound_keys(word) for t in self._by_key.get(key, ())}
        best: tuple[int, int, str] | None = None
        for term in candidates:
            limit = SOUNDALIKE_EDITS_SHORT if len(term) <= 5 else SOUNDALIKE_EDITS
            dist = OSA.distance(_squeeze(word), _squeeze(term), score_cutoff=limit)
            if dist <= limit:
                rank = self._rank.get(self._terms[term], len(self._rank))
                best = min(best or (rank, dist, term), (rank, dist, term))
        if best is None or is_known_word(word):
            return None
        return best[2]

    def find(self, text: NormalizedText) -> list[Match]:
        out: list[Match] = []
        seen: set[str] = set()
        plain = {(t.first_word, t.last_word): t.text for t in text.tokens}
        for tokens in text.variants:
            for tok in tokens:
                word = tok.text
                if word in seen or len(word) < MIN_SOUNDALIKE_LEN or word in self._known:
                    continue
                seen.add(word)
                as_written = plain.get((tok.first_word, tok.last_word), word)
                if as_written != word and as_written.isalpha() and is_known_word(as_written):
                    continue  # "pensive" is a word, whatever its leetspeak reading "pensiue"
                original = text.words[tok.first_word].lower().strip(_PUNCT)
                if tok.first_word == tok.last_word and _has_accent(original):
                    continue  # accents are written by people writing another language, not tricks
                if not word.isalpha() or (word.endswith("s") and word[:-1] in self._known):
                    continue
                if not _mostly_latin(" ".join(text.words[tok.first_word : tok.last_word + 1])):
                    continue  # a transliteration ("дети" -> "deti") is no misspelling
                term = self._cache.get(word, "")
                if term == "":
                    term = self._closest(word)
                    if len(self._cache) >= SOUNDALIKE_CACHE:
                        self._cache.clear()
                    self._cache[word] = term
                if term is None:
                    continue
                if not _reads_as_english(plain.values()):
                    break  # the listed words are English: a prompt in another language has
                    # no misspellings of them, only its own words that sound alike ("kuuma")
                out.append(Match(self._terms[term], term,
                                 text.source(tok.first_word, tok.last_word),
                                 tok.first_word, tok.last_word, fuzzy=True))
        return out
