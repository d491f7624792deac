"""Upload decoding benchmark: `python -m bench.uploads` (CPU, offline, ~15 s).

Side by side, in one run: a 40-megapixel PNG "bomb" (a few KB) refused from its header vs the
same file decoded (what the bot did before the pixel budget), and a 12-megapixel JPEG decoded
straight to the model's size (Image.draft + resize) vs fully decoded, each followed by the PNG
encode the prepare thread does with an init image. Prints ms and ratios. Timings are noisy
on a shared machine. Goal: the bomb refused in < 50 ms without decoding.
"""

from __future__ import annotations

import io
import statistics
import time

from PIL import Image

from core.errors import UserInputError
from core.images import load_image

MODEL_PIXELS = 1024 * 1024


def measure(fn, repeat: int) -> float:
    """Median ms of one call."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append((time.perf_counter() - started) * 1e3)
    return statistics.median(times)


def decode_and_encode(data: bytes, **kw) -> str:
    img = load_image(data, **kw)
    img.save(io.BytesIO(), format="PNG")
    return f"{img.width}x{img.height}"


def refused(data: bytes, **kw) -> None:
    try:
        load_image(data, **kw)
    except UserInputError:
        return
    raise AssertionError("not refused")


def main() -> None:
    buf = io.BytesIO()
    Image.new("1", (8000, 5000)).save(buf, format="PNG")
    bomb = buf.getvalue()
    buf = io.BytesIO()
    Image.radial_gradient("L").resize((4000, 3000)).convert("RGB").save(buf, "JPEG", quality=90)
    photo = buf.getvalue()

    rows = [
        ("40 MP PNG bomb, refused from header", lambda: refused(bomb, max_pixels=16_000_000), 20),
        ("40 MP PNG bomb, decoded (before)", lambda: load_image(bomb, max_pixels=10**9), 2),
        (
            "12 MP JPEG, to model size + PNG encode",
            lambda: decode_and_encode(photo, target_pixels=MODEL_PIXELS),
            5,
        ),
        ("12 MP JPEG, full size + PNG encode (before)", lambda: decode_and_encode(photo), 3),
    ]
    print(f"bomb file {len(bomb) / 1024:.0f} KiB, photo {len(photo) / 1024:.0f} KiB")
    results = {}
    for name, fn, repeat in rows:
        ms = results[name] = measure(fn, repeat)
        print(f"{name:44s} {ms:9.1f} ms")
    refuse_ms = results[rows[0][0]]
    print(
        f"bomb: refusal {refuse_ms:.1f} ms (goal < 50 ms) = "
        f"{results[rows[1][0]] / refuse_ms:.0f}x faster than decoding it"
    )
    ratio = results[rows[3][0]] / results[rows[2][0]]
    print(
        f"photo: {ratio:.1f}x faster to model size ({decode_and_encode(photo, target_pixels=MODEL_PIXELS)})"
    )


if __name__ == "__main__":
    main()
