"""Deepfake risk: how likely a request produces a realistic fake of a real person.

Signals, each with a reason a moderator can read:
- the prompt names a real person (shipped list + the server's and instance's extra names),
  matched after the same de-obfuscation as the prompt gate;
- photorealism cues ("photo", "4k", "leaked", "bodycam") versus clearly stylised cues
  ("caricature", "oil painting", "lego");
- sensitive context (sexual or undressing, violence, arrest or crime, drugs, political
  endorsement or fake news);
- a realistic face in an uploaded init photo (editing a real photo of someone), and after
  generation a realistic face in the output.

The score (0..1) is for logs and dashboards; the decision follows explicit rules per
``deepfake_level`` so that moderators can predict it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache

from PIL import Image
from rapidfuzz import process
from rapidfuzz.distance import OSA

from moderation.decision import Decision, combine
from moderation.policy import Policy
from moderation.text import Match, NormalizedText, is_common_word, normalize, without_safe
from moderation.wordlists import custom_matcher, read_public_figures, word_lists

CONTEXT_NAMES = {
    "sensitive_sexual": "sexual or undressing",
    "sensitive_violence": "violence or injury",
    "sensitive_crime": "arrest or crime",
    "sensitive_drugs": "drugs",
    "sensitive_politics": "political endorsement or fake news",
}
_PUNCT = "\"'.,;:!?()"
# Gate categories that also make a depiction of a real person sensitive.
GATE_CONTEXT = {"sexual": "sensitive_sexual", "suggestive": "sensitive_sexual",
                "gore": "sensitive_violence"}


# Misspelled names: a listed spelling of at least this many letters (written as one word) also
# matches at one edit (a letter dropped, added, changed or two swapped), and from
# FUZZY_TWO_EDITS letters on at two.
FUZZY_MIN_LEN = 6
FUZZY_TWO_EDITS = 10
FUZZY_MAX_WORDS = 3


class FuzzyNameMatcher:
    """Real people's names misspelled by one or two letters ("Tailor Swift", "Zuckerburg").

    Runs of one to three prompt words are joined and compared with every listed spelling of
    nearly the same length that starts with the same letter (rapidfuzz's optimal string
    alignment distance: a letter dropped, added, changed, or two neighbours swapped). When the
    run has as many words as the name, each word may differ by one edit at most, so two
    ordinary words ("chris loans") do not pass for a name ("Chris Evans"). A single word that
    is itself a common word never matches ("swifts", "madness"). Matches are weaker evidence
    than exact names: the decision uses them only together with a compromising context.
    """

    def __init__(self, names: dict[str, str]) -> None:
        self._exact: dict[str, str] = {}
        self._words: dict[str, tuple[str, ...]] = {}
        self._buckets: dict[tuple[str, int], list[str]] = {}
        for spelling, canonical in names.items():
            words = tuple(t.text for t in normalize(spelling).tokens)
            key = "".join(words)
            if len(key) >= FUZZY_MIN_LEN and key.isalpha():
                self._exact.setdefault(key, canonical)
                self._words.setdefault(key, words)
        for key in self._exact:
            self._buckets.setdefault((key[0], len(key)), []).append(key)
        self._near: dict[tuple[str, int], list[str]] = {}  # spellings within 2 letters of length

    def find(self, text: NormalizedText) -> list[Match]:
        out: list[Match] = []
        tokens = text.tokens
        words = [t.text for t in tokens]
        for i in range(len(words)):
            joined = ""
            for j in range(i, min(i + FUZZY_MAX_WORDS, len(words))):
                joined += words[j]
                if joined in self._exact:
                    break  # written exactly: the exact matcher has it, and longer runs hold it
                if len(joined) < FUZZY_MIN_LEN - 1 or not joined.isalpha():
                    continue
                hit = self._closest(joined, tuple(words[i : j + 1]))
                if hit is not None and not (i == j and is_common_word(joined)):
                    first, last = tokens[i].first_word, tokens[j].last_word
                    out.append(Match(self._exact[hit], hit, text.source(first, last),
                                     first, last, fuzzy=True))
        return out

    def _closest(self, joined: str, words: tuple[str, ...]) -> str | None:
        bucket = (joined[0], len(joined))
        choices = self._near.get(bucket)
        if choices is None:
            choices = self._near[bucket] = [
                key for n in range(len(joined) - 2, len(joined) + 3)
                for key in self._buckets.get((joined[0], n), ())
            ]
        if not choices:
            return None
        for key, dist, _ in process.extract(
            joined, choices, scorer=OSA.distance, score_cutoff=2, limit=5
        ):
            if dist > (2 if len(key) >= FUZZY_TWO_EDITS else 1):
                continue
            name_words = self._words[key]
            if len(name_words) == len(words) > 1 and any(
                OSA.distance(a, b) > (1 if len(b) > 3 else 0)
                for a, b in zip(words, name_words, strict=True)
            ):
                continue
            return key
        return None


@cache
def fuzzy_names() -> FuzzyNameMatcher:
    return FuzzyNameMatcher(read_public_figures())


@dataclass(frozen=True)
class RiskAssessment:
    score: float
    names: tuple[str, ...]
    name_evidence: tuple[str, ...]
    photoreal: tuple[str, ...]
    stylised: tuple[str, ...]
    sensitive: dict[str, tuple[str, ...]] = field(default_factory=dict)
    init_faces: int = 0
    output_faces: int = 0
    reasons: tuple[str, ...] = ()
    fuzzy_names: tuple[str, ...] = ()  # names that matched only misspelled

    @property
    def photoreal_wins(self) -> bool:
        """A photo cue counts unless stylised cues are at least as many ("photo of a lego
        figure" is a lego figure; "photo, 8k, dslr, sketch" is a photo)."""
        return len(self.photoreal) > len(self.stylised)

    @property
    def is_stylised(self) -> bool:
        return bool(self.stylised) and not self.photoreal_wins

    def to_dict(self) -> dict[str, object]:
        return {
            "score": self.score,
            "names": list(self.names),
            "photoreal": list(self.photoreal),
            "stylised": list(self.stylised),
            "sensitive": {k: list(v) for k, v in self.sensitive.items()},
            "init_faces": self.init_faces,
            "output_faces": self.output_faces,
            "reasons": list(self.reasons),
            "fuzzy_names": list(self.fuzzy_names),
        }


def find_names(
    text: NormalizedText, policy: Policy, allowed: list[Match] = (), *, fuzzy: bool = True
) -> list[Match]:
    """Real people named in the prompt, minus safe phrases ("musk ox") and allowlisted names.

    With ``fuzzy``, names misspelled by a letter or two come too, with ``fuzzy`` set."""
    lists = word_lists()
    found = lists.figures.find(text)
    if policy.public_figures:
        found += custom_matcher(policy.public_figures, "name").find(text)
    if fuzzy:
        found += [m for m in fuzzy_names().find(text)
                  if not any(m.within(e) or e.within(m) for e in found)]
    found = without_safe(found, lists.safe_names.find(text))
    return without_safe(found, list(allowed))


def assess(
    text: str | NormalizedText,
    policy: Policy | None = None,
    *,
    init_faces: int = 0,
    output_faces: int = 0,
    gate_matches: list[Match] | None = None,
    allowed: list[Match] = (),
) -> RiskAssessment:
    """Collect the signals; ``gate_matches`` lets the prompt gate share its word matches."""
    policy = policy or Policy.default()
    norm = text if isinstance(text, NormalizedText) else normalize(text)
    lists = word_lists()
    names = find_names(norm, policy, allowed, fuzzy=False)
    safe = lists.safe.find(norm)
    photoreal = tuple(dict.fromkeys(m.term for m in lists.photoreal.find(norm)))
    stylised = tuple(dict.fromkeys(m.term for m in lists.stylised.find(norm)))
    sensitive: dict[str, list[str]] = {}
    context = without_safe(lists.sensitive.find(norm), safe)
    if gate_matches is None:
        gate_matches = without_safe(lists.gate.find(norm), safe)
    for m in gate_matches:
        if m.label in GATE_CONTEXT:
            context.append(Match(GATE_CONTEXT[m.label], m.term, m.source, 0, 0))
    for m in context:
        terms = sensitive.setdefault(m.label, [])
        if m.term not in terms:
            terms.append(m.term)

    canonical = tuple(dict.fromkeys(m.label for m in names))
    fuzzy: tuple[str, ...] = ()
    if not canonical and (sensitive or (policy.deepfake_level == "strict" and photoreal)):
        # A misspelled name counts only in a compromising context, so look for one only then.
        misspelled = without_safe(
            [m for m in fuzzy_names().find(norm) if m.label not in canonical],
            lists.safe_names.find(norm),
        )
        fuzzy = tuple(dict.fromkeys(m.label for m in without_safe(misspelled, list(allowed))))
    reasons: list[str] = []
    score = 0.0
    if canonical:
        score += 0.5
        reasons.append(f"names a real person: {', '.join(canonical)}")
    elif fuzzy:
        score += 0.3
        reasons.append(f"names someone spelled like a real person: {', '.join(fuzzy)}")
    if init_faces:
        score += 0.3
        reasons.append(f"edits an uploaded photo with {init_faces} realistic face(s)")
    if photoreal:
        reasons.append(f"photorealistic cues: {', '.join(photoreal)}")
    if stylised:
        reasons.append(f"stylised cues: {', '.join(stylised)}")
    if len(photoreal) > len(stylised):
        score += 0.25
    elif stylised:
        score -= 0.25
    if sensitive:
        score += 0.35
        for kind, terms in sensitive.items():
            reasons.append(f"sensitive context ({CONTEXT_NAMES[kind]}): {', '.join(terms)}")
    if output_faces:
        score += 0.15
        reasons.append(f"the generated image shows {output_faces} realistic face(s)")
    return RiskAssessment(
        score=round(min(1.0, max(0.0, score)), 2),
        names=canonical,
        name_evidence=tuple(
            f"real_person: {m.label} (from {m.source.strip(_PUNCT)!r})" for m in names
        ),
        photoreal=photoreal,
        stylised=stylised,
        sensitive={k: tuple(v) for k, v in sensitive.items()},
        init_faces=init_faces,
        output_faces=output_faces,
        reasons=tuple(reasons),
        fuzzy_names=fuzzy,
    )


def decide(risk: RiskAssessment, policy: Policy | None = None) -> Decision:
    """Rules per level. ``off`` never blocks here (the minors rule lives in the prompt gate).

    Named real person: strict blocks always; balanced blocks with sensitive context, with
    photo cues that outweigh stylised ones, or when the output shows a realistic face and the
    prompt asked for no clear style. Uploaded photo with a face: blocked with sexual context
    at every level but off, with any sensitive context under balanced, and unless clearly
    stylised under strict.
    """
    policy = policy or Policy.default()
    level = policy.deepfake_level
    details = {"deepfake": risk.to_dict()}
    if level == "off":
        return Decision.allow("deepfake check is off for this server", **details)
    why = ""
    if risk.names:
        who = ", ".join(risk.names)
        if level == "strict":
            why = f"it names a real person ({who}) and this server blocks all real people"
        elif risk.sensitive:
            kinds = ", ".join(CONTEXT_NAMES[k] for k in risk.sensitive)
            why = f"it names a real person ({who}) in a sensitive context ({kinds})"
        elif risk.photoreal_wins:
            why = (f"it names a real person ({who}) with photorealistic cues "
                   f"({', '.join(risk.photoreal)})")
        elif risk.output_faces and not risk.is_stylised:
            why = (f"it names a real person ({who}) and the image shows a realistic face; "
                   "ask for a clear style (caricature, oil painting, lego ...)")
    elif risk.fuzzy_names and (
        risk.sensitive or (level == "strict" and risk.photoreal_wins)
    ):
        who = ", ".join(risk.fuzzy_names)
        what = (", ".join(CONTEXT_NAMES[k] for k in risk.sensitive) if risk.sensitive
                else "photorealistic")
        why = f"it names someone spelled like a real person ({who}) in a {what} context"
    elif risk.init_faces:
        if "sensitive_sexual" in risk.sensitive:
            why = "it edits an uploaded photo of a real face in a sexual or undressing context"
        elif level == "balanced" and risk.sensitive:
            kinds = ", ".join(CONTEXT_NAMES[k] for k in risk.sensitive)
            why = f"it edits an uploaded photo of a real face in a sensitive context ({kinds})"
        elif level == "strict" and not (risk.is_stylised and not risk.sensitive):
            why = ("it edits an uploaded photo of a real face, and this server allows that "
                   "only in a clearly stylised, non-sensitive way")
    if not why:
        return Decision.allow("no deepfake risk rule matched", **details)
    evidence = risk.name_evidence + tuple(
        f"{CONTEXT_NAMES[k]}: {', '.join(v)}" for k, v in risk.sensitive.items()
    )
    if risk.photoreal:
        evidence += (f"photorealistic: {', '.join(risk.photoreal)}",)
    if risk.init_faces:
        evidence += (f"init image faces: {risk.init_faces}",)
    if risk.output_faces:
        evidence += (f"output faces: {risk.output_faces}",)
    reason = f"Blocked as deepfake risk (level {level}): {why}."
    return Decision("block", ("real_person",), evidence, reason, details)


def check_request(
    prompt: str,
    policy: Policy | None = None,
    *,
    init_image: Image.Image | None = None,
    nsfw_channel: bool | None = None,
) -> Decision:
    """Before generation: the prompt, plus faces in an uploaded init image (runs NudeNet once).

    With ``nsfw_channel`` given, the same scan also applies the nudity rule to the upload, so
    an input image gets the NSFW check without a second model run.
    """
    policy = policy or Policy.default()
    if init_image is None:
        return decide(assess(prompt, policy), policy)
    from moderation.nsfw import decide_image, scan_image

    scan = scan_image(init_image)
    risk = decide(assess(prompt, policy, init_faces=len(scan.faces(policy.face_threshold))), policy)
    if nsfw_channel is None:
        return risk
    return combine(risk, decide_image(scan, policy, nsfw_channel=nsfw_channel))


def check_output(
    prompt: str,
    image: Image.Image | object,
    policy: Policy | None = None,
    *,
    nsfw_channel: bool | None = None,
) -> Decision:
    """After generation: a realistic face in the output raises the risk of a named person.

    ``image`` is a PIL image or an ``ImageScan`` already made. With ``nsfw_channel`` given,
    the nudity rule is applied to the same scan, so post-processing needs one call per image.
    """
    from moderation.nsfw import ImageScan, decide_image, scan_image

    policy = policy or Policy.default()
    scan = image if isinstance(image, ImageScan) else scan_image(image)
    faces = len(scan.faces(policy.face_threshold))
    risk = decide(assess(prompt, policy, output_faces=faces), policy)
    if nsfw_channel is None:
        return risk
    return combine(risk, decide_image(scan, policy, nsfw_channel=nsfw_channel))
