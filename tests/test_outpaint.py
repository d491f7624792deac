"""Zoom Out, Pan and Vary (Region): canvas geometry, and the real tiny pipelines painting it."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image, ImageDraw

from core.errors import UserInputError
from core.jobs import JobStatus
from core.store import Store
from generation.engine import Engine
from generation.outpaint import build_canvas, feather_px, parse_canvas
from generation.request import GenerationRequest

LANCZOS = Image.Resampling.LANCZOS
LIMITS = SimpleNamespace(max_side=2048)


def structured(size: tuple[int, int]) -> Image.Image:
    """A gradient with shapes: a flat image would hide a misplaced or resampled source."""
    w, h = size
    ys, xs = np.mgrid[0:h, 0:w]
    arr = np.stack([xs * 255 // max(1, w - 1), ys * 255 // max(1, h - 1), (xs + ys) % 256], -1)
    img = Image.fromarray(arr.astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(img)
    draw.ellipse((w // 8, h // 8, w // 2, h // 2), fill=(250, 20, 30))
    draw.rectangle((w // 2, h // 2, w - w // 6, h - h // 5), fill=(10, 200, 60))
    draw.line((0, h - 1, w - 1, 0), fill=(255, 255, 255), width=3)
    return img


def canvas_request(source: Image.Image, spec: str, **kw) -> GenerationRequest:
    kind = spec.split(":")[0]
    return GenerationRequest(
        "a wide landscape",
        kind=kind,
        canvas=spec,
        init_image=source,
        strength=1.0,
        count=kw.pop("count", 1),
        seed=kw.pop("seed", 11),
        steps=2,
        **kw,
    )


def max_diff(a: Image.Image, b: Image.Image) -> int:
    assert a.size == b.size
    return int(np.abs(np.asarray(a, np.int16) - np.asarray(b, np.int16)).max())


def crop_in(img: Image.Image, box: tuple[int, int, int, int], margin: int) -> Image.Image:
    x0, y0, x1, y1 = box
    return img.crop((x0 + margin, y0 + margin, x1 - margin, y1 - margin))


@pytest.mark.parametrize(("factor", "inner"), [("2", 64), ("1.5", round(128 / 1.5))])
def test_zoom_keeps_the_shrunk_source_exact_in_the_centre(tiny_engine: Engine, factor, inner):
    source = structured((128, 128))
    [res] = tiny_engine.generate([canvas_request(source, f"zoom:{factor}")])
    (image,) = res.images
    assert image.size == (128, 128) and (res.width, res.height) == (128, 128)
    x0 = (128 - inner) // 2
    margin = feather_px((128, 128)) + 1
    expected = source.resize((inner, inner), LANCZOS)
    box = (x0, x0, x0 + inner, x0 + inner)
    got = crop_in(image, box, margin)
    assert max_diff(got, crop_in(expected, (0, 0, inner, inner), margin)) <= 1
    # The border is painted, not left black or the stretched fill.
    border = np.asarray(image.crop((0, 0, 128, x0 - margin)), np.int16)
    assert border.std() > 1


@pytest.mark.parametrize(
    ("direction", "size", "keep"),
    [("right", (96, 64), (0, 0, 64, 64)), ("up", (64, 96), (0, 32, 64, 96))],
)
def test_pan_extends_one_side_and_keeps_the_source(tiny_engine: Engine, direction, size, keep):
    source = structured((64, 64))
    [res] = tiny_engine.generate([canvas_request(source, f"pan:{direction}")])
    (image,) = res.images
    assert image.size == size and (res.width, res.height) == size
    margin = feather_px(size) + 1
    x0, y0, x1, y1 = keep
    # Only the side facing the new strip blends; the canvas-edge sides stay exact to the edge.
    seam = (x0, y0, x1 - margin, y1) if direction == "right" else (x0, y0 + margin, x1, y1)
    src_box = (0, 0, 64 - margin, 64) if direction == "right" else (0, margin, 64, 64)
    assert max_diff(image.crop(seam), source.crop(src_box)) <= 1
    # The generation ran at the canvas's aspect near the model's native area, not canvas size.
    assert res.request.width * res.request.height <= 64 * 64 * 1.2


def test_region_repaints_the_box_and_keeps_the_rest(tiny_engine: Engine):
    source = structured((64, 64))
    [res] = tiny_engine.generate([canvas_request(source, "region:0,0,0.5,1")])
    (image,) = res.images
    assert image.size == (64, 64)
    margin = feather_px((64, 64)) + 1
    assert (
        max_diff(image.crop((32 + margin, 0, 64, 64)), source.crop((32 + margin, 0, 64, 64))) <= 1
    )
    left = np.abs(
        np.asarray(image.crop((0, 0, 32, 64)), np.int16)
        - np.asarray(source.crop((0, 0, 32, 64)), np.int16)
    )
    assert left.mean() > 10


@pytest.mark.parametrize(
    ("direction", "size", "keep"),
    [
        ("left", (96, 64), (32, 0, 96, 64)),
        ("right", (96, 64), (0, 0, 64, 64)),
        ("up", (64, 96), (0, 32, 64, 96)),
        ("down", (64, 96), (0, 0, 64, 64)),
    ],
)
def test_pan_canvas_geometry(direction, size, keep):
    source = structured((64, 64))
    canvas = build_canvas(source, f"pan:{direction}", LIMITS)
    assert canvas.size == size and canvas.keep == keep
    assert max_diff(canvas.image.crop(keep), source) == 0
    alpha, mask = np.asarray(canvas.alpha), np.asarray(canvas.mask)
    x0, y0, x1, y1 = keep
    feather = feather_px(size)
    kept = np.zeros_like(alpha, bool)
    kept[y0:y1, x0:x1] = True
    assert (alpha[~kept] == 255).all() and (mask[~kept] == 255).all()
    # Inside the source only a feather-wide band on the new strip's side is touched, and the
    # pipeline's mask covers all of it, so the blend never shows an unpainted pixel.
    touched = kept & (alpha > 0)
    assert touched.any() and (mask[touched] == 255).all()
    ys, xs = np.nonzero(touched)
    far = {"left": xs - x0, "right": x1 - 1 - xs, "up": ys - y0, "down": y1 - 1 - ys}[direction]
    assert far.max() < feather


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ("zoom:9", "between 1.1 and 4"),
        ("zoom:big", "not a number"),
        ("pan:sideways", "unknown pan direction"),
        ("region:0,0,1.5,1", "between 0 and 1"),
        ("region:0.5,0.5,0.52,0.9", "at least 1/16"),
        ("region:0,0,1", "four numbers"),
        ("spin:2", "unknown canvas kind"),
        ("zoom", "expected <kind>:<value>"),
    ],
)
def test_bad_specs_say_what_is_allowed(spec: str, words: str):
    with pytest.raises(UserInputError) as info:
        parse_canvas(spec)
    assert words in str(info.value) and "pan:left|right|up|down" in str(info.value)


def test_pan_past_four_to_one_is_refused_and_large_pans_shrink():
    with pytest.raises(
        UserInputError,
        match="256x64; panning right would make it wider than 4:1; pan up or down instead",
    ):
        build_canvas(Image.new("RGB", (256, 64)), "pan:right", LIMITS)
    with pytest.raises(UserInputError, match="taller than 4:1; pan left or right instead"):
        build_canvas(Image.new("RGB", (64, 256)), "pan:down", LIMITS)
    canvas = build_canvas(structured((2048, 1024)), "pan:left", LIMITS)
    assert canvas.size == (2048, 683) and canvas.keep[2] == 2048


def test_engine_validation_checks_the_canvas(tiny_engine: Engine):
    source = structured((64, 64))
    with pytest.raises(UserInputError, match="unknown pan direction"):
        tiny_engine.validate(canvas_request(source, "pan:north"))
    with pytest.raises(UserInputError, match="needs the image"):
        tiny_engine.validate(GenerationRequest("x", kind="zoom", canvas="zoom:2"))
    # Derived from a canvas job's image (upscale, variation): the parent's canvas is dropped.
    assert tiny_engine.validate(GenerationRequest("x", canvas="zoom:2")).canvas is None
    zoom = tiny_engine.validate(canvas_request(source, "zoom:2"))
    reroll = tiny_engine.reroll_request(zoom)
    assert (reroll.kind, reroll.canvas) == ("zoom", "zoom:2") and reroll.seed != zoom.seed
    wide = tiny_engine.validate(canvas_request(structured((128, 64)), "pan:right"))
    assert wide.width / wide.height == pytest.approx(3, rel=0.1)  # the canvas is 192x64
    assert tiny_engine.validate(wide) == wide  # resolving again changes nothing


def test_canvas_requests_cobatch_only_with_canvas_requests(tiny_engine: Engine):
    a = tiny_engine.validate(canvas_request(structured((64, 64)), "zoom:2"))
    b = tiny_engine.validate(canvas_request(structured((96, 96)), "region:0,0,1,0.5", seed=3))
    img2img = tiny_engine.validate(
        GenerationRequest("x", init_image=structured((64, 64)), strength=1.0, steps=2, seed=1)
    )
    assert tiny_engine.batch_key(a) == tiny_engine.batch_key(b)
    assert tiny_engine.batch_key(a) != tiny_engine.batch_key(img2img)


def test_cobatched_canvas_requests_equal_their_solo_results(tiny_engine: Engine):
    reqs = [
        canvas_request(structured((128, 128)), "zoom:2", seed=5, count=2),
        canvas_request(structured((64, 64)).rotate(90), "region:0.25,0.25,0.75,0.75", seed=8),
    ]
    together = tiny_engine.generate(reqs)
    assert [r.timings["batch_images"] for r in together] == [3.0, 3.0]  # one call
    for req, got in zip(reqs, together, strict=True):
        [solo] = tiny_engine.generate([req])
        assert solo.timings["batch_images"] == req.count
        for a, b in zip(got.images, solo.images, strict=True):
            diff = np.abs(np.asarray(a, np.int16) - np.asarray(b, np.int16))
            assert a.size == b.size and diff.max() <= 1 and (diff > 0).mean() < 0.01


def test_metadata_and_infotext_name_the_canvas(tiny_engine: Engine):
    [res] = tiny_engine.generate([canvas_request(structured((64, 64)), "pan:left")])
    assert res.metadata()["kind"] == "pan" and res.metadata()["canvas"] == "pan:left"
    assert "Canvas: pan:left" in res.infotext(0) and "Size: 96x64" in res.infotext(0)


def test_sdxl_tiny_zooms(tmp_path: Path):
    from core.config import TINY_SDXL_NAME, Settings

    settings = Settings(
        data_dir=tmp_path,
        model={"name": TINY_SDXL_NAME, "device": "cpu", "cache_dir": tmp_path / "cache"},
    )
    engine = Engine.load(settings)
    [res] = engine.generate([canvas_request(structured((96, 96)), "zoom:1.5")])
    assert res.images[0].size == (96, 96) and (res.width, res.height) == (96, 96)


async def test_a_zoom_job_runs_through_the_worker(tiny_engine, tiny_settings, tmp_path: Path):
    from generation.worker import Worker

    settings = tiny_settings.model_copy(update={"data_dir": tmp_path})
    store = await Store.open(tmp_path / "imagine.db")
    try:
        worker = Worker(store, tiny_engine, settings)
        job = await worker.submit(canvas_request(structured((128, 128)), "zoom:2"), user_id=1)
        assert job.status == JobStatus.QUEUED and job.params["canvas"] == "zoom:2"
        assert Path(job.params["init_image"]).is_file()
        await worker.start()
        await worker.join()
        await worker.stop()
        row = await store.get_job(job.id)
        assert row.status == JobStatus.DONE, row.error
        assert row.kind.value == "zoom"
        (image,) = await store.images_for_job(job.id)
        assert (image.width, image.height) == (128, 128)
    finally:
        await store.close()


async def test_a_v3_database_upgrades_to_take_canvas_jobs(tmp_path: Path):
    import sqlite3

    from core.store import MIGRATIONS

    path = tmp_path / "old.db"
    db = sqlite3.connect(path, isolation_level=None)
    for version, script in enumerate(MIGRATIONS[:3], start=1):
        db.executescript(f"BEGIN;\n{script}\nPRAGMA user_version={version};\nCOMMIT;")
    db.execute(
        "INSERT INTO jobs (id, seq, user_id, kind, params, status, est_cost, created_at, "
        "energy_joules) VALUES ('old', 1, 7, 'imagine', '{}', 'done', 1.0, 0.0, 2.5)"
    )
    db.execute("INSERT INTO images (job_id, idx, seed, path) VALUES ('old', 0, 1, 'x.png')")
    db.close()
    store = await Store.open(path)
    try:
        row = await store.get_job("old")
        assert row.kind.value == "imagine" and row.energy_joules == 2.5
        async with store.db.execute("PRAGMA foreign_key_check") as cur:
            assert await cur.fetchall() == []
        async with store.db.execute("PRAGMA foreign_keys") as cur:
            assert (await cur.fetchone())[0] == 1
        await store.db.execute(
            "INSERT INTO jobs (id, seq, user_id, kind, params, status, est_cost, created_at) "
            "VALUES ('new', 2, 7, 'zoom', '{}', 'queued', 1.0, 0.0)"
        )
        with pytest.raises(sqlite3.IntegrityError):
            await store.db.execute(
                "INSERT INTO images (job_id, idx, seed, path) VALUES ('gone', 0, 1, 'y.png')"
            )
    finally:
        await store.close()


def test_a_configured_inpainting_model_loads_on_first_use(tiny_engine: Engine, tmp_path: Path):
    """``model.inpaint`` (here a diffusers folder of the tiny model) is loaded lazily, with its
    own weights, and paints canvases; the main model stays for everything else."""
    tiny_engine.txt2img.save_pretrained(tmp_path / "inpaint")
    settings = tiny_engine.settings.model_copy(
        update={
            "model": tiny_engine.limits.model_copy(update={"inpaint": str(tmp_path / "inpaint")})
        }
    )
    engine = Engine(tiny_engine.model, settings)
    assert engine._inpaint is None
    [res] = engine.generate(
        [canvas_request(structured((64, 64)), "pan:down", scheduler="dpm++_karras")]
    )
    assert res.images[0].size == (64, 96)
    assert engine._inpaint.unet is not engine.txt2img.unet
    assert type(engine._inpaint).__name__ == "StableDiffusionInpaintPipeline"
    # The next canvas job reuses it, with a fresh scheduler from its own config.
    [again] = engine.generate(
        [canvas_request(structured((64, 64)), "pan:down", scheduler="dpm++_karras")]
    )
    assert np.array_equal(np.asarray(again.images[0]), np.asarray(res.images[0]))
