"""``imagine-bot watermark embed|detect`` and ``imagine-bot provenance`` (who made this image?)."""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path

from core.errors import UserInputError


def register(sub: argparse._SubParsersAction) -> None:
    wm = sub.add_parser("watermark", help="embed or detect the invisible watermark in any image")
    wm_sub = wm.add_subparsers(dest="watermark_command", metavar="ACTION", required=True)
    embed = wm_sub.add_parser("embed", help="write a marked copy of an image (PNG)")
    embed.add_argument("input", type=Path, help="image file (PNG, JPEG, WebP, ...)")
    embed.add_argument("-o", "--output", type=Path, required=True, help="output file (.png)")
    embed.add_argument(
        "--payload",
        required=True,
        help="18-bit payload as hex, 0..3ffff (keyed: this instance's key)",
    )
    embed.set_defaults(handler=_embed)
    detect = wm_sub.add_parser("detect", help="read the watermark of an image")
    detect.add_argument("input", type=Path)
    detect.add_argument("--json", action="store_true", help="machine-readable output")
    detect.set_defaults(handler=_detect)

    prov = sub.add_parser(
        "provenance", help="who made this image? (watermark + metadata look-up in the store)"
    )
    prov.add_argument("image", type=Path)
    prov.add_argument("--db", type=Path, help="job store (default: settings.db_path)")
    prov.add_argument("--json", action="store_true", help="machine-readable output")
    prov.set_defaults(handler=_provenance)


def _instance_key(args: argparse.Namespace):  # noqa: ANN202 - WatermarkKey, imported lazily
    """The instance's watermark key (``settings.keys_dir``), created on first use."""
    from core.config import load_settings
    from moderation.watermark_key import key_for_settings

    return key_for_settings(load_settings(args.config))


def _embed(args: argparse.Namespace) -> int:
    from core.images import load_image
    from moderation import watermark

    payload = watermark.parse_payload(args.payload)
    img = load_image(args.input, what="input image")
    marked = watermark.embed_verified(img, payload, _instance_key(args))
    if args.output.suffix.lower() not in (".png", ""):
        raise UserInputError(
            f"output {args.output} must be a .png file (a lossy format would weaken the mark)"
        )
    try:
        marked.image.save(args.output, format="PNG")
    except OSError as exc:
        raise UserInputError(f"cannot write {args.output}: {exc.strerror or exc}") from None
    status = "verified" if marked.verified else "NOT verified (image too small or too flat)"
    print(f"wrote {args.output}: payload {payload.hex()}, PSNR {marked.psnr:.1f} dB, {status}")
    return 0 if marked.verified else 1


def _detect(args: argparse.Namespace) -> int:
    from core.images import load_image
    from moderation import watermark

    image = load_image(args.input, what="image")
    key = _instance_key(args)
    found = watermark.detect(image, key)
    # It may be a delivered grid, whose tiles carry the marks (the whole may read as one).
    tiles = watermark.detect_tiles(image, key)
    if found.valid and len(tiles) < 2:
        tiles = []
    if args.json:
        print(json.dumps({**found.to_dict(), "grid_tiles": [t.to_dict() for t in tiles]}))
    elif found.valid and not tiles:
        print(
            f"marked: payload {found.payload_hex} (keyed tag ok, confidence "
            f"{found.confidence:.2f}, corrected bits {found.corrected_bits})"
        )
    elif tiles:
        cols, rows = tiles[0].layout
        marks = ", ".join(f"tile {t.position} payload {t.detection.payload_hex}" for t in tiles)
        print(f"marked grid ({cols}x{rows}): {marks} (keyed tag ok)")
    else:
        print(
            "no watermark of this instance found (no mark, or one made with another key; "
            f"confidence {found.confidence:.2f})"
        )
    return 0 if found.valid or tiles else 1


def _provenance(args: argparse.Namespace) -> int:
    from core.config import load_settings
    from core.store import Store
    from moderation.provenance import format_lookup, lookup

    db = args.db or load_settings(args.config).db_path

    async def run() -> object:
        store = await Store.open(db, create=False)
        try:
            return await lookup(store, args.image)
        finally:
            await store.close()

    result = asyncio.run(run())
    if args.json:
        print(json.dumps(result.to_dict(), default=str))
    else:
        print(format_lookup(result))
    return 0 if result.job is not None else 1
