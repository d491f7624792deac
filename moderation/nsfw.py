"""Nudity and face detection on images with NudeNet (its ONNX model ships inside the wheel).

One detector per process, loaded on first use under a lock: the ONNX session is thread-safe
to run, but loading it twice would waste memory and a second or so. Callers on an event loop
run scans in a thread (post-processing's pool, ``asyncio.to_thread``): one is ~15 ms of CPU.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from moderation.decision import Decision
from moderation.policy import Policy

EXPOSED_LABELS = frozenset(
    {
        "FEMALE_BREAST_EXPOSED",
        "FEMALE_GENITALIA_EXPOSED",
        "MALE_GENITALIA_EXPOSED",
        "BUTTOCKS_EXPOSED",
        "ANUS_EXPOSED",
    }
)
FACE_LABELS = frozenset({"FACE_FEMALE", "FACE_MALE"})


@dataclass(frozen=True)
class Detection:
    label: str
    score: float
    box: tuple[int, int, int, int]  # x, y, width, height in pixels


@dataclass(frozen=True)
class ImageScan:
    """Everything NudeNet saw in one image (all labels, scores from 0.2 up)."""

    detections: tuple[Detection, ...]
    width: int
    height: int

    def exposed(self, threshold: float) -> list[Detection]:
        return [d for d in self.detections if d.label in EXPOSED_LABELS and d.score >= threshold]

    def faces(self, threshold: float) -> list[Detection]:
        return [d for d in self.detections if d.label in FACE_LABELS and d.score >= threshold]


class NsfwDetector:
    """The NudeNet detector; use ``NsfwDetector.get()`` for the shared instance."""

    _instance: NsfwDetector | None = None
    _lock = threading.Lock()
    model_path: Path | None = None  # None: the 320n.onnx that NudeNet's wheel ships

    def __init__(self) -> None:
        import nudenet  # onnxruntime loads here, not at import

        from moderation.onnx_runtime import provider_of, session

        self._detector = nudenet.NudeDetector()
        # On the GPU when onnxruntime-gpu offers CUDA, else a CPU session that shares the cores
        # with the worker (see onnx_runtime); the configured file (``moderation.nsfw_model``)
        # or the wheel's own.
        self._detector.onnx_session = session(self.default_path())
        self.provider = provider_of(self._detector.onnx_session)
        self._labels = _nudenet_labels()

    @classmethod
    def default_path(cls) -> Path:
        return cls.model_path or wheel_model_path()

    @classmethod
    def configure(cls, model_path: Path | None) -> None:
        """Use ``model_path`` from now on (the next ``get()`` loads it)."""
        with cls._lock:
            cls.model_path = Path(model_path) if model_path else None
            cls._instance = None

    @classmethod
    def get(cls) -> NsfwDetector:
        if cls._instance is None:
            with cls._lock:
                if cls._instance is None:
                    cls._instance = cls()
        return cls._instance

    def scan(self, image: Image.Image) -> ImageScan:
        return self.scan_many([image])[0]

    def scan_many(
        self, images: list[Image.Image], *, batched: bool | None = None
    ) -> list[ImageScan]:
        """Scan a job's images: in one ONNX call on the GPU, one call per image on the CPU.

        On the CPU a batch of 4 costs what 4 single calls cost (docs/operations.md), and a
        single call keeps each image's pre-processing beside its own run; on the GPU one call
        saves 3 rounds of kernel launches and copies. ``batched`` overrides that choice.
        """
        from moderation.onnx_runtime import CUDA

        rgbs = [image if image.mode == "RGB" else image.convert("RGB") for image in images]
        # NudeNet expects what cv2.imread returns: a BGR uint8 array. Passing the array
        # avoids writing a temporary file.
        prepared = [
            self._prepare(np.ascontiguousarray(np.asarray(rgb)[:, :, ::-1])) for rgb in rgbs
        ]
        if batched is None:
            batched = self.provider == CUDA and len(prepared) > 1
        if batched:
            blob = np.concatenate([p[0] for p in prepared])
            outputs = list(self._run(blob))
        else:
            outputs = [self._run(p[0])[0] for p in prepared]
        scans = []
        for rgb, (_, geometry), output in zip(rgbs, prepared, outputs, strict=True):
            found = self._decode(output, *geometry)
            detections = tuple(
                sorted(
                    (
                        Detection(d["class"], round(float(d["score"]), 4), tuple(d["box"]))
                        for d in found
                    ),
                    key=lambda d: -d.score,
                )
            )
            scans.append(ImageScan(detections, rgb.width, rgb.height))
        return scans

    def _detect(self, bgr: np.ndarray) -> list[dict[str, Any]]:
        """One BGR image through the model: what ``NudeDetector.detect`` returns."""
        blob, geometry = self._prepare(bgr)
        return self._decode(self._run(blob)[0], *geometry)

    def _prepare(self, bgr: np.ndarray) -> tuple[np.ndarray, tuple[int, int, int, int]]:
        """NudeNet's own pre-processing: the (1, 3, 320, 320) blob and the padding geometry."""
        from nudenet import nudenet

        blob, _, _, x_pad, y_pad, width, height = nudenet._read_image(
            bgr, self._detector.input_width
        )
        return blob, (x_pad, y_pad, width, height)

    def _run(self, blob: np.ndarray) -> np.ndarray:
        """The model on a (N, 3, 320, 320) blob: (N, 4 box + one score per label, candidates)."""
        det = self._detector
        return det.onnx_session.run(None, {det.input_name: blob})[0]

    def _decode(
        self, output: np.ndarray, x_pad: int, y_pad: int, width: int, height: int
    ) -> list[dict[str, Any]]:
        """``NudeDetector.detect``'s post-processing with its box decoding done in numpy: same
        detections.

        NudeNet decodes its 2,100 candidate boxes in a Python loop (~2,100 numpy calls holding
        the GIL, ~10 ms per image). Beside the worker that loop stalled generation: a tiny-model
        job ran 37 % slower while NudeNet checks ran on another thread, and not at all slower
        beside the (GIL-free) watermark model. NMS stays cv2's.
        """
        import cv2

        det = self._detector
        rows = np.transpose(output)  # (candidates, 4 box + one score per label)
        class_scores = rows[:, 4:]
        best = class_scores.max(axis=1)
        keep = best >= 0.2
        rows, scores = rows[keep], best[keep]
        class_ids = class_scores[keep].argmax(axis=1)
        x, y, w, h = (rows[:, i] for i in range(4))
        # The same float32 arithmetic, in the same order, as nudenet._postprocess.
        x, y = x - w / 2, y - h / 2
        x = x * (width + x_pad) / det.input_width
        y = y * (height + y_pad) / det.input_height
        w = w * (width + x_pad) / det.input_width
        h = h * (height + y_pad) / det.input_height
        x = np.maximum(0, np.minimum(x, width))
        y = np.maximum(0, np.minimum(y, height))
        w = np.minimum(w, width - x)
        h = np.minimum(h, height - y)
        boxes = np.stack([x, y, w, h], axis=1)
        kept = cv2.dnn.NMSBoxes(boxes.tolist(), scores.tolist(), 0.25, 0.45)
        return [
            {
                "class": self._labels[int(class_ids[i])],
                "score": float(scores[i]),
                "box": [int(v) for v in boxes[i]],
            }
            for i in np.asarray(kept, dtype=int).reshape(-1)
        ]


def wheel_model_path() -> Path:
    """The 320n.onnx that NudeNet's wheel ships (imports nudenet, so onnxruntime)."""
    import nudenet

    return Path(nudenet.__file__).parent / "320n.onnx"


def _nudenet_labels() -> list[str]:
    from nudenet import nudenet

    return list(vars(nudenet)["__labels"])  # module-level name; no attribute syntax reaches it


def scan_image(image: Image.Image) -> ImageScan:
    return NsfwDetector.get().scan(image)


def scan_images(images: list[Image.Image]) -> list[ImageScan]:
    """A job's images, batched into one model call where that pays (the GPU)."""
    return NsfwDetector.get().scan_many(images)


def decide_image(scan: ImageScan, policy: Policy, *, nsfw_channel: bool) -> Decision:
    """Exposed nudity above the policy threshold: block, or spoiler where the policy says so.

    Outside age-restricted channels nudity blocks (or is spoilered with
    ``spoiler_instead_of_block``, for servers that prefer that to losing false positives);
    inside them ``nsfw_mode`` decides.
    """
    exposed = scan.exposed(policy.nsfw_threshold)
    faces = scan.faces(policy.face_threshold)
    details = {
        "exposed": [(d.label, d.score) for d in exposed],
        "faces": len(faces),
        "face_scores": [d.score for d in faces],
    }
    if not exposed:
        return Decision.allow("no exposed nudity detected", **details)
    evidence = tuple(f"{d.label} {d.score:.2f}" for d in exposed)
    if nsfw_channel:
        action = policy.nsfw_mode
        where = f"age-restricted channel, nsfw_mode={policy.nsfw_mode}"
    else:
        action = "spoiler" if policy.spoiler_instead_of_block else "block"
        where = "not an age-restricted channel"
    verb = {"block": "blocked", "spoiler": "hidden behind a spoiler", "allow": "allowed"}[action]
    reason = f"image shows exposed nudity ({', '.join(evidence)}); {verb} ({where})"
    return Decision(action, ("nsfw_image",), evidence, reason, details)


def check_image(
    image: Image.Image | ImageScan, policy: Policy | None = None, *, nsfw_channel: bool = False
) -> Decision:
    """NSFW decision for one image (scans it unless given a scan already)."""
    scan = image if isinstance(image, ImageScan) else scan_image(image)
    return decide_image(scan, policy or Policy.default(), nsfw_channel=nsfw_channel)
