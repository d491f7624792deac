"""Watermark robustness benchmark: ``python -m bench.watermark [--unmarked N] [--baseline]``.

Embeds a random payload with a fresh key in every scikit-image sample photo (plus two synthetic
"generated" pictures: smooth gradients with shapes, like many diffusion outputs), applies each
attack, and prints per attack the mean bit accuracy, the detection rate (right payload, keyed
tag holds) and the wrong-payload rate; then PSNR, embed+verify and detect milliseconds (per
512x512 image), the false-detection rate over unmarked images (photos, crops, flips, noise, flat
colours, marks made with another key) and what happens to 64 px images. Every attack row runs
on the same images (those whose mark verified after embedding). ``--baseline`` adds plain
RivaGAN's bit accuracy (the ``invisible-watermark`` default, the mark this one replaced; ~1 s
per image and attack, so off by default).
"""

from __future__ import annotations

import argparse
import io
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance

from moderation import watermark
from moderation.watermark_key import WatermarkKey

Attack = Callable[[Image.Image], Image.Image]
SAMPLES = (
    "astronaut",
    "coffee",
    "chelsea",
    "rocket",
    "camera",
    "immunohistochemistry",
    "hubble_deep_field",
    "retina",
    "colorwheel",
    "cat",
    "brick",
    "grass",
    "gravel",
    "moon",
    "text",
    "page",
    "logo",
    "horse",
)


def sample_photos() -> dict[str, Image.Image]:
    from skimage import data

    out = {}
    for name in SAMPLES:
        try:
            arr = getattr(data, name)()
        except Exception:  # noqa: BLE001 - some samples need a download; skip those
            continue
        if arr.dtype != np.uint8:
            arr = (arr.astype(np.float64) / max(arr.max(), 1) * 255).astype(np.uint8)
        if arr.ndim == 2:
            arr = np.stack([arr] * 3, axis=-1)
        img = Image.fromarray(arr[..., :3])
        if max(img.size) > 1024:  # deliveries are at most ~1024 px; keeps the run short
            img.thumbnail((1024, 1024), Image.Resampling.LANCZOS)
        if min(img.size) >= watermark.RELIABLE_SIDE:
            out[name] = img
    return out


def synthetic(seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:512, 0:512] / 512.0
    base = np.stack([x, y, 1 - x * y], axis=-1) * rng.uniform(80, 220, 3)
    img = Image.fromarray(base.clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for _ in range(6):
        x0, y0 = rng.integers(0, 400, 2)
        size = rng.integers(40, 160)
        colour = tuple(int(c) for c in rng.integers(0, 255, 3))
        draw.ellipse((x0, y0, x0 + size, y0 + size), fill=colour)
    return img


def _encoded(fmt: str, q: int) -> Attack:
    def attack(img: Image.Image) -> Image.Image:
        buf = io.BytesIO()
        img.save(buf, fmt, quality=q)
        return Image.open(buf).convert("RGB")

    return attack


def _jpeg(q: int) -> Attack:
    return _encoded("JPEG", q)


def _webp(q: int) -> Attack:
    return _encoded("WEBP", q)


def _resize(factor: float, restore: bool) -> Attack:
    def attack(img: Image.Image) -> Image.Image:
        small = img.resize(
            (round(img.width * factor), round(img.height * factor)), Image.Resampling.BICUBIC
        )
        return small.resize(img.size, Image.Resampling.BICUBIC) if restore else small

    return attack


def _crop(share: float) -> Attack:
    def attack(img: Image.Image) -> Image.Image:  # from the top-left corner: off-centre
        return img.crop((0, 0, round(img.width * (1 - share)), round(img.height * (1 - share))))

    return attack


def _rotate(img: Image.Image) -> Image.Image:
    return img.rotate(2, Image.Resampling.BICUBIC)


def _tone(img: Image.Image) -> Image.Image:
    return ImageEnhance.Contrast(ImageEnhance.Brightness(img).enhance(1.15)).enhance(1.2)


def _centre_crop(share: float) -> Attack:
    def attack(img: Image.Image) -> Image.Image:
        dx, dy = round(img.width * share / 2), round(img.height * share / 2)
        return img.crop((dx, dy, img.width - dx, img.height - dy))

    return attack


def _flip(img: Image.Image) -> Image.Image:
    return img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)


ATTACKS: dict[str, Attack] = {
    "none": lambda img: img,
    "jpeg 90": _jpeg(90),
    "jpeg 75": _jpeg(75),
    "jpeg 50": _jpeg(50),
    "jpeg 30": _jpeg(30),
    "webp 80": _webp(80),
    "webp 50": _webp(50),
    "resize 0.75 restored": _resize(0.75, True),
    "resize 0.75": _resize(0.75, False),
    "resize 0.5 restored": _resize(0.5, True),
    "resize 0.5": _resize(0.5, False),
    "resize 1.5 + jpeg 85": lambda img: _jpeg(85)(_resize(1.5, False)(img)),
    "crop 5%": _crop(0.05),
    "crop 10%": _crop(0.10),
    "crop 40%": _crop(0.40),
    "centre crop 30%": _centre_crop(0.30),
    "flip": _flip,
    "rotate 2deg": _rotate,
    "brightness+contrast": _tone,
    "jpeg 75 + resize 0.75": lambda img: _jpeg(75)(_resize(0.75, False)(img)),
    "crop10%+0.6x+jpeg70": lambda img: _jpeg(70)(_resize(0.6, False)(_crop(0.10)(img))),
}
# Issue #13's targets: detection rate per attack.
TARGETS = {
    "jpeg 50": 0.95,
    "resize 0.5": 0.95,
    "crop 10%": 0.95,
    "crop10%+0.6x+jpeg70": 0.95,
    "jpeg 30": 0.80,
    "webp 50": 0.80,
    "crop 40%": 0.80,
    "flip": 0.80,
}


class PlainRiva:
    """invisible-watermark's RivaGAN as shipped (full resolution, 32 raw bits), for comparison."""

    def __init__(self) -> None:
        from imwatermark import WatermarkDecoder, WatermarkEncoder

        WatermarkEncoder.loadModel()
        self.enc, self.dec = WatermarkEncoder(), WatermarkDecoder("bits", 32)

    def embed(self, img: Image.Image, bits: list[int]) -> Image.Image:
        self.enc.set_watermark("bits", bits)
        bgr = np.asarray(img)[:, :, ::-1]
        return Image.fromarray(self.enc.encode(bgr, "rivaGan")[:, :, ::-1].copy())

    def accuracy(self, img: Image.Image, bits: list[int]) -> float:
        if img.width * img.height < 256 * 256:
            return float("nan")
        read = self.dec.decode(np.asarray(img)[:, :, ::-1].copy(), "rivaGan")
        return float(np.mean(np.array(read) == np.array(bits)))


def unmarked_set(photos: dict[str, Image.Image], count: int, seed: int) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    pool = list(photos.values())
    out: list[Image.Image] = []
    while len(out) < count:
        kind = len(out) % 5
        if kind == 0:
            img = pool[rng.integers(len(pool))]
            w, h = img.size
            cw, ch = rng.integers(w // 3, w + 1), rng.integers(h // 3, h + 1)
            x, y = rng.integers(0, w - cw + 1), rng.integers(0, h - ch + 1)
            out.append(img.crop((x, y, x + cw, y + ch)))
        elif kind == 1:
            img = pool[rng.integers(len(pool))]
            out.append(
                img.transpose(Image.Transpose.FLIP_LEFT_RIGHT).rotate(int(rng.integers(0, 4)) * 90)
            )
        elif kind == 2:
            size = tuple(int(v) for v in rng.integers(64, 700, 2))
            out.append(Image.fromarray(rng.integers(0, 256, (*size[::-1], 3), dtype=np.uint8)))
        elif kind == 3:
            out.append(
                Image.new(
                    "RGB",
                    tuple(int(v) for v in rng.integers(64, 700, 2)),
                    tuple(int(c) for c in rng.integers(0, 256, 3)),
                )
            )
        else:
            out.append(synthetic(int(rng.integers(1 << 30))))
    return out


@dataclass
class Robustness:
    """Every attack's rows over the marked images, and what embedding and detection cost."""

    # attack -> one (bit accuracy, detected, wrong payload, plain RivaGAN accuracy) per image
    rows: dict[str, list[tuple[float, bool, bool, float]]] = field(
        default_factory=lambda: {name: [] for name in ATTACKS}
    )
    psnrs: list[float] = field(default_factory=list)
    embed_ms: list[float] = field(default_factory=list)
    detect_ms: list[float] = field(default_factory=list)
    unverified: list[str] = field(default_factory=list)


def attack_all(
    images: dict[str, Image.Image],
    key: WatermarkKey,
    rng: np.random.Generator,
    baseline: PlainRiva | None,
) -> Robustness:
    """Mark each image with a random payload, then read it back after every attack."""
    out = Robustness()
    for image_name, img in images.items():
        payload = watermark.payload_from_int(int(rng.integers(watermark.MAX_PAYLOAD + 1)))
        started = time.perf_counter()
        marked = watermark.embed_verified(img, payload, key)  # what post-processing does
        if img.size == (512, 512):
            out.embed_ms.append((time.perf_counter() - started) * 1000)
        if not marked.verified:  # recorded as unmarked in production: not counted on
            out.unverified.append(f"{image_name} ({marked.image.width}x{marked.image.height})")
            continue
        out.psnrs.append(marked.psnr)
        plain_bits = [int(b) for b in rng.integers(0, 2, 32)]
        plain = baseline.embed(img, plain_bits) if baseline else None
        for name, attack in ATTACKS.items():
            attacked = attack(marked.image)
            started = time.perf_counter()
            found = watermark.detect(attacked, key)
            if img.size == (512, 512):
                out.detect_ms.append((time.perf_counter() - started) * 1000)
            acc = found.bit_accuracy(payload, key)
            base = baseline.accuracy(attack(plain), plain_bits) if baseline else float("nan")
            ok = found.valid and found.payload == payload
            wrong = found.valid and found.payload != payload
            out.rows[name].append((acc, ok, wrong, base))
    return out


def print_robustness(
    r: Robustness, images: dict[str, Image.Image], photos: int, baseline: bool
) -> None:
    n = len(images) - len(r.unverified)
    print(
        f"images: {len(images)} ({photos} scikit-image photos, 2 synthetic); payload "
        f"{watermark.PAYLOAD_BITS} bits + {watermark.CHECK_BITS}-bit keyed tag"
    )
    print(
        f"mark verified after embedding: {n} of {len(images)} (target >= 17); unverified "
        f"(recorded as unmarked, rows below exclude them): {', '.join(r.unverified) or 'none'}"
    )
    header = f"{'attack':24} {'bit acc':>8} {'min':>6} {'detected':>9} {'target':>7} {'wrong':>6}"
    print(header + (f" {'plain RivaGAN bit acc':>22}" if baseline else ""))
    missed = []
    for name, values in r.rows.items():
        arr = np.array(values, dtype=float)
        rate = arr[:, 1].mean()
        target = TARGETS.get(name)
        if target is not None and rate < target:
            missed.append(name)
        line = (
            f"{name:24} {arr[:, 0].mean():8.1%} {arr[:, 0].min():6.0%} {rate:9.1%} "
            f"{'' if target is None else f'{target:.0%}':>7} {arr[:, 2].mean():6.1%}"
        )
        print(line + (f" {np.nanmean(arr[:, 3]):22.1%}" if baseline else ""))
    print(f"attacks under their target: {', '.join(missed) or 'none'}")
    print(
        f"PSNR dB: mean {np.mean(r.psnrs):.1f}, min {np.min(r.psnrs):.1f} "
        f"(below 40 dB: {sum(p < 40 for p in r.psnrs)} of {n})"
    )
    print(
        f"per 512x512 image ({os.cpu_count()} CPU cores): embed+verify ms median "
        f"{np.median(r.embed_ms):.0f}; detect (look-up) ms median {np.median(r.detect_ms):.0f}"
    )


def false_detections(
    photos: dict[str, Image.Image], images: dict[str, Image.Image], key: WatermarkKey, count: int
) -> None:
    """Unmarked images, and marks made with another key: none may read as ours."""
    unmarked = unmarked_set(photos, count, seed=11)
    other = WatermarkKey.generate()  # marks minted with another key must read as nothing
    forged = [
        watermark.embed(img, watermark.payload_from_int(i), other)
        for i, img in enumerate(list(images.values())[:8])
    ]
    false, unmarked_ms = 0, []
    for img in unmarked + forged:
        started = time.perf_counter()
        false += watermark.detect(img, key).valid
        if img.size == (512, 512):
            unmarked_ms.append((time.perf_counter() - started) * 1000)
    total = len(unmarked) + len(forged)
    print(
        f"false detections on unmarked images and other keys' marks: {false} of {total} "
        f"({false / total:.2%}); design bound {watermark.FALSE_DETECTION_BOUND:.5%} per image "
        f"(x7 with a grid's tiles: {7 * watermark.FALSE_DETECTION_BOUND:.4%}; ceiling 0.1 %)"
    )
    if unmarked_ms:  # the worst case: every search runs (size guess, spectrum, sweep)
        print(f"detect ms on an unmarked 512x512 image: median {np.median(unmarked_ms):.0f}")


def small_images(photos: dict[str, Image.Image], key: WatermarkKey) -> None:
    small = [img.resize((64, 64), Image.Resampling.LANCZOS) for img in list(photos.values())[:8]]
    verified = [
        watermark.embed_verified(img, watermark.payload_for(i, 0), key).verified
        for i, img in enumerate(small)
    ]
    print(
        f"64x64 images: mark verified after embedding in {sum(verified)} of {len(small)} "
        "(unverified ones are recorded as unmarked)"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--unmarked", type=int, default=200, help="unmarked images to test")
    parser.add_argument("--baseline", action="store_true", help="add plain RivaGAN bit accuracy")
    args = parser.parse_args()

    key = WatermarkKey.generate()
    photos = sample_photos()
    images = {**photos, "synthetic-1": synthetic(1), "synthetic-2": synthetic(2)}
    rng = np.random.default_rng(7)
    baseline = PlainRiva() if args.baseline else None
    watermark.detect(images["astronaut"], key)  # derive the key's patterns outside the timings
    robustness = attack_all(images, key, rng, baseline)
    print_robustness(robustness, images, len(photos), baseline is not None)
    false_detections(photos, images, key, args.unmarked)
    small_images(photos, key)
    return 0

if __name__ == "__main__":
    raise SystemExit(main())
