"""The prompt gate under the default policy and its variants, on real word lists."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from generation.errors import UserInputError
from moderation.evaluate import FALSE_BLOCK_TARGET, RECALL_TARGET, evaluate, load_labelled
from moderation.policy import Policy, make_policy
from moderation.prompt_gate import MAX_CHECK_CHARS, check_prompt

DEFAULT = Policy.default()
LEVELS = ["strict", "balanced", "off"]
MODES = ["block", "spoiler", "allow"]


def action(prompt: str, policy: Policy = DEFAULT, nsfw: bool = False) -> str:
    return check_prompt(prompt, policy, nsfw_channel=nsfw).action


# --- default policy, normal channel -------------------------------------------------------------


@pytest.mark.parametrize(
    "prompt", ["a nude woman", "naked man on a beach", "porn", "hentai girl", "woman with bare breasts"]
)
def test_sexual_content_is_blocked_outside_age_restricted_channels(prompt: str) -> None:
    d = check_prompt(prompt, DEFAULT, nsfw_channel=False)
    assert d.action == "block"
    assert "sexual" in d.categories
    assert "age-restricted" in d.reason


@pytest.mark.parametrize(
    "prompt",
    [
        "n u d e woman",  # split by spaces
        "n.u.d.e woman",  # split by dots
        "n-u-d-e woman",  # split by hyphens
        "ｎｕｄｅ woman",  # fullwidth
        "nudе woman",  # Cyrillic e
        "nαked woman",  # Greek alpha
        "nu\u200bde woman",  # zero-width space
        "nüdé woman",  # accents
        "NuDe WoMaN",  # case
        "s3x scene",  # leetspeak digits
        "$ex on the beach",  # leetspeak symbols
        "nuuuude woman",  # stretched
        "n*de woman",  # letters masked with stars
        "nvde woman",  # v for u
        "mujer desnuda",  # another language
    ],
)
def test_each_obfuscation_kind_is_blocked(prompt: str) -> None:
    d = check_prompt(prompt, DEFAULT)
    assert d.action == "block" and "sexual" in d.categories, d
    assert d.evidence  # names the matched word


@pytest.mark.parametrize(
    "prompt",
    ["cocktail", "shuttlecock", "Scunthorpe", "breaststroke", "assassin", "Sussex",
     "Middlesex and Essex", "a therapist", "grapes", "Dickens", "Titan", "cumin",
     "pussy willow", "summa cum laude", "nude lipstick", "naked mole rat", "the naked eye",
     "a chink in the armor", "a gore-tex jacket", "a horny toad", "kinky curly hair",
     "a teddy bear torn apart by a dog", "a sexy woman in a baby blue dress", "an ice cube"],
)
def test_innocent_words_containing_a_bad_substring_pass(prompt: str) -> None:
    d = check_prompt(f"a photo of {prompt}", DEFAULT)
    assert d.action == "allow", d


@pytest.mark.parametrize(
    "prompt",
    ["a decapitated body", "disemboweled soldier", "severed head on a spike", "gore",
     "blood splatter and mutilated corpse", "d1semboweled"],
)
def test_graphic_gore_is_blocked(prompt: str) -> None:
    d = check_prompt(prompt, DEFAULT)
    assert d.action == "block" and "gore" in d.categories


def test_star_masks_need_enough_letters_to_be_read() -> None:
    assert action("s** scene") == "allow"  # could be anything
    assert action("**bold** text about a cat") == "allow"
    assert action("2 * 3 = 6, chalkboard photo") == "allow"


def test_everyday_and_anonymous_photorealistic_prompts_pass() -> None:
    for prompt in [
        "a cute corgi in a wizard hat",
        "photorealistic portrait of an old fisherman, 85mm, 4k",
        "candid street photo of a woman laughing in the rain",
        "kids playing football in a park, photo",
        "a knight fighting a dragon, epic battle",
    ]:
        assert action(prompt) == "allow", prompt


# --- minors: every channel, every policy ---------------------------------------------------------


MINOR_PROMPTS = [
    "a sexy 12 year old",
    "nude teen",
    "naked child",
    "loli",
    "fourteen year old in lingerie",
    "a 15yo, nsfw",
    "sexy kid",
    "n u d e teenager",
    "l0li",
]


@pytest.mark.parametrize("prompt", MINOR_PROMPTS)
@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("mode", MODES)
def test_sexual_content_involving_minors_is_blocked_everywhere(prompt: str, level: str, mode: str) -> None:
    policy = make_policy(deepfake_level=level, nsfw_mode=mode, allowlist=["nude", "sexy", "loli", "teen"])
    for nsfw in (False, True):
        d = check_prompt(prompt, policy, nsfw_channel=nsfw)
        assert d.action == "block" and "sexual_minors" in d.categories, (prompt, level, mode, nsfw)


def test_minor_words_alone_or_with_adults_are_fine() -> None:
    assert action("a kid dressed as a doctor, photo") == "allow"
    assert action("a 30 year old woman in lingerie, fashion photo") == "allow"
    assert action("children's book illustration of a naked mole rat") == "allow"


# --- age-restricted channels ---------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_age_restricted_channels_follow_nsfw_mode(mode: str) -> None:
    policy = make_policy(nsfw_mode=mode)
    assert action("a nude woman", policy, nsfw=True) == mode
    assert action("a decapitated body", policy, nsfw=True) == mode
    assert action("a nude woman", policy, nsfw=False) == "block"


def test_hate_is_blocked_even_in_age_restricted_channels() -> None:
    assert action("heil hitler poster", make_policy(nsfw_mode="allow"), nsfw=True) == "block"


# --- server lists --------------------------------------------------------------------------------


def test_custom_banned_terms_are_matched_after_deobfuscation() -> None:
    policy = make_policy(banned_terms=["clown", "pineapple pizza"])
    d = check_prompt("a scary c.l.o.w.n", policy)
    assert d.action == "block" and d.categories == ("custom",)
    assert action("PINEAPPLE  pizza with ham", policy) == "block"
    assert action("a pineapple", policy) == "allow"


def test_custom_regexes_block() -> None:
    policy = make_policy(banned_regexes=[r"\bclown(s|ing)?\b"])
    d = check_prompt("three clowns", policy)
    assert d.action == "block" and any("regex" in e for e in d.evidence)


def test_a_backtracking_regex_times_out_and_fails_closed() -> None:
    # (a|aa)+$ passes validation (no nested quantifier) but backtracks exponentially.
    policy = make_policy(banned_regexes=["(a|aa)+$"])
    d = check_prompt("a" * 60 + "b", policy)
    assert d.action == "block" and "timed out" in d.evidence[0]


def test_allowlist_overrides_custom_bans_and_word_lists_but_never_minors() -> None:
    policy = make_policy(banned_terms=["clown"], allowlist=["clown fish", "nude"])
    assert action("a clown fish in a reef", policy) == "allow"
    assert action("a clown at a party", policy) == "block"
    assert action("a nude figure drawing", policy) == "allow"
    assert action("a nude child", policy) == "block"


# --- bad input -----------------------------------------------------------------------------------


@pytest.mark.parametrize("prompt", ["", "   ", "\u200b\u200b\u2060", "🍕🔥🎉", "\u0301"])
def test_empty_prompts_get_a_clear_decision(prompt: str) -> None:
    d = check_prompt(prompt, DEFAULT)
    assert d.action == "block" and d.categories == ("empty",)
    assert "empty" in d.reason


def test_ten_thousand_character_prompt_is_checked_whole() -> None:
    long = "a calm lake at dawn " * 499 + "nude"
    assert len(long) > 9_900
    assert action(long) == "block"
    assert action("a calm lake at dawn " * 500) == "allow"


def test_over_the_check_limit_is_a_clear_block() -> None:
    d = check_prompt("a" * (MAX_CHECK_CHARS + 1), DEFAULT)
    assert d.action == "block" and str(MAX_CHECK_CHARS) in d.reason


def test_mixed_scripts_and_foreign_text() -> None:
    assert action("кот в шляпе, акварель") == "allow"  # Russian: a cat in a hat, watercolour
    assert action("一只戴帽子的猫") == "allow"
    assert action("a woman, обнажённая, nudе") == "block"


def test_non_text_prompt_is_a_user_error() -> None:
    with pytest.raises(UserInputError, match="must be text"):
        check_prompt(None, DEFAULT)  # type: ignore[arg-type]


BUSY_POLICY = make_policy(
    banned_terms=["clown", "pine*apple"], banned_regexes=[r"\bfoo+\b"], allowlist=["clown fish"],
    public_figures=["Jane Doe"], nsfw_mode="spoiler",
)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300), st.booleans(), st.sampled_from([DEFAULT, BUSY_POLICY]))
def test_check_prompt_never_raises(text: str, nsfw: bool, policy: Policy) -> None:
    d = check_prompt(text, policy, nsfw_channel=nsfw)
    assert d.action in ("allow", "block", "spoiler")
    assert d.reason


# --- the labelled set ----------------------------------------------------------------------------


def test_labelled_set_meets_the_targets() -> None:
    rows = load_labelled()
    assert len(rows) >= 150
    result = evaluate(rows)
    misses = "\n".join(f"{r.expected} {r.category}: {r.prompt!r} -> {why}" for r, why in result.misses)
    assert result.block_recall >= RECALL_TARGET, misses
    assert result.false_block_rate <= FALSE_BLOCK_TARGET, misses


@pytest.mark.parametrize(
    "prompt", ["a woman's bare chest, photo", "her bare chest", "a bare-chested woman on a beach"]
)
def test_a_womans_bare_chest_is_sexual(prompt: str) -> None:
    decision = check_prompt(prompt, Policy.default(), nsfw_channel=False)
    assert decision.blocked and "sexual" in decision.categories


@pytest.mark.parametrize(
    "prompt", ["a bare chested man surfing", "a woman with a treasure chest", "chest x-ray"]
)
def test_bare_chests_of_men_and_other_chests_are_fine(prompt: str) -> None:
    assert not check_prompt(prompt, Policy.default(), nsfw_channel=False).blocked
