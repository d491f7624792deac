"""Invisible watermark: an 18-bit payload plus a 24-bit keyed tag, tiled over every image.

Why this design (figures from ``python -m bench.watermark``):

* **Keyed.** Every pattern and the check bits come from the instance's secret
  (``moderation/watermark_key.py``): a valid mark cannot be minted without the key, and the
  payload is hidden (XOR-ed with a keyed mask), so payloads cannot be read or enumerated. The
  check bits are a truncated HMAC-SHA256 of the payload (not a public CRC).
* **Tiled spread spectrum, mid frequencies.** The mark is a periodic pattern on the luma: one
  period (``TILES`` across the short side, at least ``MIN_PERIOD`` px; 128 px on a 512 px
  image) holds the whole payload, as random phases on a ring of 2-D Fourier coefficients
  (6-26 cycles per period: structures of ~5-20 px at 512 px). Key-shuffled coefficients carry
  a pilot and each code bit; disjoint coefficients keep them orthogonal. These frequencies
  survive JPEG 30, WebP 50 and halving; the repetition survives crops (any period-sized window
  holds everything). The same strength everywhere: a perceptual mask (more in texture, less
  in flat areas) measured worse, as JPEG wipes faint marks off flat areas first.
* **Detection folds the image.** At a canonical scale (short side 512 px), the luma is
  spectrally whitened and summed modulo the period into one 64x64 tile (``np.bincount``),
  adding up every tile's copy. Correlating every group (pilot and bits) over all cyclic shifts
  finds the crop offset; the mirrored tile finds a horizontal flip. The period is first taken
  from the image size (no crop: the common case, one fold), else from the whitened power
  spectrum (a tiled pattern is a lattice of spikes at the key's frequencies), else from a
  sweep of folds over every crop share up to ~57 % (fine textures such as grass hide the
  spikes, never the folded sum); each found period is polished by climbing the sync peak.
* **Soft decoding + keyed tag.** Each code bit is a correlation sum; when the tag fails, the
  ``CHASE_BITS`` least reliable bits are tried in every combination (a Chase list decoder).
  False detections: each tried word passes the 24-bit tag with probability 2^-24 and a look-up
  decodes at most ``MAX_DECODES`` geometries x 2^``CHASE_BITS`` words, so an unmarked image,
  or one marked with another key or the old unkeyed scheme, reads as marked with probability
  <= 3 x 256 x 2^-24 = 0.0046 % (``FALSE_DETECTION_BOUND``), <= 0.032 % per look-up with the 6
  grid tiles: under the documented ceiling of 0.1 %.
* **Cheap verification.** After embedding, ``verify`` reads the mark back at its known period
  and offset: one whitening, one fold and one small FFT, no search.
* A job's grid is not marked itself: it is tiled from the job's already marked images, so each
  tile carries its own image's payload. ``detect_tiles`` reads a grid tile by tile, following
  ``core.grid``'s layout; a tile cut out of a grid is simply a marked image.

Weak spots (bench): fine random textures (grass, gravel) lose the mark after a 40 % crop about
half the time; rotation is not searched (2 degrees loses the mark). A look-up of an unmarked
image runs every search (~0.5 s per 512 px image; a grid's tiles skip the sweep).
"""

from __future__ import annotations

import functools
import itertools
import math
from dataclasses import dataclass

import cv2
import numpy as np
import scipy.fft as sfft
from PIL import Image

from core.errors import UserInputError
from core.grid import grid_layout
from moderation.watermark_key import WatermarkKey

PAYLOAD_BITS = 18
CHECK_BITS = 24  # keyed HMAC tag
CODE_BITS = PAYLOAD_BITS + CHECK_BITS
MAX_PAYLOAD = (1 << PAYLOAD_BITS) - 1
SCHEME = b"imagine-bot/watermark/v2"

TILES = 4  # periods across the short side
MIN_PERIOD = 96  # px: a smaller image gets fewer, larger periods (downscaling keeps them)
FOLD = 64  # bins per period when folding
BAND = (6.0, 26.0)  # ring of frequencies carrying the mark, cycles per period
PILOT_SHARE = 0.2  # share of the ring's coefficients given to the sync pilot
MIN_SIDE = 16  # below this there is nothing to mark
RELIABLE_SIDE = 256  # smaller images carry the mark "best effort" (verified after embedding)
TARGET_PSNR = 40.3
MAX_GAIN_BOOST = 3.0  # how far the gain may rise above its fit where clipping eats the change
CHASE_BITS = 8  # least reliable bits tried in every combination
MAX_DECODES = 3  # geometries decoded per image: the size guess, the spectrum's, the sweep's
SCALE_CANDIDATES = 8  # periods from the scale search that get a sync try (the best are decoded)
CANON_SHORT = 512  # detection works on the image resized to this short side ...
CANON_PERIOD = CANON_SHORT / TILES  # ... where an uncropped mark's period is this
SCALE_RANGE = (0.5, 2.0)  # periods searched, relative to CANON_PERIOD (crops up to 50 %)
SCALE_STEPS = 240
POLISH_STEPS = (0.004, 0.002, 0.001, 0.0005)  # relative steps climbing a found sync peak
SWEEP_RANGE = (0.95, 2.3)  # periods swept relative to CANON_PERIOD: crops of up to ~57 %
SWEEP_STEP = 0.005  # log step of the sweep: the sync peak is ~1 % wide
WHITEN_BAND = (0.01, 0.22)  # cycles/px at the canonical scale kept by the detector
FALSE_DETECTION_BOUND = MAX_DECODES * 2**CHASE_BITS / 2**CHECK_BITS

# Slots inside one job: images 0..6 (more images than 7 share slot 6); 7 marked the grids of
# jobs made before grids were tiled from marked images: new grids carry their tiles' slots.
SLOT_BITS = 3
GRID_SLOT = (1 << SLOT_BITS) - 1
SEQ_MODULUS = 1 << (PAYLOAD_BITS - SLOT_BITS)


@dataclass(frozen=True)
class Detection:
    """What the detector read. ``valid`` means the keyed tag holds: the payload is trustworthy."""

    payload: bytes | None  # 3 bytes, big-endian, < 2**18; None when the tag fails
    confidence: float  # 0..1, mean certainty of the decoded bits
    valid: bool
    corrected_bits: int = 0  # how many of the least reliable bits had to be flipped
    raw_bits: str = ""  # the hard-decided code bits (key-masked), for debugging
    period: float = 0.0  # period found, px (0: none)
    flipped: bool = False  # read from the mirrored image
    sync: float = 0.0  # pilot correlation peak, in standard deviations

    @property
    def payload_hex(self) -> str | None:
        return self.payload.hex() if self.payload is not None else None

    def bit_accuracy(self, payload: bytes, key: WatermarkKey) -> float:
        """Share of the code bits read right, if ``payload`` was embedded with ``key``."""
        if not self.raw_bits:
            return 0.0
        read = np.array([c == "1" for c in self.raw_bits], np.uint8)
        return float(np.mean(read == _code(key).word(payload)))

    def to_dict(self) -> dict[str, object]:
        return {
            "marked": self.valid,
            "payload": self.payload_hex,
            "confidence": round(self.confidence, 4),
            "check_bits_ok": self.valid,
            "corrected_bits": self.corrected_bits,
            "raw_bits": self.raw_bits,
            "period_px": round(self.period, 2),
            "flipped": self.flipped,
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
    Only this instance's key can write or read it, so the small, guessable value is no risk.
    """
    if index < 0:
        raise ValueError(f"image index {index} is negative")
    slot = GRID_SLOT if grid else min(index, GRID_SLOT - 1)
    return payload_from_int(((job_seq % SEQ_MODULUS) << SLOT_BITS) | slot)


def split_payload(payload: bytes) -> tuple[int, int]:
    """(job seq modulo 32,768, slot) of a payload made by ``payload_for``."""
    value = payload_to_int(payload)
    return value >> SLOT_BITS, value & GRID_SLOT


# --- the keyed code and patterns ------------------------------------------------------------------


@dataclass(frozen=True)
class _Code:
    """Everything derived from one key: bit mask, the ring's coefficients and their owners."""

    key: WatermarkKey
    mask: np.ndarray  # CODE_BITS uint8, XOR-ed over the code word
    rows: np.ndarray  # frequency (fy) of each used coefficient, signed
    cols: np.ndarray  # frequency (fx) of each used coefficient, > 0
    phase: np.ndarray  # unit complex carrier of each coefficient
    owner: np.ndarray  # -1: pilot; k: code bit k
    groups: np.ndarray  # one-hot (coefficients, 1 + CODE_BITS): column 0 pilot, k + 1 bit k

    def word(self, payload: bytes) -> np.ndarray:
        value = payload_to_int(payload)
        tag = self.key.tag(SCHEME + payload) & ((1 << CHECK_BITS) - 1)
        word = (value << CHECK_BITS) | tag
        bits = (word >> np.arange(CODE_BITS - 1, -1, -1)) & 1
        return bits.astype(np.uint8) ^ self.mask

    def value_of(self, bits: np.ndarray) -> int | None:
        """The payload value when ``bits`` (masked) carry a valid tag, else None."""
        plain = bits ^ self.mask
        word = int("".join("1" if b else "0" for b in plain), 2)
        value, tag = word >> CHECK_BITS, word & ((1 << CHECK_BITS) - 1)
        if value > MAX_PAYLOAD:
            return None
        expected = self.key.tag(SCHEME + value.to_bytes(3, "big")) & ((1 << CHECK_BITS) - 1)
        return value if expected == tag else None

    def spectrum(self, size: int, signs: np.ndarray | None) -> np.ndarray:
        """rfft2 layout (size, size//2+1) of the pattern: pilot + signed bits (or pilot alone)."""
        out = np.zeros((size, size // 2 + 1), np.complex128)
        bits = signs[np.maximum(self.owner, 0)] if signs is not None else 0.0
        amp = np.where(self.owner < 0, 1.0, bits)
        keep = self.cols < size // 2
        out[self.rows[keep] % size, self.cols[keep]] = (amp * self.phase)[keep]
        return out


@functools.lru_cache(maxsize=8)
def _code(key: WatermarkKey) -> _Code:
    rng = np.random.default_rng(key.seed(SCHEME + b"/patterns"))
    fy, fx = np.meshgrid(
        np.arange(-FOLD // 2 + 1, FOLD // 2), np.arange(1, FOLD // 2), indexing="ij"
    )
    radius = np.hypot(fy, fx)
    # (16a, 16b) is where JPEG's 8-px block edges fold to when the period is 128 px.
    ring = (radius >= BAND[0]) & (radius <= BAND[1]) & ((fy % 16 != 0) | (fx % 16 != 0))
    rows, cols = fy[ring], fx[ring]
    order = rng.permutation(len(rows))
    rows, cols = rows[order], cols[order]
    pilots = round(len(rows) * PILOT_SHARE)
    owner = np.full(len(rows), -1)
    owner[pilots:] = np.arange(len(rows) - pilots) % CODE_BITS
    phase = np.exp(2j * np.pi * rng.random(len(rows)))
    mask = rng.integers(0, 2, CODE_BITS).astype(np.uint8)
    groups = np.zeros((len(rows), CODE_BITS + 1))
    groups[np.arange(len(rows)), owner + 1] = 1.0
    return _Code(key, mask, rows, cols, phase, owner, groups)


def _pattern(code: _Code, payload: bytes, period: int) -> np.ndarray:
    """One period (period x period px) of the mark, unit RMS; periodic, so tiles join seamlessly."""
    signs = code.word(payload).astype(np.float64) * 2 - 1
    tile = sfft.irfft2(code.spectrum(period, signs), s=(period, period))
    return (tile / np.sqrt(np.mean(tile**2))).astype(np.float32)


def _period_for(width: int, height: int) -> int:
    return max(MIN_PERIOD, round(min(width, height) / TILES))


# --- embedding ------------------------------------------------------------------------------------

_LUMA = np.array([0.299, 0.587, 0.114], np.float32)


def _rgb(img: Image.Image) -> Image.Image:
    return img if img.mode == "RGB" else img.convert("RGB")


def psnr(a: Image.Image, b: Image.Image) -> float:
    x = np.asarray(_rgb(a), np.float32)
    y = np.asarray(_rgb(b), np.float32)
    mse = float(np.mean((x - y) ** 2))
    return float("inf") if mse == 0 else 10 * math.log10(255.0**2 / mse)


def _embed(img: Image.Image, payload: bytes, key: WatermarkKey, strength: float | None):
    """(marked image, gain, PSNR)."""
    rgb = np.asarray(img, np.float32)
    height, width = rgb.shape[:2]
    period = _period_for(width, height)
    tile = _pattern(_code(key), payload, period)
    reps = (-(-height // period), -(-width // period))
    delta = np.tile(tile, reps)[:height, :width]
    budget = 255.0**2 / 10 ** (TARGET_PSNR / 10) - 1 / 12  # 1/12: rounding to integers
    gain = (
        math.sqrt(budget / max(float(np.mean(delta * delta)), 1e-9))
        if strength is None
        else strength
    )
    first = gain
    for _ in range(4):  # clipping (black/white areas) lowers the change: raise the gain then
        pixels = np.clip(np.rint(rgb + (gain * delta)[..., None]), 0, 255).astype(np.uint8)
        marked = Image.fromarray(pixels, "RGB")
        quality = psnr(img, marked)
        if strength is not None or TARGET_PSNR - 0.3 <= quality <= TARGET_PSNR + 0.5:
            break
        if quality > TARGET_PSNR and gain >= MAX_GAIN_BOOST * first:
            break
        gain = min(gain * 10 ** ((quality - TARGET_PSNR) / 20), MAX_GAIN_BOOST * first)
    return marked, gain, quality


def embed(
    img: Image.Image, payload: bytes, key: WatermarkKey, *, strength: float | None = None
) -> Image.Image:
    """A copy of ``img`` carrying ``payload`` (3 bytes, < 2**18) under ``key``. Blocking, ~20 ms.

    ``strength`` None: the strongest mark that keeps PSNR at ``TARGET_PSNR``.
    """
    payload_to_int(payload)
    img = _rgb(img)
    if min(img.size) < MIN_SIDE:
        raise UserInputError(
            f"image is {img.width}x{img.height}; a watermark needs at least {MIN_SIDE} px a side"
        )
    return _embed(img, payload, key, strength)[0]


def embed_verified(img: Image.Image, payload: bytes, key: WatermarkKey) -> Marked:
    """Embed, then read back at the known geometry. ``verified=False``: treat as unmarked."""
    payload_to_int(payload)
    img = _rgb(img)
    if min(img.size) < MIN_SIDE:
        return Marked(img, payload, False, 0.0, float("inf"))
    marked, gain, quality = _embed(img, payload, key, None)
    return Marked(marked, payload, verify(marked, payload, key), gain, quality)


def verify(marked: Image.Image, payload: bytes, key: WatermarkKey) -> bool:
    """Does a just-marked image read back ``payload``? Known period, offset 0, no search:
    one whitening, one fold and one small FFT (a few ms), not a full ``detect``."""
    marked = _rgb(marked)
    if min(marked.size) < MIN_SIDE:
        return False
    period = _period_for(*marked.size)
    canonical = period * CANON_SHORT / min(marked.size)
    residual = _whiten(_canonical_luma(marked))
    found = _read(_code(key), _fold(residual, canonical, canonical), period, search=False)
    return found.valid and found.payload == payload


def self_test(key: WatermarkKey) -> bool:
    """Does a mark made with ``key`` read back, after embedding and through ``detect``?

    On a fixed picture (a smooth ramp, like many generated images): a random texture is the
    mark's weak spot and would fail now and then, refusing a sound start at random."""
    picture = Image.linear_gradient("L").resize((256, 256)).convert("RGB")
    payload = payload_for(1, 0)
    marked = embed_verified(picture, payload, key)
    return marked.verified and detect(marked.image, key).payload == payload


# --- detection ------------------------------------------------------------------------------------


def _luma(img: Image.Image) -> np.ndarray:
    return np.asarray(_rgb(img), np.float32) @ _LUMA


def _whiten(luma: np.ndarray) -> np.ndarray:
    """Flatten the image's spectrum (content becomes noise-like) and keep the mark's band.

    Dividing each frequency by the local mean magnitude around it weighs every coefficient by
    how much image content competes with the mark there; the band limit stops higher
    frequencies from aliasing into the fold. Then local contrast is evened out so busy areas
    do not drown quiet ones.
    """
    height, width = luma.shape
    spectrum = sfft.rfft2(luma - float(luma.mean()))
    power = cv2.blur((spectrum.real**2 + spectrum.imag**2).astype(np.float32), (9, 9))
    magnitude = np.sqrt(np.maximum(power, 0))  # box sums in float32 can dip below 0
    fy = np.abs(sfft.fftfreq(height))[:, None]
    fx = sfft.rfftfreq(width)[None, :]
    radius = np.sqrt(fy * fy + fx * fx)
    band = (radius >= WHITEN_BAND[0]) & (radius <= WHITEN_BAND[1])
    flat = sfft.irfft2(np.where(band, spectrum / (magnitude + 1e-6), 0), s=(height, width))
    flat = flat.astype(np.float32)
    spread = np.sqrt(cv2.GaussianBlur(flat * flat, (0, 0), 8.0)) + 1e-6
    return np.clip(flat / spread, -3.0, 3.0)


def _fold(residual: np.ndarray, period_x: float, period_y: float) -> np.ndarray:
    """Average of every period-sized tile, resampled to FOLD x FOLD bins (bin centres at k/FOLD)."""
    height, width = residual.shape
    bins_x = np.rint(np.arange(width) % period_x * (FOLD / period_x)).astype(np.int64) % FOLD
    bins_y = np.rint(np.arange(height) % period_y * (FOLD / period_y)).astype(np.int64) % FOLD
    index = (bins_y[:, None] * FOLD + bins_x[None, :]).ravel()
    sums = np.bincount(index, residual.ravel(), minlength=FOLD * FOLD)
    counts = np.outer(np.bincount(bins_y, minlength=FOLD), np.bincount(bins_x, minlength=FOLD))
    return (sums.reshape(FOLD, FOLD) / np.maximum(counts, 1)).astype(np.float64)


def _shift_energy(code: _Code, spectrum: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(the key's coefficients de-phased, the mark's energy at every cyclic shift of the tile)."""
    values = spectrum[code.rows % FOLD, code.cols] * np.conj(code.phase)
    cross = np.zeros((CODE_BITS + 1, FOLD, FOLD // 2 + 1), np.complex64)  # plenty for a peak
    cross[code.owner + 1, code.rows % FOLD, code.cols] = values  # 0: pilot, k + 1: bit k
    return values, (sfft.irfft2(cross, s=(FOLD, FOLD), axes=(1, 2)) ** 2).sum(axis=0)


def _peak_z(code: _Code, folded: np.ndarray) -> float:
    """The sync peak of a fold, as read or mirrored, on the bin grid only (no refinement)."""
    best = 0.0
    for tile in (folded, np.roll(folded[:, ::-1], 1, axis=1)):
        energy = _shift_energy(code, sfft.rfft2(tile))[1]
        best = max(best, float((energy.max() - energy.mean()) / (energy.std() + 1e-12)))
    return best


def _sync(code: _Code, spectrum: np.ndarray) -> tuple[float, float, float]:
    """(peak in standard deviations, dy, dx): where the mark sits in a folded tile.

    Every group (the pilot and each code bit) is correlated over all cyclic shifts; their
    squares add up whatever the unknown bits are, so the whole mark's energy finds the offset,
    not only the pilot's. Coarse on the bin grid by FFT, then refined to 1/8 bin around the peak.
    """
    size = FOLD
    values, energy = _shift_energy(code, spectrum)
    peak = int(np.argmax(energy))
    z = float((energy.flat[peak] - energy.mean()) / (energy.std() + 1e-12))
    cy, cx = divmod(peak, size)
    steps = np.arange(-4, 5) / 8
    dy = (cy + steps)[:, None].repeat(9, 1).ravel()
    dx = (cx + steps)[None, :].repeat(9, 0).ravel()
    ramp = np.exp(2j * np.pi * (np.outer(dy, code.rows) + np.outer(dx, code.cols)) / FOLD)
    sums = (ramp * values).real @ code.groups
    best = int(np.argmax((sums**2).sum(axis=1)))
    return z, float(dy[best] % FOLD), float(dx[best] % FOLD)


def _soft_bits(code: _Code, spectrum: np.ndarray, dy: float, dx: float) -> np.ndarray:
    """Per code bit, the aligned correlation in standard deviations (positive: bit 1)."""
    ramp = np.exp(2j * np.pi * (code.rows * dy + code.cols * dx) / FOLD)
    values = spectrum[code.rows % FOLD, code.cols] * ramp * np.conj(code.phase)
    bits = code.owner >= 0
    noise = math.sqrt(float(np.mean(values.imag[bits] ** 2)) + 1e-24)
    sums = np.bincount(code.owner[bits], values.real[bits], minlength=CODE_BITS)
    counts = np.bincount(code.owner[bits], minlength=CODE_BITS)
    return sums / (noise * np.sqrt(counts))


def _decode(code: _Code, soft: np.ndarray) -> tuple[int | None, int]:
    """Chase list decoding: (payload value or None, bits flipped)."""
    bits = (soft > 0).astype(np.uint8)
    weakest = np.argsort(np.abs(soft))[:CHASE_BITS]
    for flips in range(CHASE_BITS + 1):
        for chosen in itertools.combinations(weakest, flips):
            word = bits.copy()
            word[list(chosen)] ^= 1
            value = code.value_of(word)
            if value is not None:
                return value, flips
    return None, 0


def _read(code: _Code, folded: np.ndarray, period: float, *, search: bool) -> Detection:
    """Decode one folded tile; ``search`` finds offset and flip, else offset 0, not flipped."""
    best = (0.0, 0.0, 0.0, False, None)
    for flipped in (False, True) if search else (False,):
        tile = np.roll(folded[:, ::-1], 1, axis=1) if flipped else folded
        spectrum = sfft.rfft2(tile)
        z, dy, dx = _sync(code, spectrum) if search else (0.0, 0.0, 0.0)
        if best[4] is None or z > best[0]:
            best = (z, dy, dx, flipped, spectrum)
    z, dy, dx, flipped, spectrum = best
    soft = _soft_bits(code, spectrum, dy, dx)
    value, flips = _decode(code, soft)
    confidence = float(np.mean([math.erf(abs(s) / math.sqrt(2)) for s in soft]))
    raw = "".join("1" if s > 0 else "0" for s in soft)
    payload = None if value is None else payload_from_int(value)
    return Detection(payload, confidence, value is not None, flips, raw, period, flipped, z)


def _scale_candidates(code: _Code, residual: np.ndarray, count: int) -> list[float]:
    """Periods (px) where the mark's frequencies stand out of the whitened power spectrum.

    A tiled pattern's spectrum is a lattice of spikes at (fy, fx) / period; image content is
    smooth by comparison. Dividing the power by its local mean makes the spikes stand out, and
    summing it at the key's coefficients for each candidate period finds the scale whatever
    the crop offset (magnitudes ignore shifts) and flip (the mirrored set is summed too).
    """
    height, width = residual.shape
    window = np.outer(np.hanning(height), np.hanning(width)).astype(np.float32)
    power = np.abs(sfft.rfft2(residual * window)) ** 2
    power = power.astype(np.float32)
    power = np.sqrt(np.maximum(power / (cv2.blur(power, (9, 9)) + 1e-9), 0))
    low, high = SCALE_RANGE
    periods = CANON_PERIOD * np.exp(np.linspace(np.log(low), np.log(high), SCALE_STEPS))
    fy, fx = code.rows.astype(np.float64), code.cols.astype(np.float64)
    ys = np.rint(fy[None, :] * height / periods[:, None]).astype(np.int64)
    xs = np.rint(fx[None, :] * width / periods[:, None]).astype(np.int64)
    inside = xs < power.shape[1]
    xs = np.minimum(xs, power.shape[1] - 1)
    score = np.maximum(
        np.where(inside, power[ys % height, xs], 0).sum(axis=1),
        np.where(inside, power[-ys % height, xs], 0).sum(axis=1),
    ) / np.maximum(inside.sum(axis=1), 1)
    peaks = [
        i
        for i in range(len(score))
        if score[i] >= score[max(i - 1, 0)] and score[i] >= score[min(i + 1, len(score) - 1)]
    ]
    peaks.sort(key=lambda i: -score[i])
    return [float(periods[i]) for i in peaks[:count]]


def _canonical_luma(img: Image.Image) -> np.ndarray:
    """Luma resized so the short side is ``CANON_SHORT``: the period is then ~``CANON_PERIOD``
    whatever resize the image went through, and the filters work at one scale."""
    luma = _luma(img)
    scale = CANON_SHORT / min(img.size)
    if abs(scale - 1) < 1e-3:
        return luma
    size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
    method = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    return cv2.resize(luma, size, interpolation=method)


def _untried(period: float, tried: list[float]) -> bool:
    return all(abs(period / other - 1) > SWEEP_STEP for other in tried)


def _spectral_guess(code: _Code, residual: np.ndarray, tried: list[float]) -> float | None:
    """The period, among the power spectrum's best candidates, with the strongest sync peak.

    Cheap, and right for most crops; fine random textures (grass) hide the mark's spikes."""
    scored = [
        (_peak_z(code, _fold(residual, period, period)), period)
        for period in _scale_candidates(code, residual, SCALE_CANDIDATES)
        if _untried(period, tried)
    ]
    return max(scored)[1] if scored else None


def _sweep(code: _Code, residual: np.ndarray, tried: list[float]) -> float | None:
    """The period with the strongest sync peak over every crop share in ``SWEEP_RANGE``.

    Folding at each step is what the detector does anyway, so it finds a mark wherever its
    tiles add up, whatever the texture (~0.3 s per look-up, only when everything else failed).
    """
    low, high = SWEEP_RANGE
    periods = CANON_PERIOD * np.exp(np.arange(math.log(low), math.log(high), SWEEP_STEP))
    scored = [
        (_peak_z(code, _fold(residual, period, period)), float(period))
        for period in periods
        if _untried(period, tried)
    ]
    return max(scored)[1] if scored else None


def _polish(code: _Code, residual: np.ndarray, period: float) -> float:
    """Climb the sync peak in ever finer relative steps: a period off by 0.5 % loses the
    high-frequency bits over a few tiles, though the peak is already found."""
    z = _peak_z(code, _fold(residual, period, period))
    for step in POLISH_STEPS:
        for trial in (period * (1 - step), period * (1 + step)):
            score = _peak_z(code, _fold(residual, trial, trial))
            if score > z:
                z, period = score, trial
    return period


def detect(img: Image.Image, key: WatermarkKey, *, sweep: bool = True) -> Detection:
    """Read the mark made with ``key``. ``valid`` only when the keyed tag holds.

    ``sweep`` False skips the last, slowest search (~0.5 s on an unmarked 512 px image), for
    callers that read many candidate regions, like ``detect_tiles``.

    False detections: at most ``FALSE_DETECTION_BOUND`` per image, whatever the image is.
    """
    img = _rgb(img)
    if min(img.size) < MIN_SIDE:
        return Detection(None, 0.0, False)
    code = _code(key)
    residual = _whiten(_canonical_luma(img))
    to_px = min(img.size) / CANON_SHORT
    first = _read(
        code, _fold(residual, CANON_PERIOD, CANON_PERIOD), CANON_PERIOD * to_px, search=True
    )
    if first.valid:
        return first
    # The size guess failed: the image was cropped (and maybe resized). Geometries to decode,
    # at most MAX_DECODES in all (the false-detection bound counts decodes): the spectrum's
    # best guess, then, if that fails, the best of a sweep of every crop share.
    tried: list[float] = [CANON_PERIOD]
    best = first
    for finder in (_spectral_guess, _sweep) if sweep else (_spectral_guess,):
        period = finder(code, residual, tried)
        if period is None or len(tried) >= MAX_DECODES:
            continue
        period = _polish(code, residual, period)
        tried.append(period)
        found = _read(code, _fold(residual, period, period), period * to_px, search=True)
        if found.valid:
            return found
        best = found if found.sync > best.sync else best
    return best


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
            round(c * width / cols),
            round(r * height / rows),
            round((c + 1) * width / cols),
            round((r + 1) * height / rows),
        )
        for r in range(rows)
        for c in range(cols)
    ]


def detect_tiles(
    img: Image.Image, key: WatermarkKey, *, max_count: int = GRID_MAX_COUNT
) -> list[TileDetection]:
    """Read a grid tile by tile; the tiles whose payload's slot matches their position.

    A crop of one image still reads, so a smaller layout's tiles can also read inside a larger
    grid's: every layout is read and the one with the most accepted tiles wins (ties: the
    layout with fewer tiles, where all of them read). Empty list: no tile carries a mark.

    False detections: a tile is accepted only when its keyed tag holds (``FALSE_DETECTION_BOUND``
    per tile) *and* its slot names the image at that position, so the whole image plus 6 tiles
    stay under 7 x ``FALSE_DETECTION_BOUND`` per looked-up image.
    """
    img = _rgb(img)
    best: list[TileDetection] = []
    best_score = (0, 0.0)
    for layout in grid_layouts(max_count):
        found = []
        for position, box in enumerate(tile_boxes(img.size, layout)):
            if min(box[2] - box[0], box[3] - box[1]) < MIN_SIDE:
                continue
            detection = detect(img.crop(box), key, sweep=False)
            if detection.valid and detection.payload is not None:
                _, slot = split_payload(detection.payload)
                if slot == min(position, GRID_SLOT - 1):
                    found.append(TileDetection(layout, position, box, detection))
        score = (len(found), len(found) / (layout[0] * layout[1]))
        if found and score > best_score:
            best, best_score = found, score
    return best
