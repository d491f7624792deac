"""``imagine-bot moderate``: run the moderation checks from a shell, as the bot would.

Moderators use it to see why a prompt or image was blocked, and to try policy levels before
switching a server to them. Exit status: 0 allowed (a spoiler prints a note), 1 blocked,
2 bad input (from ``bot/cli.py``).
"""

from __future__ import annotations

import argparse
import json
import sys

from core.errors import UserInputError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "moderate",
        help="check a prompt and/or an image against the moderation rules",
        description="Print the moderation decision for a prompt (gate + deepfake risk) or an "
        "image (NudeNet nudity + faces). Exit 0 allow, 1 block, 2 bad input.",
    )
    p.add_argument("prompt", nargs="?", help="the prompt to check")
    p.add_argument("--image", metavar="FILE", help="an image to check (as generated output)")
    p.add_argument(
        "--as-init", action="store_true",
        help="check --image as an uploaded init image for PROMPT (before generation)",
    )
    p.add_argument("--nsfw-channel", action="store_true", help="as in an age-restricted channel")
    p.add_argument(
        "--policy", choices=("strict", "balanced", "off"), default=None,
        help="deepfake level (default: balanced)",
    )
    p.add_argument(
        "--nsfw-mode", choices=("block", "spoiler", "allow"), default=None,
        help="sexual content in age-restricted channels (default: block)",
    )
    p.add_argument("--json", action="store_true", help="print the decision as JSON")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from core.config import load_settings
    from moderation.decision import combine
    from moderation.policy import Policy, make_policy

    if args.prompt is None and args.image is None:
        raise UserInputError("give a PROMPT to check, --image FILE, or both")
    settings = load_settings(getattr(args, "config", None))
    changes = {}
    if args.policy:
        changes["deepfake_level"] = args.policy
    if args.nsfw_mode:
        changes["nsfw_mode"] = args.nsfw_mode
    policy = make_policy(Policy.default(settings), **changes)

    if args.as_init and (args.image is None or args.prompt is None):
        raise UserInputError("--as-init needs both a PROMPT and --image FILE")
    decisions = []
    scan = None
    if args.image is not None:
        from core.images import load_image
        from moderation.nsfw import check_image, scan_image

        scan = scan_image(load_image(args.image, what="image to check"))
        decisions.append(check_image(scan, policy, nsfw_channel=args.nsfw_channel))
    if args.prompt is not None:
        from moderation.deepfake import assess, decide
        from moderation.prompt_gate import check_prompt

        decisions.append(check_prompt(args.prompt, policy, nsfw_channel=args.nsfw_channel))
        if scan is not None:
            # The same scan serves both stages: faces in an upload or in a generated image.
            faces = len(scan.faces(policy.face_threshold))
            counts = {"init_faces": faces} if args.as_init else {"output_faces": faces}
            decisions.append(decide(assess(args.prompt, policy, **counts), policy))
    decision = combine(*decisions)

    if args.json:
        out = decision.to_dict()
        if scan is not None:
            out["detections"] = [
                {"label": d.label, "score": d.score, "box": list(d.box)} for d in scan.detections
            ]
        print(json.dumps(out, indent=2, default=str))
    else:
        _print_human(decision, scan)
    return 1 if decision.blocked else 0


def _print_human(decision, scan) -> None:  # noqa: ANN001 - CLI formatting only
    head = decision.action.upper()
    if decision.categories:
        head += f"  ({', '.join(decision.categories)})"
    print(head)
    print(f"reason: {decision.reason}")
    for item in decision.evidence:
        print(f"  - {item}")
    risk = decision.details.get("deepfake")
    if risk and (risk["names"] or risk["reasons"]):
        print(f"deepfake risk score: {risk['score']:.2f}")
        for reason in risk["reasons"]:
            print(f"  - {reason}")
    if scan is not None:
        seen = ", ".join(f"{d.label} {d.score:.2f}" for d in scan.detections) or "nothing"
        print(f"detections: {seen}")
    if decision.action == "spoiler":
        print("note: allowed, but delivered behind a spoiler", file=sys.stderr)
