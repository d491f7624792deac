"""NudeNet on real pixels, and the nudity decision per channel and policy."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from PIL import Image
from skimage import data

from moderation.nsfw import (
    Detection,
    ImageScan,
    NsfwDetector,
    check_image,
    decide_image,
    scan_image,
)
from moderation.policy import Policy, make_policy


@pytest.fixture(scope="module")
def astronaut() -> Image.Image:
    return Image.fromarray(data.astronaut())


def test_plain_synthetic_image_gives_no_detection() -> None:
    scan = scan_image(Image.new("RGB", (512, 512), (30, 120, 60)))
    assert scan.detections == ()
    assert check_image(scan).allowed


def test_astronaut_photo_gives_a_face_and_no_nudity(astronaut: Image.Image) -> None:
    scan = scan_image(astronaut)
    labels = {d.label for d in scan.detections}
    assert labels == {"FACE_FEMALE"}
    assert scan.faces(0.5) and not scan.exposed(0.05)
    d = check_image(astronaut, Policy.default())
    assert d.allowed and d.details["faces"] == 1


def test_array_input_matches_nudenets_own_file_decoding(astronaut: Image.Image, tmp_path) -> None:
    path = tmp_path / "a.png"
    astronaut.save(path)
    ours = scan_image(astronaut).detections[0]
    theirs = NsfwDetector.get()._detector.detect(str(path))[0]
    assert ours.label == theirs["class"] and ours.score == pytest.approx(theirs["score"], abs=1e-3)


def test_other_image_modes_are_accepted(astronaut: Image.Image) -> None:
    assert {d.label for d in scan_image(astronaut.convert("RGBA")).detections} == {"FACE_FEMALE"}
    scan_image(astronaut.convert("L"))
    scan_image(Image.new("RGB", (7, 3000)))  # extreme aspect ratio


def test_detector_is_loaded_once_across_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(NsfwDetector, "_instance", None)
    built = []
    original = NsfwDetector.__init__

    def counting_init(self: NsfwDetector) -> None:
        built.append(self)
        original(self)

    monkeypatch.setattr(NsfwDetector, "__init__", counting_init)

    async def grab() -> list[NsfwDetector]:
        return await asyncio.gather(*(asyncio.to_thread(NsfwDetector.get) for _ in range(8)))

    instances = asyncio.run(grab())
    assert all(i is instances[0] for i in instances)
    assert len(built) == 1


# --- the decision, given detections -----------------------------------------------------------

NUDE = ImageScan((Detection("FEMALE_BREAST_EXPOSED", 0.8, (0, 0, 10, 10)),), 512, 512)
FAINT = ImageScan((Detection("FEMALE_BREAST_EXPOSED", 0.3, (0, 0, 10, 10)),), 512, 512)
COVERED = ImageScan((Detection("FEMALE_BREAST_COVERED", 0.9, (0, 0, 10, 10)),), 512, 512)


def test_exposed_nudity_blocks_outside_age_restricted_channels() -> None:
    d = decide_image(NUDE, Policy.default(), nsfw_channel=False)
    assert d.action == "block" and d.categories == ("nsfw_image",)
    assert "FEMALE_BREAST_EXPOSED 0.80" in d.evidence
    spoiler = make_policy(spoiler_instead_of_block=True)
    assert decide_image(NUDE, spoiler, nsfw_channel=False).action == "spoiler"


@pytest.mark.parametrize("mode", ["block", "spoiler", "allow"])
def test_age_restricted_channels_follow_nsfw_mode(mode: str) -> None:
    assert decide_image(NUDE, make_policy(nsfw_mode=mode), nsfw_channel=True).action == mode


def test_threshold_and_covered_labels() -> None:
    assert decide_image(FAINT, Policy.default(), nsfw_channel=False).allowed
    assert decide_image(FAINT, make_policy(nsfw_threshold=0.25), nsfw_channel=False).blocked
    assert decide_image(COVERED, Policy.default(), nsfw_channel=False).allowed


@pytest.mark.parametrize(
    "image",
    [
        data.astronaut(),
        data.chelsea(),
        data.coffee(),
        data.rocket(),
        data.astronaut()[40:300, 120:400],  # not square: exercises the padding arithmetic
    ],
    ids=["astronaut", "chelsea", "coffee", "rocket", "astronaut-crop"],
)
def test_vectorised_box_decoding_matches_nudenet(image) -> None:
    detector = NsfwDetector.get()
    for size in (None, (96, 64)):
        img = Image.fromarray(image) if size is None else Image.fromarray(image).resize(size)
        bgr = np.ascontiguousarray(np.asarray(img.convert("RGB"))[:, :, ::-1])
        assert detector._detect(bgr) == detector._detector.detect(bgr)


def test_one_batched_call_finds_what_single_calls_find(astronaut: Image.Image) -> None:
    # The GPU path (one model call for a job's images), run here on the CPU provider.
    detector = NsfwDetector.get()
    images = [
        astronaut,
        Image.fromarray(data.coffee()),
        Image.fromarray(data.astronaut()[40:300, 120:400]),  # padded differently
    ]
    batched = detector.scan_many(images, batched=True)
    single = [detector.scan(image) for image in images]
    assert [s.width for s in batched] == [s.width for s in single]
    for one, many in zip(single, batched, strict=True):
        assert [d.label for d in many.detections] == [d.label for d in one.detections]
        for a, b in zip(one.detections, many.detections, strict=True):
            assert a.score == pytest.approx(b.score, abs=1e-3)
            assert np.allclose(a.box, b.box, atol=2)
    assert detector.scan_many(images) == single  # on the CPU: one call per image
