"""Midjourney-style inline parameters (``a castle --ar 16:9 --seed 42 --no trees``).

People paste prompts from Midjourney, so the same spellings work here. Parsing is a pure
function of the text so that it can be unit- and property-tested without Discord, and every
problem becomes a ``UserInputError`` that names the parameter and its allowed values.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field, replace
from typing import Any

from core.errors import UserInputError

MAX_SEED = 2**32 - 1
QUALITY_VALUES = (0.25, 0.5, 1.0, 2.0)

# Style presets: words added to the prompt and the negative prompt. Short on purpose; a server
# that wants more writes them into its prompts.
STYLES: dict[str, tuple[str, str]] = {
    "photo": ("photograph, 35mm, natural light, detailed", "illustration, painting, cartoon"),
    "cinematic": ("cinematic still, dramatic lighting, film grain, wide shot", "cartoon, flat"),
    "anime": ("anime style, cel shading, vibrant colors", "photo, realistic"),
    "watercolor": ("watercolor painting, soft edges, paper texture", "photo, 3d render"),
    "pixel-art": ("pixel art, 16-bit, limited palette", "photo, blurry, smooth gradients"),
    "3d": ("3d render, octane, soft shadows, studio lighting", "flat, sketch"),
    "sketch": ("pencil sketch, line art, cross hatching", "color, photo"),
    "raw": ("", ""),
}

# name -> aliases. Order is the order shown in the help/error message.
KNOWN: dict[str, tuple[str, ...]] = {
    "ar": ("aspect",),
    "seed": ("sameseed",),
    "no": (),
    "q": ("quality",),
    "s": ("stylize",),
    "steps": (),
    "count": ("n", "images"),
    "style": (),
    "cfg": ("guidance",),
    "strength": ("iw",),
    "sampler": ("scheduler",),
    "tile": (),
    "chaos": ("c",),
}
# Parameters that take no value: ``--tile`` alone switches it on.
FLAGS = ("tile",)
_ALIASES = {alias: name for name, aliases in KNOWN.items() for alias in (name, *aliases)}

# "--name" at the start or after whitespace. iOS and macOS turn "--" into an em dash.
_PARAM = re.compile(r"(?:^|(?<=\s))(?:--|\u2014|\u2013)([A-Za-z][A-Za-z0-9_-]*)")
_RATIO = re.compile(r"^\s*(\d{1,3})\s*[:x/]\s*(\d{1,3})\s*$")
_INVISIBLE_CATEGORIES = {"Cc", "Cf", "Cs", "Co", "Cn", "Zs", "Zl", "Zp", "Mn", "Me"}


@dataclass(frozen=True)
class PromptParams:
    """A prompt with its parameters pulled out; ``None`` means "use the default"."""

    prompt: str
    negative_prompt: str = ""
    aspect_ratio: str | None = None
    seed: int | None = None
    quality: float | None = None
    stylize: int | None = None
    steps: int | None = None
    count: int | None = None
    style: str | None = None
    guidance: float | None = None
    strength: float | None = None
    scheduler: str | None = None
    tile: bool = False
    chaos: int | None = None
    given: tuple[str, ...] = field(default=())  # parameter names as the user wrote them

    def styled(self) -> PromptParams:
        """The prompt and negative prompt with the style preset's words added."""
        if not self.style or self.style == "raw":
            return self
        positive, negative = STYLES[self.style]
        prompt = f"{self.prompt}, {positive}" if positive else self.prompt
        negative_prompt = ", ".join(p for p in (self.negative_prompt, negative) if p)
        return replace(self, prompt=prompt, negative_prompt=negative_prompt)

    def effective_guidance(self) -> float | None:
        """``--cfg`` wins; else ``--s`` (0-1000, Midjourney's 100 = guidance 7) maps linearly."""
        if self.guidance is not None:
            return self.guidance
        if self.stylize is not None:
            return round(1.0 + self.stylize * 0.06, 2)
        return None

    def request_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``GenerationRequest`` (quality is applied by the caller)."""
        styled = self.styled()
        kwargs: dict[str, Any] = {
            "prompt": styled.prompt,
            "negative_prompt": styled.negative_prompt,
            "aspect_ratio": self.aspect_ratio,
            "seed": self.seed,
            "steps": self.steps,
            "guidance": self.effective_guidance(),
            "scheduler": self.scheduler,
        }
        if self.count is not None:
            kwargs["count"] = self.count
        if self.strength is not None:
            kwargs["strength"] = self.strength
        if self.tile:
            kwargs["tile"] = True
        if self.chaos is not None:
            kwargs["chaos"] = self.chaos
        return kwargs

    def summary(self) -> str:
        """The parameters in Midjourney spelling, for the result message."""
        parts = []
        if self.aspect_ratio:
            parts.append(f"--ar {self.aspect_ratio}")
        for name, value in (
            ("seed", self.seed),
            ("q", self.quality),
            ("s", self.stylize),
            ("steps", self.steps),
            ("count", self.count),
            ("style", self.style),
            ("cfg", self.guidance),
            ("strength", self.strength),
            ("sampler", self.scheduler),
            ("chaos", self.chaos),
        ):
            if value is not None:
                parts.append(
                    f"--{name} {value:g}" if isinstance(value, float) else f"--{name} {value}"
                )
        if self.tile:
            parts.append("--tile")
        if self.negative_prompt:  # last: --no takes the rest of the text
            parts.append(f"--no {self.negative_prompt}")
        return " ".join(parts)


def known_parameters() -> str:
    """The list shown when someone types an unknown parameter."""
    return ", ".join(
        "--" + name + (f" (--{', --'.join(aliases)})" if aliases else "")
        for name, aliases in KNOWN.items()
    )


def visible_text(text: str) -> str:
    """``text`` without characters that render as nothing (zero-width, control, combining)."""
    return "".join(ch for ch in text if unicodedata.category(ch) not in _INVISIBLE_CATEGORIES)


def parse_prompt(
    text: str | None,
    *,
    max_chars: int = 2000,
    max_steps: int = 150,
    max_count: int = 4,
) -> PromptParams:
    """Split ``text`` into prompt and parameters, or raise ``UserInputError`` saying what is wrong."""
    if text is None or not visible_text(text).strip():
        raise UserInputError(
            "the prompt is empty (or only invisible characters); describe the image you want"
        )
    if len(text) > max_chars:
        raise UserInputError(f"the prompt is {len(text)} characters long; the limit is {max_chars}")
    matches = list(_PARAM.finditer(text))
    prompt = text[: matches[0].start()] if matches else text
    values: dict[str, Any] = {}
    given: list[str] = []
    for i, match in enumerate(matches):
        raw_name = match.group(1)
        end = matches[i + 1].start() if i + 1 < len(matches) else len(text)
        raw_value = text[match.end() : end].strip()
        name = _ALIASES.get(raw_name.lower())
        if name is None:
            raise UserInputError(
                f"unknown parameter --{raw_name}; known parameters: {known_parameters()}"
            )
        if name in values:
            raise UserInputError(f"--{raw_name} is given twice; give each parameter once")
        values[name] = _parse_value(
            name, raw_name, raw_value, max_steps=max_steps, max_count=max_count
        )
        given.append(raw_name)
    prompt = " ".join(prompt.split())
    if not visible_text(prompt).strip():
        raise UserInputError(
            "the prompt has parameters but no description; write what you want before the --parameters"
        )
    return PromptParams(
        prompt=prompt,
        negative_prompt=values.pop("no", ""),
        aspect_ratio=values.pop("ar", None),
        seed=values.pop("seed", None),
        quality=values.pop("q", None),
        stylize=values.pop("s", None),
        steps=values.pop("steps", None),
        count=values.pop("count", None),
        style=values.pop("style", None),
        guidance=values.pop("cfg", None),
        strength=values.pop("strength", None),
        scheduler=values.pop("sampler", None),
        tile=values.pop("tile", False),
        chaos=values.pop("chaos", None),
        given=tuple(given),
    )


def parse_aspect_ratio(raw: str, *, what: str = "--ar") -> str:
    """``"16:9"`` -> ``"16:9"``; sides 1-100 and at most 4:1 either way (wider breaks models)."""
    match = _RATIO.match(raw)
    if not match:
        raise UserInputError(f"{what} must look like 16:9 (width:height), not {raw!r}")
    w, h = int(match.group(1)), int(match.group(2))
    if not (1 <= w <= 100 and 1 <= h <= 100):
        raise UserInputError(f"{what} sides must be between 1 and 100, got {w}:{h}")
    if max(w / h, h / w) > 4:
        raise UserInputError(f"{what} {w}:{h} is too extreme; the allowed range is 1:4 to 4:1")
    return f"{w}:{h}"


def _parse_value(name: str, raw_name: str, raw: str, *, max_steps: int, max_count: int) -> Any:
    flag = f"--{raw_name}"
    if name in FLAGS:
        if raw:
            raise UserInputError(
                f"{flag} takes no value (write it alone, before or after the others), not {raw!r}"
            )
        return True
    if name == "no":
        if not visible_text(raw).strip():
            raise UserInputError("--no needs the things to leave out, e.g. --no trees, cars")
        return " ".join(raw.split())
    if not raw:
        raise UserInputError(f"{flag} needs a value")
    if name == "ar":
        return parse_aspect_ratio(raw, what=flag)
    if name == "seed":
        return _int(flag, raw, 0, MAX_SEED)
    if name == "q":
        q = _float(flag, raw, 0.0, 100.0)
        if q not in QUALITY_VALUES:
            raise UserInputError(f"{flag} must be one of .25, .5, 1 or 2, not {raw}")
        return q
    if name == "s":
        return _int(flag, raw, 0, 1000)
    if name == "steps":
        return _int(flag, raw, 1, max_steps)
    if name == "count":
        return _int(flag, raw, 1, max_count)
    if name == "cfg":
        return _float(flag, raw, 0.0, 30.0)
    if name == "chaos":
        return _int(flag, raw, 0, 100)
    if name == "strength":
        return _float(flag, raw, 0.05, 1.0)
    if name == "style":
        style = raw.lower()
        if style not in STYLES:
            raise UserInputError(f"{flag} must be one of {', '.join(STYLES)}, not {raw!r}")
        return style
    if name == "sampler":
        if not re.fullmatch(r"[A-Za-z0-9_+-]{1,40}", raw):
            raise UserInputError(
                f"{flag} must be a sampler name such as euler or dpm++, not {raw!r}"
            )
        return raw
    raise AssertionError(name)  # pragma: no cover - KNOWN and this function list the same names


def _int(flag: str, raw: str, low: int, high: int) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise UserInputError(
            f"{flag} must be a whole number from {low} to {high}, not {raw!r}"
        ) from None
    if not low <= value <= high:
        raise UserInputError(f"{flag} must be from {low} to {high}, not {value}")
    return value


def _float(flag: str, raw: str, low: float, high: float) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise UserInputError(
            f"{flag} must be a number from {low:g} to {high:g}, not {raw!r}"
        ) from None
    if not low <= value <= high:  # also rejects NaN
        raise UserInputError(f"{flag} must be from {low:g} to {high:g}, not {raw}")
    return value


def ignored_by_model(params: PromptParams, guidance: float) -> str | None:
    """A one-line note when guidance is off, naming what the user typed that then does nothing.

    Without classifier-free guidance (Turbo models, whose default guidance is 1 or less, or a
    ``--cfg`` of 1 or less) the pipeline never runs the negative branch, and ``--chaos`` spreads
    guidance around a value that is not used, so both would be ignored without a word.
    ``guidance`` is the model's default; a ``--cfg``/``--s`` that turns guidance on wins.
    Multi-prompt weights (``::``) are an embedding mix and still work, so they are not named.
    """
    effective = params.effective_guidance()
    if (guidance if effective is None else effective) > 1.0:
        return None
    ignored = [
        name for name, used in (("--no", params.negative_prompt), ("--chaos", params.chaos)) if used
    ]
    if not ignored:
        return None
    if effective is None:
        cause = "this model runs without guidance"
    elif params.guidance is not None:
        cause = f"guidance is off (--cfg {effective:g} is 1 or less)"
    else:
        cause = f"guidance is off (--s {params.stylize} gives guidance 1)"
    verb = "has" if len(ignored) == 1 else "have"
    return f"{cause}, so {' and '.join(ignored)} {verb} no effect"
