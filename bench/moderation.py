"""Moderation benchmark: `python -m bench.moderation` (CPU, offline, ~30 s).

Prints prompt-gate latency per prompt (median, p95, p99; the target is p99 < 2 ms), NSFW + face check latency per 512x512 image (our
in-memory array path side by side with NudeNet's own encoded-bytes path), and block recall /
false-block rate per category and per family (other languages, misspellings, ...) on the
labelled set tests/data/prompts.jsonl. `--gate-only` skips the image part.
"""

from __future__ import annotations

import io
import os
import statistics
import sys
import time

from PIL import Image
from skimage import data

from moderation.evaluate import evaluate, load_labelled
from moderation.nsfw import NsfwDetector, check_image
from moderation.policy import Policy
from moderation.prompt_gate import check_prompt
from moderation.wordlists import word_lists


def timed(fn, repeat: int, clock=time.perf_counter) -> list[float]:
    out = []
    for _ in range(repeat):
        t = clock()
        fn()
        out.append(clock() - t)
    return out


GATE_P99_TARGET_MS = 2.0


def percentile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def ms(xs: list[float]) -> str:
    return (f"median {statistics.median(xs) * 1e3:7.3f} ms   p95 {percentile(xs, 0.95) * 1e3:7.3f} ms"
            f"   p99 {percentile(xs, 0.99) * 1e3:7.3f} ms")


def main() -> None:
    policy = Policy.default()
    rows = load_labelled()
    t = time.perf_counter()
    word_lists()
    print(f"word lists compiled once in {(time.perf_counter() - t) * 1e3:.0f} ms")

    print("\n== prompt gate (check_prompt, default policy, one core) ==")
    check_prompt("warm up", policy)
    # Wall time includes waiting for a core when other processes run; the thread's CPU time is
    # the gate's own work, so both are printed and the target is judged on the CPU time.
    per_prompt, cpu = [], []
    for row in rows:
        call = lambda p=row.prompt, n=row.nsfw_channel: check_prompt(p, policy, nsfw_channel=n)  # noqa: E731
        per_prompt += timed(call, 5)
        cpu += timed(call, 5, time.thread_time)
    print(f"labelled prompts ({len(rows)} x 5), wall {ms(per_prompt)}")
    print(f"labelled prompts ({len(rows)} x 5), CPU  {ms(cpu)}")
    p99 = percentile(cpu, 0.99) * 1e3
    print(f"gate p99 {p99:.3f} ms CPU per prompt (target < {GATE_P99_TARGET_MS} ms): "
          f"{'met' if p99 < GATE_P99_TARGET_MS else 'NOT met'}; wall p99 "
          f"{percentile(per_prompt, 0.99) * 1e3:.3f} ms, {os.getloadavg()[0]:.1f} load average")
    long = "a calm lake at dawn with mist over the water, " * 217
    print(f"{len(long):,}-char prompt            {ms(timed(lambda: check_prompt(long, policy), 10))}")
    if "--gate-only" not in sys.argv:
        images_part(policy)
    labelled_part(rows, policy)


def images_part(policy: Policy) -> None:

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


def labelled_part(rows: list, policy: Policy) -> None:
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
    print(f"\ntargets {'met' if result.meets_targets else 'NOT met'}")


if __name__ == "__main__":
    main()
