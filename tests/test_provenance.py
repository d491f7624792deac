"""Provenance: PNG metadata, C2PA credentials and "who made this?" on a real store.

The images are real photos (scikit-image samples) run through the real post-processing step
(NudeNet, watermark, metadata, C2PA); the tiny model's 64 px outputs are covered in
``test_postprocess.py``.
"""

from __future__ import annotations

import asyncio
import io
import json
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data

from bot.cli import main
from core.config import Settings
from core.jobs import Job, JobKind
from core.store import Store
from generation.engine import GenerationResult, make_grid
from generation.request import GenerationRequest
from moderation import audit, provenance, watermark
from moderation.decision import Decision
from moderation.policy import Policy, save_policy
from moderation.postprocess import PostProcessor
from moderation.watermark_key import WatermarkKey

PROMPT = "an astronaut and a cat, studio photo"


def photos(count: int = 2) -> list[Image.Image]:
    # 384 px: above the 256 px the mark needs, small enough to keep the tests quick.
    names = ("astronaut", "chelsea", "coffee", "rocket")[:count]
    return [Image.fromarray(getattr(data, name)()).resize((384, 384)) for name in names]


def result_of(images: list[Image.Image], seed: int = 1000) -> GenerationResult:
    req = GenerationRequest(
        PROMPT,
        negative_prompt="blurry",
        width=384,
        height=384,
        steps=20,
        guidance=7.0,
        scheduler="euler_a",
        seed=seed,
        count=len(images),
    )
    return GenerationResult(images, req.seeds, req, 384, 384, "test-model")


def settings_in(tmp_path: Path, **provenance_fields) -> Settings:
    return Settings(
        data_dir=tmp_path, provenance={"instance_name": "Test Instance", **provenance_fields}
    )


async def add_job(store: Store, *, user_id: int = 42, count: int = 2, **job_fields) -> Job:
    req = result_of(photos(count)).request
    return await store.add_job(
        Job(
            id=job_fields.pop("id", "job0000001"),
            user_id=user_id,
            kind=JobKind.IMAGINE,
            params=req.to_params(),
            est_cost=1.0,
            guild_id=7,
            channel_id=8,
            **job_fields,
        )
    )


async def run_job(
    store: Store,
    settings: Settings,
    *,
    count: int = 2,
    energy_joules: float | None = None,
    **job_fields,
) -> Job:
    """A job through the real post-processing step, recorded as the worker does."""
    job = await add_job(store, count=count, **job_fields)
    await store.mark_running(job.id)
    post = PostProcessor(settings, store=store, loop=asyncio.get_running_loop())
    processed = await asyncio.to_thread(post, job, result_of(photos(count)))
    await store.mark_done(job.id, processed, energy_joules=energy_joules)
    return job


def jpeg_and_shrink(path: Path, quality: int = 75, factor: float = 0.75) -> bytes:
    img = Image.open(path).convert("RGB")
    img = img.resize((round(img.width * factor), round(img.height * factor)), Image.BICUBIC)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


@pytest.fixture
async def store(tmp_path: Path):
    s = await Store.open(tmp_path / "imagine.db")
    yield s
    await s.close()


async def test_lookup_finds_the_job_after_jpeg_and_resize(store, tmp_path):
    settings = settings_in(tmp_path)
    other = await add_job(store, id="otherjob01", user_id=1)
    job = await run_job(store, settings, id="thejob0001", user_id=42)
    await audit.record(
        store,
        guild_id=7,
        channel_id=8,
        user_id=42,
        job_id=job.id,
        stage="prompt",
        decision=Decision("spoiler", ("suggestive",), ("swimsuit",), "suggestive prompt"),
    )
    images = await store.images_for_job(job.id)
    assert all(img.moderation["watermark"]["verified"] for img in images)

    shared = tmp_path / "found_in_the_wild.jpg"
    shared.write_bytes(jpeg_and_shrink(Path(images[1].path)))
    found = await provenance.lookup(store, shared)
    assert found.matched_by == "watermark"
    assert found.job["id"] == job.id != other.id
    assert found.job["user_id"] == 42
    assert found.job["guild_id"] == 7 and found.job["channel_id"] == 8
    assert found.job["params"]["prompt"] == PROMPT
    assert found.image["idx"] == 1 and found.image["seed"] == 1001
    assert [m["action"] for m in found.moderation] == ["spoiler"]
    text = provenance.format_lookup(found)
    assert "user 42" in text and PROMPT in text and "spoiler" in text
    assert "GPU energy: not measured" in text  # recorded without an energy counter

    grid = tmp_path / "grid.jpg"
    grid.write_bytes(jpeg_and_shrink(Path((await store.get_job(job.id)).grid_path)))
    found = await provenance.lookup(store, grid)
    assert found.job["id"] == job.id and found.image["grid"] is True

    # The untouched file: found by its hash, with its metadata and C2PA credentials.
    found = await provenance.lookup(store, Path(images[0].path))
    assert found.matched_by == "sha256" and found.job["id"] == job.id
    meta = found.metadata
    assert meta["ai_generated"] is True
    assert meta["imagine_bot"]["instance"] == "Test Instance"
    assert meta["imagine_bot"]["job_id"] == job.id
    assert meta["parameters"].startswith(PROMPT)
    assert "Negative prompt: blurry" in meta["parameters"]
    assert "Seed: 1000" in meta["parameters"] and "Size: 384x384" in meta["parameters"]
    assert "Sampler: Euler a" in meta["parameters"] and "Model: test-model" in meta["parameters"]
    assert meta["c2pa"]["validation_state"] in ("Valid", "Trusted")
    assert meta["c2pa"]["ai_generated"] is True


async def test_private_policy_leaves_the_prompt_out(store, tmp_path):
    settings = settings_in(tmp_path, include_prompt=False, c2pa=False)
    job = await run_job(store, settings, count=1)
    path = Path((await store.images_for_job(job.id))[0].path)
    raw = path.read_bytes()
    assert PROMPT.encode() not in raw and b"blurry" not in raw
    meta = provenance.read_metadata(raw)
    assert meta["parameters"].startswith("Steps: 20") and "c2pa" not in meta
    assert meta["ai_generated"] is True


async def test_lookup_gives_the_gpu_energy_charged_to_the_job(store, tmp_path):
    job = await run_job(store, settings_in(tmp_path), count=1, energy_joules=42.0)
    images = await store.images_for_job(job.id)
    found = await provenance.lookup(store, Path(images[0].path))
    assert found.job["id"] == job.id and found.job["energy_joules"] == 42.0
    assert "GPU energy: 42.0 J" in provenance.format_lookup(found)


async def test_unknown_image_is_reported_as_not_found(store, tmp_path):
    path = tmp_path / "coffee.png"
    Image.fromarray(data.coffee()).save(path)
    found = await provenance.lookup(store, path)
    assert found.job is None and not found.detection.valid
    assert "not found" in provenance.format_lookup(found)


def test_signing_keys_are_created_once(tmp_path):
    chain, key = provenance.ensure_signing_keys(tmp_path / "keys", "x")
    before = chain.read_bytes(), key.read_bytes()
    assert (key.stat().st_mode & 0o777) == 0o600
    assert chain.read_bytes().count(b"BEGIN CERTIFICATE") == 2  # leaf + CA
    again = provenance.ensure_signing_keys(tmp_path / "keys", "x")
    assert (again[0].read_bytes(), again[1].read_bytes()) == before


def test_c2pa_failure_is_not_fatal(tmp_path):
    signer = provenance.C2paSigner.for_settings(settings_in(tmp_path))
    assert signer is not None
    signer._signer = object()  # a broken native signer: signing raises inside c2pa
    meta = provenance.ImageProvenance("i", "job", 0, "p")
    png = provenance.encode_png(Image.new("RGB", (32, 32)), meta, signer)
    assert Image.open(io.BytesIO(png)).info["parameters"] == "p"
    assert signer.last_error


async def test_cli_provenance_json_and_bad_input(store, tmp_path, capsys):
    settings = settings_in(tmp_path, c2pa=False)
    job = await run_job(store, settings, count=1)
    shot = tmp_path / "shot.jpg"
    shot.write_bytes(jpeg_and_shrink(Path((await store.images_for_job(job.id))[0].path)))
    db = str(store.path)
    rc = await asyncio.to_thread(main, ["provenance", str(shot), "--db", db, "--json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0 and out["found"] and out["job"]["id"] == job.id
    assert out["job"]["user_id"] == 42 and out["watermark"]["check_bits_ok"]

    junk = tmp_path / "notes.png"
    junk.write_text("not an image")
    rc = await asyncio.to_thread(main, ["provenance", str(junk), "--db", db])
    assert rc == 2 and "not a recognised image" in capsys.readouterr().err
    rc = await asyncio.to_thread(main, ["provenance", str(shot), "--db", str(tmp_path / "no.db")])
    assert rc == 2 and "does not exist" in capsys.readouterr().err


def test_xmp_flag_is_standard_iptc():
    info = provenance.png_info(provenance.ImageProvenance("a<b", "j", 0, None))
    buf = io.BytesIO()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(buf, "PNG", pnginfo=info)
    xmp = Image.open(io.BytesIO(buf.getvalue())).info["XML:com.adobe.xmp"]
    assert provenance.TRAINED_ALGORITHMIC_MEDIA in xmp and "a&lt;b" in xmp


async def test_grid_tiles_carry_their_images_marks(store, tmp_path):
    """The grid is the delivered (labelled, marked) images tiled; lookups read it tile by tile."""
    settings = settings_in(tmp_path, c2pa=False)
    await save_policy(store, 7, None, Policy(ai_label=True), 1)  # a badge on every image
    job = await run_job(store, settings, count=4, id="gridjob001")
    grid_path = Path((await store.get_job(job.id)).grid_path)
    images = await store.images_for_job(job.id)
    assert all(img.watermark_payload for img in images)  # every single verified

    grid = Image.open(grid_path).convert("RGB")
    delivered = [Image.open(img.path).convert("RGB") for img in images]
    assert np.array_equal(
        np.asarray(grid), np.asarray(make_grid(delivered))
    )  # no badge or mark of its own
    meta = provenance.read_metadata(grid_path.read_bytes())["imagine_bot"]
    assert meta["job_id"] == job.id and meta["watermark_payload"] is None
    assert meta["tile_watermark_payloads"] == [img.watermark_payload for img in images]
    tiles = watermark.detect_tiles(grid, provenance.store_key(store))
    assert [(t.layout, t.position, t.detection.payload_hex) for t in tiles] == [
        ((2, 2), img.index, img.watermark_payload) for img in images
    ]

    shared = tmp_path / "grid.jpg"
    shared.write_bytes(jpeg_and_shrink(grid_path))
    found = await provenance.lookup(store, shared)
    assert found.matched_by == "watermark" and found.job["id"] == job.id
    assert found.image["grid"] is True
    assert found.image["tiles"] == [0, 1, 2, 3]
    text = provenance.format_lookup(found)
    assert "read as a 2x2 grid" in text and "image: the grid" in text

    box = watermark.tile_boxes(grid.size, (2, 2))[2]  # one picture cut out of the grid
    cropped = tmp_path / "tile.jpg"
    grid.crop(box).save(cropped, "JPEG", quality=75)
    found = await provenance.lookup(store, cropped)
    assert found.matched_by == "watermark" and found.job["id"] == job.id
    assert found.image["idx"] == 2 and found.image["seed"] == 1002 and found.tiles == []


async def test_unmarked_grid_is_not_found(store, tmp_path):
    for n in range(3):  # jobs whose seq a false tile reading could name
        await add_job(store, id=f"unmarked0{n}")
    path = tmp_path / "grid.png"
    make_grid(photos(4)).save(path)
    found = await provenance.lookup(store, path)
    assert found.job is None and not found.detection.valid and found.tiles == []
    assert found.to_dict()["grid_tiles"] == []


# --- who may be named: only unforgeable evidence ------------------------------------------------


def old_unkeyed_mark(img: Image.Image, payload: bytes) -> Image.Image:
    """The scheme before the key (RivaGAN, public CRC check bits and mask): anyone could run it."""
    from imwatermark import WatermarkEncoder

    value = int.from_bytes(payload, "big")
    word = (value << 14) | (zlib.crc32(b"imagine-bot/watermark/v1" + payload) & 0x3FFF)
    mask = np.random.default_rng(0x1A6B07).integers(0, 2, 32)
    bits = [((word >> (31 - i)) & 1) ^ int(mask[i]) for i in range(32)]
    WatermarkEncoder.loadModel()
    encoder = WatermarkEncoder()
    encoder.set_watermark("bits", bits)
    bgr = np.asarray(img.convert("RGB"))[:, :, ::-1].copy()
    return Image.fromarray(encoder.encode(bgr, "rivaGan")[:, :, ::-1].copy())


async def test_forged_evidence_names_nobody(store, tmp_path):
    """Marks minted with another key or the old unkeyed scheme, a PNG chunk, another
    instance's C2PA: each names a real job, and none of them makes lookup name its author."""
    settings = settings_in(tmp_path)
    job = await run_job(store, settings, count=1, id="victim0001", user_id=42)
    payload = watermark.payload_for(job.seq, 0)
    bait = Image.fromarray(data.coffee())  # "an abusive image" someone wants to pin on user 42
    claim = provenance.ImageProvenance("Test Instance", job.id, 0, PROMPT, payload.hex())

    other_key = WatermarkKey.generate()
    foreign = Path(tmp_path / "other-instance")
    other_signer = provenance.C2paSigner.for_settings(settings_in(foreign))
    forgeries = {
        "other key": watermark.embed(bait, payload, other_key),
        "old unkeyed scheme": old_unkeyed_mark(bait, payload),
    }
    for name, img in forgeries.items():
        path = tmp_path / f"{name}.png"
        img.save(path)
        found = await provenance.lookup(store, path)
        assert found.job is None and found.matched_by is None, name
        assert "user 42" not in provenance.format_lookup(found)
    assert watermark.detect(forgeries["other key"], other_key).payload == payload  # it is a mark

    chunk = tmp_path / "chunk.png"
    chunk.write_bytes(provenance.encode_png(bait, claim))  # our text chunks, no signature
    found = await provenance.lookup(store, chunk)
    assert found.job is None and found.metadata_claim == job.id
    text = provenance.format_lookup(found)
    assert f"metadata claims job {job.id}, unverified" in text and "names nobody" in text
    assert "user 42" not in text and found.to_dict()["found"] is False

    signed_elsewhere = tmp_path / "other-c2pa.png"
    signed_elsewhere.write_bytes(provenance.encode_png(bait, claim, other_signer))
    found = await provenance.lookup(store, signed_elsewhere)
    assert found.metadata["c2pa"]["validation_state"] == "Valid"  # valid, just not ours
    assert not found.metadata["c2pa"]["ours"] and found.job is None


async def test_own_c2pa_signature_names_the_job(store, tmp_path):
    settings = settings_in(tmp_path)
    job = await run_job(store, settings, count=1, id="signed0001", user_id=42)
    signer = provenance.C2paSigner.for_settings(settings)
    unmarked = Image.fromarray(data.coffee())  # no mark; a file the store never saw
    meta = provenance.ImageProvenance("Test Instance", job.id, 0, PROMPT)
    path = tmp_path / "signed.png"
    path.write_bytes(provenance.encode_png(unmarked, meta, signer))
    found = await provenance.lookup(store, path)
    assert (
        found.metadata["c2pa"]["ours"] and found.metadata["c2pa"]["validation_state"] == "Trusted"
    )
    assert found.matched_by == "c2pa" and found.job["id"] == job.id
