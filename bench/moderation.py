"""Moderation benchmark: `python bench/moderation.py` (CPU, offline, ~20 s).

Prints prompt-gate latency per prompt, NSFW + face check latency per 512x512 image (our
in-memory array path side by side with NudeNet's own encoded-bytes path), and block recall /
false-block rate per category on the labelled set tests/data/prompts.jsonl.
"""

from __future__ import annotations

import io
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from PIL import Image  # noqa: E402
from skimage import data  # noqa: E402

from moderation.evaluate import FALSE_BLOCK_TARGET, RECALL_TARGET, evaluate, load_labelled  # noqa: E402
from moderation.nsfw import NsfwDetector, check_image  # noqa: E402
from moderation.policy import Policy  # noqa: E402
from moderation.prompt_gate import check_prompt  # noqa: E402
from moderation.wordlists import word_lists  # noqa: E402


def timed(fn, repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def ms(xs: list[float]) -> str:
    xs = sorted(xs)
    p95 = xs[min(len(xs) - 1, int(0.95 * len(xs)))]
    return f"median {statistics.median(xs) * 1e3:7.3f} ms   p95 {p95 * 1e3:7.3f} ms"


def main() -> None:
    policy = Policy.default()
    rows = load_labelled()
    t = time.perf_counter()
    word_lists()
    print(f"word lists compiled once in {(time.perf_counter() - t) * 1e3:.0f} ms")

    print("\n== prompt gate (check_prompt, default policy, one core) ==")
    check_prompt("warm up", policy)
    per_prompt = []
    for row in rows:
        per_prompt += timed(lambda p=row.prompt, n=row.nsfw_channel: check_prompt(p, policy, nsfw_channel=n), 5)
    print(f"labelled prompts ({len(rows)} x 5)    {ms(per_prompt)}")
    long = "a calm lake at dawn with mist over the water, " * 217
    print(f"{len(long):,}-char prompt            {ms(timed(lambda: check_prompt(long, policy), 10))}")

    print("\n== NSFW + face check per 512x512 image (NudeNet 320n, CPU) ==")
    images = {
        "astronaut": Image.fromarray(data.astronaut()),
        "chelsea": Image.fromarray(data.chelsea()).resize((512, 512)),
        "coffee": Image.fromarray(data.coffee()).resize((512, 512)),
        "plain": Image.new("RGB", (512, 512), (40, 90, 160)),
    }
    t = time.perf_counter()
    detector = NsfwDetector.get()
    print(f"model load (once)               {(time.perf_counter() - t) * 1e3:7.0f} ms")
    for img in images.values():
        check_image(img, policy)  # warm up
    array_times, bytes_times = [], []
    for name, img in images.items():
        buf = io.BytesIO()
        img.save(buf, "PNG")
        png = buf.getvalue()
        a = timed(lambda i=img: check_image(i, policy), 20)
        b = timed(lambda b=png: detector._detector.detect(b), 20)
        array_times += a
        bytes_times += b
        seen = ", ".join(f"{d.label} {d.score:.2f}" for d in detector.scan(img).detections) or "-"
        print(f"{name:<10} array {ms(a)}   [{seen}]")
    print(f"all images, in-memory array     {ms(array_times)}")
    print(f"all images, PNG bytes (NudeNet) {ms(bytes_times)}")
    ratio = statistics.median(bytes_times) / statistics.median(array_times)
    print(f"ratio PNG-bytes / array         {ratio:.2f}x")

    print("\n== labelled set: default policy, channel as labelled ==")
    for title, subset in (
        ("first batch (the gate was developed against it)", [r for r in rows if not r.heldout]),
        ("hard batch (written later, held out at first)", [r for r in rows if r.heldout]),
    ):
        part = evaluate(subset, policy)
        print(f"-- {title}: {len(subset)} prompts: block recall {part.block_recall:.1%}, "
              f"false blocks {part.false_block_rate:.1%}")
    print("-- all prompts:")
    result = evaluate(rows, policy)
    print("\n".join(result.lines()))
    for row, why in result.misses:
        print(f"  MISS {row.expected} {row.category}: {row.prompt!r} -> {why}")
    ok = result.block_recall >= RECALL_TARGET and result.false_block_rate <= FALSE_BLOCK_TARGET
    print(f"\ntargets {'met' if ok else 'NOT met'}")


if __name__ == "__main__":
    main()
