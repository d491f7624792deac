"""Deepfake-risk rules: names, photo vs style cues, sensitive context, faces in and out."""

from __future__ import annotations

import pytest
from PIL import Image
from skimage import data

from moderation import deepfake
from moderation.nsfw import scan_image
from moderation.policy import Policy, make_policy
from moderation.prompt_gate import check_prompt

BALANCED = Policy.default()
STRICT = make_policy(deepfake_level="strict")
OFF = make_policy(deepfake_level="off")


@pytest.fixture(scope="module")
def astronaut_scan():
    return scan_image(Image.fromarray(data.astronaut()))


@pytest.fixture(scope="module")
def plain_scan():
    return scan_image(Image.new("RGB", (512, 512), (90, 140, 200)))


def gate(prompt: str, policy: Policy = BALANCED) -> str:
    return check_prompt(prompt, policy).action


@pytest.mark.parametrize(
    "prompt",
    ["photo of Taylor Swift at the grocery store", "Elon Musk, 4k", "selfie of Keanu Reeves",
     "leaked footage of Barack Obama", "bodycam footage of Justin Bieber",
     "security camera still of Tom Hanks", "dslr photo of Greta Thunberg"],
)
def test_real_person_with_photorealistic_cue_is_blocked(prompt: str) -> None:
    d = check_prompt(prompt, BALANCED)
    assert d.action == "block" and d.categories == ("real_person",)
    assert any(e.startswith("real_person:") for e in d.evidence)
    assert "photorealistic" in d.reason


@pytest.mark.parametrize(
    ("prompt", "kind"),
    [
        ("Emma Watson in lingerie, cartoon", "sexual"),
        ("Joe Biden bleeding, watercolor", "violence"),
        ("Donald Trump arrested, caricature", "arrest"),
        ("Obama snorting cocaine, anime", "drugs"),
        ("Kamala Harris endorsing a cryptocurrency, oil painting", "political endorsement"),
    ],
)
def test_real_person_in_sensitive_context_is_blocked_even_when_stylised(prompt: str, kind: str) -> None:
    d = check_prompt(prompt, BALANCED)
    assert d.action == "block" and "real_person" in d.categories
    assert kind in d.reason


@pytest.mark.parametrize(
    "prompt",
    ["caricature of Donald Trump playing golf", "oil painting of Abraham Lincoln reading",
     "Barack Obama as a lego figure", "a photo of a lego figure of Barack Obama",
     "watercolor of Albert Einstein on a bicycle"],
)
def test_stylised_non_sensitive_depictions_pass_under_balanced(prompt: str) -> None:
    assert gate(prompt) == "allow"
    assert gate(prompt, STRICT) == "block"


@pytest.mark.parametrize(
    "prompt", ["photo of Batman on a rooftop, 4k", "Sherlock Holmes, photorealistic",
               "Mario kart race", "a woman who looks friendly, photo"]
)
def test_fictional_and_anonymous_people_pass(prompt: str) -> None:
    assert gate(prompt) == "allow"
    assert gate(prompt, STRICT) == "allow"


def test_off_disables_the_real_person_check_but_not_minors() -> None:
    assert gate("photo of Taylor Swift, 4k", OFF) == "allow"
    assert gate("Taylor Swift in lingerie", OFF) == "allow"
    assert gate("Taylor Swift nude", OFF) == "block"  # still sexual outside nsfw channels
    assert gate("sexy 13 year old", OFF) == "block"


def test_names_are_matched_after_deobfuscation() -> None:
    assert gate("T4ylor Sw1ft photo") == "block"
    assert gate("Еlon Мusk photo") == "block"  # Cyrillic Е and М
    assert gate("t a y l o r s w i f t photo") == "block"
    assert gate("photo of elonmusk") == "block"


def test_common_words_in_names_do_not_match_alone() -> None:
    for prompt in ["a swift flying over a lake, photo", "the Jordan river, photo",
                   "a rose bush, photo", "a musk ox in snow, photo",
                   "a king charles spaniel puppy, photo", "a trump card on a table, photo"]:
        assert deepfake.assess(prompt).names == (), prompt


def test_moderators_can_add_names() -> None:
    policy = make_policy(public_figures=["Jane Streamerface"])
    assert gate("photo of Jane Streamerface", BALANCED) == "allow"
    d = check_prompt("photo of J4ne Str3amerface", policy)
    assert d.action == "block" and "Jane Streamerface" in d.reason


def test_allowlisted_name_is_not_a_real_person_risk() -> None:
    policy = make_policy(allowlist=["Taylor Swift"])
    assert gate("photo of Taylor Swift", policy) == "allow"


def test_score_rises_with_risk_and_falls_with_style() -> None:
    plain = deepfake.assess("Taylor Swift at a cafe").score
    photo = deepfake.assess("photo of Taylor Swift at a cafe").score
    styled = deepfake.assess("cartoon of Taylor Swift at a cafe").score
    arrested = deepfake.assess("photo of Taylor Swift arrested").score
    assert styled < plain < photo < arrested <= 1.0
    assert deepfake.assess("a cat at a cafe").score == 0.0


# --- image side (real NudeNet on real pixels) ---------------------------------------------------


def test_generated_face_with_named_person_blocks_unless_stylised(astronaut_scan, plain_scan) -> None:
    assert astronaut_scan.faces(BALANCED.face_threshold)
    d = deepfake.check_output("Taylor Swift at a cafe", astronaut_scan, BALANCED)
    assert d.action == "block" and "realistic face" in d.reason
    assert deepfake.check_output("Taylor Swift at a cafe, oil painting", astronaut_scan).allowed
    assert deepfake.check_output("Taylor Swift at a cafe", plain_scan).allowed
    assert deepfake.check_output("a woman at a cafe", astronaut_scan).allowed


def test_uploaded_photo_with_a_face_in_a_sexual_context_is_blocked() -> None:
    photo = Image.fromarray(data.astronaut())
    d = deepfake.check_request("make her undressed, bikini", BALANCED, init_image=photo)
    assert d.action == "block" and "uploaded photo" in d.reason
    assert deepfake.check_request("make her smile", BALANCED, init_image=photo).allowed
    assert deepfake.check_request("make her smile", STRICT, init_image=photo).blocked
    assert deepfake.check_request("make her smile, oil painting", STRICT, init_image=photo).allowed
    assert deepfake.check_request("make her bleed", BALANCED, init_image=photo).blocked


def test_uploaded_image_without_a_face_is_not_a_deepfake_risk() -> None:
    cat = Image.fromarray(data.chelsea())
    assert deepfake.check_request("make it undressed", BALANCED, init_image=cat).allowed


def test_request_check_can_apply_the_nudity_rule_to_the_upload_in_the_same_scan() -> None:
    photo = Image.fromarray(data.astronaut())
    d = deepfake.check_request("make her smile", BALANCED, init_image=photo, nsfw_channel=False)
    assert d.allowed and d.details["faces"] == 1  # the NSFW scan's details are merged in


def test_output_check_can_apply_the_nudity_rule_in_the_same_call(astronaut_scan) -> None:
    d = deepfake.check_output("a woman at a cafe", astronaut_scan, BALANCED, nsfw_channel=False)
    assert d.allowed and d.details["faces"] == 1
    d = deepfake.check_output("Taylor Swift", Image.fromarray(data.astronaut()), nsfw_channel=True)
    assert d.blocked and d.categories == ("real_person",)
