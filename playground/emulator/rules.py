"""Discord's message rules that matter to the bot, answered with Discord's own error bodies.

The bot's real failure modes (413 on big grids, 50035 on a 101-character custom_id) only show up
in tests if the emulator rejects exactly what Discord rejects, with the same status and code.
"""

from __future__ import annotations

from typing import Any

from .state import RecordedFile, iter_components

MAX_CONTENT = 2000
MAX_FILES = 10
MAX_ROWS = 5
MAX_PER_ROW = 5
MAX_LABEL = 80
MAX_CUSTOM_ID = 100
MAX_REQUEST_BYTES = 25 * 1024 * 1024
MAX_EMBEDS = 10
MAX_EMBED_TOTAL = 6000
EMBED_LIMITS = {"title": 256, "description": 4096}
MAX_EMBED_FIELDS = 25
MAX_MODAL_TITLE = 45


class ApiError(Exception):
    """An error response in Discord's JSON shape."""

    def __init__(self, status: int, code: int, message: str, errors: dict[str, Any] | None = None):
        super().__init__(f"{status} {code} {message}")
        self.status = status
        self.code = code
        self.message = message
        self.errors = errors
        self.extra: dict[str, Any] = {}
        self.headers: dict[str, str] = {}

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {"message": self.message, "code": self.code, **self.extra}
        if self.errors is not None:
            out["errors"] = self.errors
        return out


def unknown(what: str, code: int) -> ApiError:
    return ApiError(404, code, f"Unknown {what}")


UNKNOWN_CHANNEL = 10003
UNKNOWN_MESSAGE = 10008
UNKNOWN_WEBHOOK = 10015
UNKNOWN_INTERACTION = 10062
MISSING_PERMISSIONS = 50013
INVALID_WEBHOOK_TOKEN = 50027
ALREADY_ACKNOWLEDGED = 40060
TOO_LARGE = 40005
INVALID_FORM_BODY = 50035


def _field_error(path: list[str | int], code: str, message: str) -> dict[str, Any]:
    """Nest an error under its JSON path the way Discord does: {"a": {"0": {"_errors": [...]}}}."""
    node: dict[str, Any] = {"_errors": [{"code": code, "message": message}]}
    for key in reversed(path):
        node = {str(key): node}
    return node


def _merge(into: dict[str, Any], other: dict[str, Any]) -> None:
    for key, value in other.items():
        if key in into and isinstance(into[key], dict) and isinstance(value, dict):
            _merge(into[key], value)
        elif key == "_errors" and key in into:
            into[key].extend(value)
        else:
            into[key] = value


def check_message(payload: dict[str, Any], files: list[RecordedFile], upload_limit: int) -> None:
    """Raise ApiError for a message create/edit body that Discord would refuse."""
    total = sum(len(f.data) for f in files)
    if total > MAX_REQUEST_BYTES or any(len(f.data) > upload_limit for f in files):
        raise ApiError(413, TOO_LARGE, "Request entity too large")

    errors: dict[str, Any] = {}

    def fail(path: list[str | int], code: str, message: str) -> None:
        _merge(errors, _field_error(path, code, message))

    content = payload.get("content")
    if isinstance(content, str) and len(content) > MAX_CONTENT:
        fail(["content"], "BASE_TYPE_MAX_LENGTH", f"Must be {MAX_CONTENT} or fewer in length.")

    if len(files) > MAX_FILES:
        fail(["files"], "BASE_TYPE_MAX_LENGTH", f"Must be {MAX_FILES} or fewer in length.")
    attachments = payload.get("attachments")
    if isinstance(attachments, list) and len(attachments) > MAX_FILES:
        fail(["attachments"], "BASE_TYPE_MAX_LENGTH", f"Must be {MAX_FILES} or fewer in length.")

    components = payload.get("components")
    if isinstance(components, list):
        _check_components(components, fail)

    embeds = payload.get("embeds")
    if isinstance(embeds, list):
        _check_embeds(embeds, fail)

    if errors:
        raise ApiError(400, INVALID_FORM_BODY, "Invalid Form Body", errors)


def _check_components(components: list[dict[str, Any]], fail) -> None:
    classic = all(c.get("type") == 1 for c in components)
    if classic and len(components) > MAX_ROWS:
        fail(["components"], "BASE_TYPE_BAD_LENGTH", f"Must be between 1 and {MAX_ROWS} in length.")
    if classic:
        for r, row in enumerate(components):
            children = row.get("components", [])
            if not 1 <= len(children) <= MAX_PER_ROW:
                fail(["components", r, "components"], "BASE_TYPE_BAD_LENGTH",
                     f"Must be between 1 and {MAX_PER_ROW} in length.")
            for c, comp in enumerate(children):
                label = comp.get("label")
                if isinstance(label, str) and len(label) > MAX_LABEL:
                    fail(["components", r, "components", c, "label"], "BASE_TYPE_MAX_LENGTH",
                         f"Must be {MAX_LABEL} or fewer in length.")

    seen: set[str] = set()
    for comp in iter_components(components):
        if comp.get("type") == 2 and comp.get("style") == 5:
            continue  # link buttons carry a url, not a custom_id
        if comp.get("type") in (1, 17, 9, 10, 12, 14) and "custom_id" not in comp:
            continue  # layout components without ids
        custom_id = comp.get("custom_id")
        if custom_id is None:
            if comp.get("type") in (2, 3, 4, 5, 6, 7, 8):
                fail(["components"], "BASE_TYPE_REQUIRED", "This field is required (custom_id)")
            continue
        if not 1 <= len(custom_id) <= MAX_CUSTOM_ID:
            fail(["components"], "BASE_TYPE_BAD_LENGTH",
                 f"custom_id must be between 1 and {MAX_CUSTOM_ID} in length.")
        if custom_id in seen:
            fail(["components"], "COMPONENT_CUSTOM_ID_DUPLICATED",
                 f"Component custom id cannot be duplicated ({custom_id!r})")
        seen.add(custom_id)


def _check_embeds(embeds: list[dict[str, Any]], fail) -> None:
    if len(embeds) > MAX_EMBEDS:
        fail(["embeds"], "BASE_TYPE_MAX_LENGTH", f"Must be {MAX_EMBEDS} or fewer in length.")
    total = 0
    for e, embed in enumerate(embeds):
        for key, limit in EMBED_LIMITS.items():
            text = embed.get(key) or ""
            total += len(text)
            if len(text) > limit:
                fail(["embeds", e, key], "BASE_TYPE_MAX_LENGTH", f"Must be {limit} or fewer in length.")
        fields = embed.get("fields") or []
        if len(fields) > MAX_EMBED_FIELDS:
            fail(["embeds", e, "fields"], "BASE_TYPE_MAX_LENGTH",
                 f"Must be {MAX_EMBED_FIELDS} or fewer in length.")
        for f, fld in enumerate(fields):
            for key, limit in (("name", 256), ("value", 1024)):
                text = fld.get(key) or ""
                total += len(text)
                if not text or len(text) > limit:
                    fail(["embeds", e, "fields", f, key], "BASE_TYPE_BAD_LENGTH",
                         f"Must be between 1 and {limit} in length.")
        footer = (embed.get("footer") or {}).get("text") or ""
        author = (embed.get("author") or {}).get("name") or ""
        total += len(footer) + len(author)
        if len(footer) > 2048:
            fail(["embeds", e, "footer", "text"], "BASE_TYPE_MAX_LENGTH", "Must be 2048 or fewer in length.")
        if len(author) > 256:
            fail(["embeds", e, "author", "name"], "BASE_TYPE_MAX_LENGTH", "Must be 256 or fewer in length.")
    if total > MAX_EMBED_TOTAL:
        fail(["embeds"], "BASE_TYPE_MAX_LENGTH",
             f"Embed size exceeds maximum size of {MAX_EMBED_TOTAL}")


def check_modal(data: dict[str, Any]) -> None:
    """A modal (callback type 9): title 1-45, custom_id 1-100, 1-5 top-level components."""
    errors: dict[str, Any] = {}

    def fail(path: list[str | int], code: str, message: str) -> None:
        _merge(errors, _field_error(path, code, message))

    if not 1 <= len(data.get("title") or "") <= MAX_MODAL_TITLE:
        fail(["data", "title"], "BASE_TYPE_BAD_LENGTH", f"Must be between 1 and {MAX_MODAL_TITLE} in length.")
    if not 1 <= len(data.get("custom_id") or "") <= MAX_CUSTOM_ID:
        fail(["data", "custom_id"], "BASE_TYPE_BAD_LENGTH", f"Must be between 1 and {MAX_CUSTOM_ID} in length.")
    components = data.get("components") or []
    if not 1 <= len(components) <= MAX_ROWS:
        fail(["data", "components"], "BASE_TYPE_BAD_LENGTH", f"Must be between 1 and {MAX_ROWS} in length.")
    for comp in iter_components(components):
        if comp.get("type") == 4:
            label = comp.get("label")
            if isinstance(label, str) and len(label) > 45:
                fail(["data", "components"], "BASE_TYPE_MAX_LENGTH", "Must be 45 or fewer in length.")
            custom_id = comp.get("custom_id") or ""
            if not 1 <= len(custom_id) <= MAX_CUSTOM_ID:
                fail(["data", "components"], "BASE_TYPE_BAD_LENGTH",
                     f"custom_id must be between 1 and {MAX_CUSTOM_ID} in length.")
    if errors:
        raise ApiError(400, INVALID_FORM_BODY, "Invalid Form Body", errors)
