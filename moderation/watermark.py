"""Invisible watermark: an 18-bit payload plus 14 check bits hidden in every delivered image.

Why this design (measured in ``bench/watermark.py``):

* The embedder is RivaGAN (the ONNX encoder/decoder that ship in the ``invisible-watermark``
  wheel): 32 bits, spread over the whole frame, so crops and small rotations keep it.
* RivaGAN alone loses bits to JPEG q50 (~78 %) and to a 0.5x downscale (~69 %) because its
  pattern is fine-grained. So we run it at a *canonical scale*: the image is resized so its
  short side is 256 px, the encoder's residual is computed there, upsampled back to the full
  size and added. The mark becomes low-frequency (JPEG and downscaling keep low frequencies),
  and the detector resizes whatever it is given to the same canonical scale, so a downscaled or
  upscaled copy decodes like the original. Embedding a 512x512 image takes ~0.1-0.3 s on CPU.
* The 32 bits are 18 payload bits + 14 check bits (truncated CRC-32 over a domain tag),
  XOR-ed with a fixed pseudo-random mask: RivaGAN misreads low-entropy words (payload 1 is
  mostly zeros) far more often than random-looking ones. A random or unmarked image passes the
  check with probability 2^-14 per tried word. The detector is a small soft-decision "Chase"
  decoder: it tries the hard decision and every flip of one or two of the 3 least reliable
  bits (7 words), which recovers most JPEG q50 errors and bounds false detections by
  7 x 2^-14 = 0.043 %.
* The residual's gain is fitted per image so the PSNR lands at 40.8 dB (within gains 1-2):
  every image gets the strongest mark the visual budget allows.
* Images whose mark does not read back right after embedding (very small images, such as the
  tiny test model's 64x64 outputs, flat black/white pictures that clip the residual, some
  textures) are reported as *unverified*, so the caller records them as unmarked instead of
  trusting a mark that is not there.
* A job's grid is not marked itself: it is tiled from the job's already marked images, so each
  tile carries its own image's payload (one embed fewer per job). ``detect_tiles`` reads a grid
  tile by tile, following ``generation.engine.make_grid``'s layout; a tile cropped out of a grid
  is simply a marked image and reads with ``detect``.
"""

from __future__ import annotations

import itertools
import math
import threading
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from generation.errors import UserInputError

PAYLOAD_BITS = 18
CHECK_BITS = 14
CODE_BITS = PAYLOAD_BITS + CHECK_BITS  # RivaGAN carries exactly 32 bits
MAX_PAYLOAD = (1 << PAYLOAD_BITS) - 1
CANONICAL_SIDE = 256  # short side at which the mark is made and read
MAX_CANONICAL_LONG_SIDE = 1024  # very wide images: cap the canonical long side instead
MIN_SIDE = 16  # below this there is nothing to mark
# Images under this size on a side carry the mark only "best effort" (verified after embedding).
RELIABLE_SIDE = 256
# Residual gain: as strong as a PSNR of TARGET_PSNR allows, within these bounds (1.0 is
# RivaGAN's own strength, ~42.5 dB on photos; 2.0 on flat or clipped images still looks clean).
TARGET_PSNR = 40.8
MIN_STRENGTH, MAX_STRENGTH = 1.0, 2.0
_CHECK_TAG = b"imagine-bot/watermark/v1"
_MASK = np.random.default_rng(0x1A6B07).integers(0, 2, CODE_BITS).astype(np.uint8)
CHASE_BITS = 3  # least reliable bits tried ...
CHASE_FLIPS = 2  # ... flipping up to this many at once

# Slots inside one job: images 0..6 (more images than 7 share slot 6); 7 marked the grids of
# jobs made before grids were tiled from marked images: new grids carry their tiles' slots.
SLOT_BITS = 3
GRID_SLOT = (1 << SLOT_BITS) - 1
SEQ_MODULUS = 1 << (PAYLOAD_BITS - SLOT_BITS)


@dataclass(frozen=True)
class Detection:
    """What the detector read. ``valid`` means the check bits hold: the payload is trustworthy."""

    payload: bytes | None  # 3 bytes, big-endian, < 2**18; None when the check bits fail
    confidence: float  # 0..1, mean certainty of the 32 decoded bits
    valid: bool
    corrected_bits: int = 0  # how many of the least reliable bits had to be flipped (0-2)
    raw_bits: str = ""  # the 32 hard-decided bits, for debugging

    @property
    def payload_hex(self) -> str | None:
        return self.payload.hex() if self.payload is not None else None

    def bit_accuracy(self, payload: bytes) -> float:
        """Share of the 32 code bits read right, if ``payload`` was the one embedded."""
        if not self.raw_bits:
            return 0.0
        read = np.array([int(b) for b in self.raw_bits], np.uint8)
        return float(np.mean(read == (_codeword(payload) > 0.5)))

    def to_dict(self) -> dict[str, object]:
        return {
            "marked": self.valid,
            "payload": self.payload_hex,
            "confidence": round(self.confidence, 4),
            "check_bits_ok": self.valid,
            "corrected_bits": self.corrected_bits,
            "raw_bits": self.raw_bits,
        }


@dataclass(frozen=True)
class Marked:
    """An embedded image and whether its payload was read back correctly right after embedding."""

    image: Image.Image
    payload: bytes
    verified: bool
    strength: float
    psnr: float


# --- payloads ---------------------------------------------------------------------------------


def payload_from_int(value: int) -> bytes:
    if not 0 <= value <= MAX_PAYLOAD:
        raise UserInputError(f"watermark payload {value} is out of range; allowed 0..{MAX_PAYLOAD}")
    return value.to_bytes(3, "big")


def payload_to_int(payload: bytes) -> int:
    if len(payload) != 3 or int.from_bytes(payload, "big") > MAX_PAYLOAD:
        raise UserInputError(
            f"watermark payload must be {PAYLOAD_BITS} bits (hex 0..{MAX_PAYLOAD:05x}), "
            f"got {payload.hex() or 'nothing'}"
        )
    return int.from_bytes(payload, "big")


def parse_payload(text: str) -> bytes:
    """Payload from hex as typed on a command line (``--payload 0a3f1``)."""
    cleaned = text.strip().lower().removeprefix("0x")
    try:
        value = int(cleaned, 16)
    except ValueError:
        raise UserInputError(
            f"payload {text!r} is not hexadecimal; give 1-5 hex digits (0..{MAX_PAYLOAD:05x})"
        ) from None
    if len(cleaned) > 6 or value > MAX_PAYLOAD:
        raise UserInputError(
            f"payload {text!r} is too large: {PAYLOAD_BITS} bits, at most {MAX_PAYLOAD:05x}"
        )
    return payload_from_int(value)


def payload_for(job_seq: int, index: int, *, grid: bool = False) -> bytes:
    """The payload of one image of a job: low 15 bits of the job's ``seq`` and a 3-bit slot.

    Derived from the job (not from the ``images`` row id) so it is known *before* the image is
    stored; the store keeps it in ``images.watermark_payload`` and ``lookup`` also finds jobs
    by ``seq``. After 32,768 jobs ``seq`` wraps and a look-up lists every candidate, newest first.
    """
    if index < 0:
        raise ValueError(f"image index {index} is negative")
    slot = GRID_SLOT if grid else min(index, GRID_SLOT - 1)
    return payload_from_int(((job_seq % SEQ_MODULUS) << SLOT_BITS) | slot)


def split_payload(payload: bytes) -> tuple[int, int]:
    """(job seq modulo 32,768, slot) of a payload made by ``payload_for``."""
    value = payload_to_int(payload)
    return value >> SLOT_BITS, value & GRID_SLOT


def _check(value: int) -> int:
    return zlib.crc32(_CHECK_TAG + value.to_bytes(3, "big")) & ((1 << CHECK_BITS) - 1)


def _codeword(payload: bytes) -> np.ndarray:
    value = payload_to_int(payload)
    word = (value << CHECK_BITS) | _check(value)
    bits = np.array([(word >> (CODE_BITS - 1 - i)) & 1 for i in range(CODE_BITS)], np.uint8)
    return (bits ^ _MASK).astype(np.float32)


def _word_ok(bits: np.ndarray) -> int | None:
    word = int("".join(str(int(b)) for b in np.asarray(bits, np.uint8) ^ _MASK), 2)
    value, check = word >> CHECK_BITS, word & ((1 << CHECK_BITS) - 1)
    return value if _check(value) == check else None


# --- the model ----------------------------------------------------------------------------------


class _Riva:
    """The two ONNX sessions, loaded once per process (thread-safe to run)."""

    _lock = threading.Lock()
    _sessions: tuple[object, object] | None = None

    @classmethod
    def get(cls) -> tuple[object, object]:
        if cls._sessions is None:
            with cls._lock:
                if cls._sessions is None:
                    import imwatermark

                    from moderation.onnx_runtime import session

                    folder = Path(imwatermark.__file__).parent
                    cls._sessions = (
                        session(folder / "rivagan_encoder.onnx"),
                        session(folder / "rivagan_decoder.onnx"),
                    )
        return cls._sessions


def _frame(rgb: np.ndarray) -> np.ndarray:
    return (rgb.astype(np.float32) / 127.5 - 1.0).transpose(2, 0, 1)[None, :, None]


def _canonical_size(width: int, height: int) -> tuple[int, int]:
    scale = CANONICAL_SIDE / min(width, height)
    scale = min(scale, MAX_CANONICAL_LONG_SIDE / max(width, height))
    return max(MIN_SIDE, round(width * scale)), max(MIN_SIDE, round(height * scale))


def _canonical(img: Image.Image) -> np.ndarray:
    size = _canonical_size(*img.size)
    resized = img if img.size == size else img.resize(size, Image.Resampling.BICUBIC)
    return np.asarray(resized, dtype=np.uint8)


def _residual(img: Image.Image, payload: bytes) -> np.ndarray:
    """RivaGAN's change at the canonical scale, resized to the image (float, RGB, 0..255 units)."""
    encoder, _ = _Riva.get()
    small = _canonical(img)
    out = encoder.run(None, {"frame": _frame(small), "data": _codeword(payload)[None]})[0]
    marked = (np.clip(out, -1.0, 1.0)[0, :, 0].transpose(1, 2, 0) + 1.0) * 127.5
    residual = marked - small.astype(np.float32)
    if residual.shape[:2] == (img.height, img.width):
        return residual
    channels = [
        np.asarray(
            Image.fromarray(residual[..., c], mode="F").resize(img.size, Image.Resampling.BICUBIC)
        )
        for c in range(3)
    ]
    return np.stack(channels, axis=-1)


def _rgb(img: Image.Image) -> Image.Image:
    return img if img.mode == "RGB" else img.convert("RGB")


def psnr(a: Image.Image, b: Image.Image) -> float:
    x = np.asarray(_rgb(a), np.float64)
    y = np.asarray(_rgb(b), np.float64)
    mse = float(np.mean((x - y) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


# --- public API -------------------------------------------------------------------------------


def embed(img: Image.Image, payload: bytes, *, strength: float | None = None) -> Image.Image:
    """Return a copy of ``img`` carrying ``payload`` (3 bytes, < 2**18). Blocking (~0.1-0.3 s).

    ``strength`` None: the strongest mark that keeps PSNR at ``TARGET_PSNR`` (robustness is
    bought with exactly the visual budget the target allows, per image).
    """
    payload_to_int(payload)
    img = _rgb(img)
    if min(img.size) < MIN_SIDE:
        raise UserInputError(
            f"image is {img.width}x{img.height}; a watermark needs at least {MIN_SIDE} px a side"
        )
    return _mark(img, _residual(img, payload), strength)[0]


def _mark(
    img: Image.Image, residual: np.ndarray, strength: float | None
) -> tuple[Image.Image, float, float]:
    """(marked image, gain, PSNR); a fitted gain is corrected once by the measured PSNR."""
    base = np.asarray(img, np.float32)

    def apply(gain: float) -> tuple[Image.Image, float]:
        pixels = np.clip(np.rint(base + gain * residual), 0, 255).astype(np.uint8)
        marked = Image.fromarray(pixels, "RGB")
        return marked, psnr(img, marked)

    gain = fit_strength(residual) if strength is None else strength
    marked, quality = apply(gain)
    if strength is None and quality < TARGET_PSNR - 0.2 and gain > MIN_STRENGTH:
        # Rounding to integers makes PSNR jump where many residuals cross 0.5: bisect on the
        # measured value (a few cheap numpy passes) for the largest gain that meets the target.
        low, high = MIN_STRENGTH, gain
        marked, quality = apply(low)
        gain = low
        for _ in range(4):
            mid = (low + high) / 2
            candidate, value = apply(mid)
            if value >= TARGET_PSNR - 0.2:
                low, gain, marked, quality = mid, mid, candidate, value
            else:
                high = mid
    return marked, gain, quality


def fit_strength(residual: np.ndarray, target_psnr: float = TARGET_PSNR) -> float:
    """Gain whose rounded residual has MSE 255^2 / 10^(psnr/10) (clipping only lowers it)."""
    power = float(np.mean(residual.astype(np.float64) ** 2))
    budget = 255.0**2 / 10 ** (target_psnr / 10) - 1 / 12  # 1/12: rounding to integers
    if power <= 0 or budget <= 0:
        return MIN_STRENGTH
    return float(np.clip(np.sqrt(budget / power), MIN_STRENGTH, MAX_STRENGTH))


def embed_verified(img: Image.Image, payload: bytes) -> Marked:
    """Embed, then read back. ``verified=False`` means: treat as unmarked (record no payload)."""
    img = _rgb(img)
    if min(img.size) < MIN_SIDE:
        return Marked(img, payload, False, 0.0, float("inf"))
    marked, strength, quality = _mark(img, _residual(img, payload), None)
    found = detect(marked)
    verified = found.valid and found.payload == payload
    return Marked(marked, payload, verified, strength, quality)


def decode_logits(img: Image.Image) -> np.ndarray:
    """The decoder's 32 raw logits (positive = bit 1) at the canonical scale."""
    _, decoder = _Riva.get()
    return decoder.run(None, {"frame": _frame(_canonical(_rgb(img)))})[0][0]


def detect(img: Image.Image) -> Detection:
    """Read the mark. ``valid`` only when the check bits hold (false positives <= 0.043 %)."""
    img = _rgb(img)
    if min(img.size) < MIN_SIDE:
        return Detection(None, 0.0, False)
    logits = decode_logits(img)
    bits = (logits > 0).astype(np.uint8)
    confidence = float(np.mean(np.abs(np.tanh(logits / 2))))  # = mean |2*sigmoid - 1|
    raw = "".join(map(str, bits))
    weakest = [int(i) for i in np.argsort(np.abs(logits))[:CHASE_BITS]]
    for flips in range(CHASE_FLIPS + 1):
        for chosen in itertools.combinations(weakest, flips):
            word = bits.copy()
            word[list(chosen)] ^= 1
            value = _word_ok(word)
            if value is not None:
                return Detection(payload_from_int(value), confidence, True, flips, raw)
    return Detection(None, confidence, False, 0, raw)


def bit_accuracy(img: Image.Image, payload: bytes) -> float:
    """Share of the 32 code bits read correctly (for tests and the benchmark)."""
    return detect(img).bit_accuracy(payload)


# --- grids --------------------------------------------------------------------------------------

# The largest grid a look-up expects: ``limits.max_count``'s default. Larger counts need a larger
# value here (more layouts to try, so a slightly higher false-detection ceiling).
GRID_MAX_COUNT = 4


@dataclass(frozen=True)
class TileDetection:
    """One grid tile whose mark names the image that belongs at its position."""

    layout: tuple[int, int]  # (columns, rows) of the grid it was read in
    position: int  # row-major tile number = the image's index in its job
    box: tuple[int, int, int, int]  # (left, top, right, bottom) in the looked-up image
    detection: Detection

    def to_dict(self) -> dict[str, object]:
        return {
            "layout": f"{self.layout[0]}x{self.layout[1]}",
            "position": self.position,
            "box": list(self.box),
            **self.detection.to_dict(),
        }


def grid_layout(count: int) -> tuple[int, int]:
    """(columns, rows) of a grid of ``count`` images: ``generation.engine.make_grid``'s rule.

    Repeated here (not imported) so reading a mark does not load torch; a test keeps both equal.
    """
    if count < 1:
        raise ValueError(f"a grid needs at least one image, got {count}")
    cols = math.ceil(math.sqrt(count))
    return cols, math.ceil(count / cols)


def grid_layouts(max_count: int = GRID_MAX_COUNT) -> list[tuple[int, int]]:
    """Every multi-image layout up to ``max_count`` images, the largest (the default 4) first."""
    layouts: list[tuple[int, int]] = []
    for count in range(max_count, 1, -1):
        layout = grid_layout(count)
        if layout not in layouts:
            layouts.append(layout)
    return layouts


def tile_boxes(size: tuple[int, int], layout: tuple[int, int]) -> list[tuple[int, int, int, int]]:
    """Row-major tile boxes of an image of ``size`` split evenly into ``layout`` (cols, rows)."""
    (width, height), (cols, rows) = size, layout
    return [
        (
            round(c * width / cols), round(r * height / rows),
            round((c + 1) * width / cols), round((r + 1) * height / rows),
        )
        for r in range(rows)
        for c in range(cols)
    ]


def detect_tiles(img: Image.Image, *, max_count: int = GRID_MAX_COUNT) -> list[TileDetection]:
    """Read a grid tile by tile; the tiles whose payload's slot matches their position.

    Call it when ``detect`` found nothing on the whole image. Layouts are tried largest first
    (2x2, then 2x1 for the default ``max_count`` 4); every tile of a layout is read, and the
    first layout with any accepted tile is the answer (empty list: no tile carries a mark).
    Blocking: one decoder pass per tile (~0.25 s each on 2 cores), up to 6 for the defaults.

    False detections: a tile is accepted only when its check bits hold (7 x 2^-14 per tile,
    as for a whole image) *and* its slot names the image at that position (tile i of a grid is
    image i; a random valid word has the right slot 1 time in 8), so each tried tile adds at
    most 7 x 2^-17. With the whole image plus 6 tiles, the ceiling per looked-up image rises
    from 7 x 2^-14 = 0.043 % to 7 x 2^-14 + 42 x 2^-17 = 98 x 2^-17 = 0.075 %.
    """
    img = _rgb(img)
    for layout in grid_layouts(max_count):
        found = []
        for position, box in enumerate(tile_boxes(img.size, layout)):
            if min(box[2] - box[0], box[3] - box[1]) < MIN_SIDE:
                continue
            detection = detect(img.crop(box))
            if detection.valid and detection.payload is not None:
                _, slot = split_payload(detection.payload)
                if slot == min(position, GRID_SLOT - 1):
                    found.append(TileDetection(layout, position, box, detection))
        if found:
            return found
    return []
