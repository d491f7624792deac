"""Provenance: what an image says about itself, and "who made this?" for any image found later.

Three layers, from most to least fragile:

* PNG text chunks: ``parameters`` in the A1111 format (other tools show it), an XMP packet with
  the IPTC ``DigitalSourceType`` ``trainedAlgorithmicMedia`` (the standard "made by AI" flag)
  and an ``imagine-bot`` JSON chunk naming the instance and the job. Lost on any re-encode.
* C2PA content credentials (``c2pa-python``), signed with a key and certificate this instance
  creates on first start under ``settings.keys_dir``: a tiny local CA signs an ES256 leaf
  (digitalSignature, emailProtection EKU), which c2pa accepts offline. Readers show the
  manifest as *valid* but not *trusted* (our CA is not on a public trust list). Any C2PA failure
  is logged and skipped: the image still ships with its other marks.
* The invisible watermark (``moderation/watermark.py``), keyed with this instance's secret, which
  survives re-encoding, resizing, crops and mirroring; ``lookup`` reads it to find the job.

``lookup`` names a job (and so a person) only from what cannot be forged: the file hash, this
instance's keyed mark or this instance's C2PA signature; PNG text is a claim, never a name.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import io
import json
import logging
import os
import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from core.errors import UserInputError
from core.images import load_image
from core.metrics import energy_text
from moderation import watermark
from moderation.watermark_key import KEY_FILE, WatermarkKey, load_or_create_key

log = logging.getLogger(__name__)

TRAINED_ALGORITHMIC_MEDIA = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
METADATA_KEY = "imagine-bot"
SIGNER_CERT = "c2pa_signer.pem"  # leaf + CA chain
SIGNER_KEY = "c2pa_signer.key"
CA_CERT = "c2pa_ca.pem"  # publish this if others should trust this instance's manifests

_XMP = """<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>
<x:xmpmeta xmlns:x="adobe:ns:meta/">
 <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
  <rdf:Description rdf:about=""
    xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/"
    xmlns:xmp="http://ns.adobe.com/xap/1.0/"
    Iptc4xmpExt:DigitalSourceType="{source}"
    xmp:CreatorTool="{tool}"/>
 </rdf:RDF>
</x:xmpmeta>
<?xpacket end="r"?>"""


@dataclass
class ImageProvenance:
    """Everything written into one image's metadata."""

    instance: str
    job_id: str
    index: int  # image index in the job; watermark.GRID_SLOT for the grid
    parameters: str | None  # A1111 text, None when the policy leaves it out
    watermark_payload: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {
            "instance": self.instance,
            "job_id": self.job_id,
            "index": self.index,
            "ai_generated": True,
            "digital_source_type": TRAINED_ALGORITHMIC_MEDIA,
            "watermark_payload": self.watermark_payload,
            **self.extra,
        }


def without_prompt(infotext: str) -> str:
    """Keep only the settings line of an A1111 text (the prompt is the private part)."""
    return infotext.splitlines()[-1] if infotext else ""


def png_info(meta: ImageProvenance) -> PngInfo:
    info = PngInfo()
    if meta.parameters is not None:
        info.add_text("parameters", meta.parameters)
    info.add_text("Software", f"imagine-bot ({meta.instance})")
    info.add_text("AI-generated", "true")
    info.add_text(METADATA_KEY, json.dumps(meta.summary(), sort_keys=True))
    xmp = _XMP.format(
        source=TRAINED_ALGORITHMIC_MEDIA, tool=_xml_escape(f"imagine-bot ({meta.instance})")
    )
    info.add_itxt("XML:com.adobe.xmp", xmp)
    return info


def _xml_escape(text: str) -> str:
    return (
        text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")
    )


def encode_png(img: Image.Image, meta: ImageProvenance, signer: C2paSigner | None = None) -> bytes:
    """PNG bytes with the text chunks and, when a signer is given and works, a C2PA manifest."""
    data = _png_bytes(img, png_info(meta))
    if signer is not None:
        signed = signer.sign_png(data, meta)
        if signed is not None:
            return signed
    return data


_PNG_HEAD = 33  # signature (8) + the IHDR chunk (4 + 4 + 13 + 4): text chunks go after it


def _png_bytes(img: Image.Image, info: PngInfo) -> bytes:
    """The PNG file, pixels compressed by OpenCV's libpng (level 1, outside the GIL).

    The largest post-processing stage: Pillow's encoder took ~90 ms at level 1 (~175 ms at 4)
    for a 512x512 photo, OpenCV ~30 ms for the same size of file (``bench/postprocess.py``).
    Pillow's own chunk writer then puts the text chunks right after the header.
    """
    if img.mode != "RGB":
        buf = io.BytesIO()
        img.save(buf, format="PNG", pnginfo=info, compress_level=1)
        return buf.getvalue()
    import cv2
    from PIL import PngImagePlugin

    bgr = cv2.cvtColor(np.asarray(img), cv2.COLOR_RGB2BGR)
    ok, encoded = cv2.imencode(".png", bgr, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    raw = encoded.tobytes()
    if not ok or raw[12:16] != b"IHDR":  # pragma: no cover - libpng always starts so
        raise RuntimeError("OpenCV wrote an unexpected PNG")
    out = io.BytesIO()
    out.write(raw[:_PNG_HEAD])
    for chunk_type, chunk_data, _after_idat in info.chunks:
        PngImagePlugin.putchunk(out, chunk_type, chunk_data)
    out.write(raw[_PNG_HEAD:])
    return out.getvalue()


# --- C2PA -----------------------------------------------------------------------------------------


def ensure_signing_keys(keys_dir: Path, instance: str) -> tuple[Path, Path]:
    """Create this instance's CA and ES256 signing certificate once; return (chain, key) paths.

    The CA's private key is thrown away after signing the leaf: nothing else needs it, and a
    key that does not exist cannot leak. Renewal = delete the folder's c2pa files and restart.
    """
    chain_path, key_path = keys_dir / SIGNER_CERT, keys_dir / SIGNER_KEY
    if chain_path.is_file() and key_path.is_file():
        return chain_path, key_path
    from cryptography.hazmat.primitives.asymmetric import ec

    now = dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=5)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _ca_certificate(instance, ca_key, now)
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = _signer_certificate(instance, key, ca, ca_key, now)
    _write_signing_keys(keys_dir, ca, leaf, key)
    log.info("created C2PA signing certificate in %s", keys_dir)
    return chain_path, key_path


def _x509_name(cn: str) -> Any:
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    return x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "imagine-bot"),
        ]
    )


def _key_usage(*, sign: bool, ca: bool) -> Any:
    from cryptography import x509

    return x509.KeyUsage(
        digital_signature=sign,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def _ca_certificate(instance: str, ca_key: Any, now: dt.datetime) -> Any:
    """The instance's self-signed CA (10 years): the trust anchor published as ``c2pa_ca.pem``."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    ca_name = _x509_name(f"{instance[:40]} imagine-bot CA")
    return (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(sign=False, ca=True), critical=True)
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )


def _signer_certificate(instance: str, key: Any, ca: Any, ca_key: Any, now: dt.datetime) -> Any:
    """The ES256 signing certificate (825 days) for ``key``, issued by the instance's CA."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import ExtendedKeyUsageOID

    return (
        x509.CertificateBuilder()
        .subject_name(_x509_name(f"{instance[:40]} imagine-bot signer"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=825))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(sign=True, ca=False), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )


def _write_signing_keys(keys_dir: Path, ca: Any, leaf: Any, key: Any) -> None:
    """The CA certificate, the chain (leaf + CA) and the leaf's private key (mode 0600)."""
    from cryptography.hazmat.primitives import serialization

    pem = serialization.Encoding.PEM
    try:
        keys_dir.mkdir(parents=True, exist_ok=True)
        (keys_dir / CA_CERT).write_bytes(ca.public_bytes(pem))
        (keys_dir / SIGNER_CERT).write_bytes(leaf.public_bytes(pem) + ca.public_bytes(pem))
        fd = os.open(keys_dir / SIGNER_KEY, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(
                key.private_bytes(
                    pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
                )
            )
    except OSError as exc:
        raise UserInputError(
            f"cannot write the signing keys to {keys_dir}: {exc.strerror}; "
            "make the folder writable or set provenance.c2pa = false"
        ) from None


class C2paSigner:
    """Signs PNGs with this instance's C2PA credentials; failures are logged, never raised."""

    def __init__(self, chain_pem: bytes, key_pem: bytes, instance: str) -> None:
        import c2pa

        self._c2pa = c2pa
        self.instance = instance
        self._signer = c2pa.Signer.from_info(
            c2pa.C2paSignerInfo(b"es256", chain_pem, key_pem, None)
        )
        # No embedded thumbnail: the asset is the thumbnail's subject already, and making one
        # cost ~33 ms of CPU and ~100 KB per 64-px image (more for large ones) on the worker's
        # post-processing path, bytes that also count against Discord's upload limit.
        self._context = c2pa.Context(
            c2pa.Settings.from_dict({"builder": {"thumbnail": {"enabled": False}}})
        )
        self._lock = threading.Lock()  # one signing at a time: the native signer is shared
        self.last_error: str | None = None

    @classmethod
    def for_settings(cls, settings: Any) -> C2paSigner | None:
        """The signer, or None when C2PA is off or cannot work here (the reason is logged)."""
        if not settings.provenance.c2pa:
            return None
        instance = settings.provenance.instance_name
        try:
            chain, key = ensure_signing_keys(Path(settings.keys_dir), instance)
            return cls(chain.read_bytes(), key.read_bytes(), instance)
        except Exception as exc:  # noqa: BLE001 - C2PA is optional; the image still ships
            log.warning("C2PA signing disabled: %s", exc)
            return None

    def manifest(self, meta: ImageProvenance) -> dict[str, Any]:
        return {
            "claim_generator_info": [{"name": "imagine-bot", "version": _version()}],
            "title": f"{meta.job_id}-{meta.index}.png",
            "format": "image/png",
            "assertions": [
                {
                    "label": "c2pa.actions",
                    "data": {
                        "actions": [
                            {
                                "action": "c2pa.created",
                                "digitalSourceType": TRAINED_ALGORITHMIC_MEDIA,
                                "softwareAgent": {"name": f"imagine-bot ({meta.instance})"},
                            }
                        ]
                    },
                },
                {"label": "org.imagine-bot.provenance", "data": meta.summary()},
            ],
        }

    def sign_png(self, data: bytes, meta: ImageProvenance) -> bytes | None:
        out = io.BytesIO()
        try:
            with self._lock, self._c2pa.Builder(self.manifest(meta), self._context) as builder:
                builder.sign(self._signer, "image/png", io.BytesIO(data), out)
        except Exception as exc:  # noqa: BLE001
            self.last_error = str(exc)
            log.warning("C2PA signing failed for job %s: %s", meta.job_id, exc)
            return None
        return out.getvalue()


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("imagine-bot")
    except Exception:  # noqa: BLE001
        return "0"


def read_c2pa(
    data: bytes, mime: str = "image/png", trust_pem: str | None = None
) -> dict[str, Any] | None:
    """The active C2PA manifest and its validation state, or None when there is none.

    ``trust_pem``: this instance's CA certificate. Read with it as the only trust anchor, a
    manifest this instance signed is "Trusted" (``ours``); one signed by anyone else, however
    valid, is not: a self-made certificate with the same names does not chain to our CA.
    """
    try:
        import c2pa

        context = None
        if trust_pem is not None:
            settings = c2pa.Settings.from_dict({"trust": {"trust_anchors": trust_pem}})
            context = c2pa.Context(settings)
        with c2pa.Reader(mime, io.BytesIO(data), context=context) as reader:
            manifest = json.loads(reader.json())
            state = reader.get_validation_state()
    except Exception:  # noqa: BLE001 - no manifest, or unreadable: same answer for a look-up
        return None
    active = manifest.get("manifests", {}).get(manifest.get("active_manifest", ""), {})
    actions = [
        a
        for assertion in active.get("assertions", [])
        if assertion.get("label", "").startswith("c2pa.actions")
        for a in assertion.get("data", {}).get("actions", [])
    ]
    claims = [
        assertion.get("data") or {}
        for assertion in active.get("assertions", [])
        if assertion.get("label") == "org.imagine-bot.provenance"
    ]
    return {
        "validation_state": state,
        "ours": trust_pem is not None and state == "Trusted",
        "claim": claims[0] if claims else None,
        "ai_generated": any(
            a.get("digitalSourceType") == TRAINED_ALGORITHMIC_MEDIA for a in actions
        ),
        "signer": (active.get("signature_info") or {}).get("issuer"),
        "claim_generator": [g.get("name") for g in active.get("claim_generator_info", [])],
    }


def read_metadata(data: bytes, trust_pem: str | None = None) -> dict[str, Any]:
    """Text chunks this bot writes (PNG), plus C2PA (``read_c2pa``), from an image file's bytes."""
    try:
        img = Image.open(io.BytesIO(data))
        info = dict(img.info)
        mime = Image.MIME.get(img.format or "", "image/png")
    except Exception:  # noqa: BLE001 - load_image already vetted the bytes for the caller
        return {}
    out: dict[str, Any] = {}
    if isinstance(info.get("parameters"), str):
        out["parameters"] = info["parameters"]
    if isinstance(info.get(METADATA_KEY), str):
        try:
            out["imagine_bot"] = json.loads(info[METADATA_KEY])
        except ValueError:
            pass
    xmp = info.get("XML:com.adobe.xmp") or info.get("xmp")
    if isinstance(xmp, bytes):
        xmp = xmp.decode("utf-8", "replace")
    if isinstance(xmp, str) and "trainedAlgorithmicMedia" in xmp:
        out["ai_generated"] = True
    c2pa_info = read_c2pa(data, mime, trust_pem)
    if c2pa_info is not None:
        out["c2pa"] = c2pa_info
        out["ai_generated"] = out.get("ai_generated", False) or c2pa_info["ai_generated"]
    return out


# --- "who made this?" -------------------------------------------------------------------------


@dataclass
class LookupResult:
    """Answer to "who made this?". ``job`` is None when nothing in this store matches."""

    detection: watermark.Detection
    metadata: dict[str, Any]
    sha256: str
    job: dict[str, Any] | None = None
    image: dict[str, Any] | None = None
    # How the job was found: "sha256", "watermark" (this instance's keyed mark) or "c2pa"
    # (a manifest this instance signed). PNG text alone never names a job: see metadata_claim.
    matched_by: str | None = None
    metadata_claim: str | None = None  # the job a text chunk names: unverified, names nobody
    # A grid's tiles that carry marks, read when the whole image has none (see detect_tiles).
    tiles: list[watermark.TileDetection] = field(default_factory=list)
    other_candidates: list[str] = field(default_factory=list)
    lineage: list[dict[str, Any]] = field(default_factory=list)
    children: list[dict[str, Any]] = field(default_factory=list)
    moderation: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "found": self.job is not None,
            "matched_by": self.matched_by,
            "metadata_claim": self.metadata_claim,
            "sha256": self.sha256,
            "watermark": self.detection.to_dict(),
            "grid_tiles": [tile.to_dict() for tile in self.tiles],
            "metadata": self.metadata,
            "job": self.job,
            "image": self.image,
            "other_candidates": self.other_candidates,
            "lineage": self.lineage,
            "children": self.children,
            "moderation": self.moderation,
        }


def _job_dict(row: Any) -> dict[str, Any]:
    job = dict(row)
    for key in ("params", "credited_user_ids", "delivery"):
        if isinstance(job.get(key), str):
            try:
                job[key] = json.loads(job[key])
            except ValueError:
                pass
    for key in ("created_at", "started_at", "finished_at", "delivered_at"):
        if job.get(key):
            job[f"{key}_utc"] = dt.datetime.fromtimestamp(job[key], dt.timezone.utc).isoformat(
                timespec="seconds"
            )
    job.pop("delivery", None)  # message ids and tokens are nobody's business here
    return job


async def lookup(
    store: Any, image: bytes | str | Path | Image.Image, *, key: WatermarkKey | None = None
) -> LookupResult:
    """Find the job that made ``image`` from evidence nobody else can forge.

    Only three things name a job (and so a person): the exact file hash (a file this instance
    stored), this instance's keyed watermark (``watermark.detect`` with ``key``, by default the
    key next to the store: ``data_dir/keys``), and a C2PA manifest signed by this instance's
    certificate. A PNG text chunk naming a job is reported as ``metadata_claim`` and names
    nobody; marks made with another key, or with the old unkeyed scheme, do not read at all.

    The watermark payload is (job seq mod 32,768, slot), so it is matched against both the
    ``images.watermark_payload`` column and the jobs' ``seq``; several matches (after the seq
    wrapped) are listed newest first in ``other_candidates``. The image is also read as a grid,
    tile by tile (``watermark.detect_tiles``): a delivered grid's tiles carry their images'
    marks; a tile cropped out of a grid reads as a whole image.
    """
    if key is None:
        key = store_key(store)
    trust = _store_ca(store)
    sha, detection, tiles, metadata = await asyncio.to_thread(_inspect, image, key, trust)
    result = LookupResult(detection, metadata, sha, tiles=tiles)
    candidates = await _candidates(store, sha, detection, tiles, metadata)
    # A text chunk anyone can write: reported as a claim, never used to name anyone.
    meta_job = (metadata.get("imagine_bot") or {}).get("job_id")
    result.metadata_claim = str(meta_job) if meta_job else None
    await _match_job(store, result, candidates)
    if result.job is None:
        return result
    if result.image is None:
        await _find_image(store, result)
    await _add_history(store, result)
    return result


async def _candidates(
    store: Any,
    sha: str | None,
    detection: watermark.Detection,
    tiles: list[watermark.TileDetection],
    metadata: dict[str, Any],
) -> list[tuple[str, Any, str]]:
    """(job_id, image row or None, how) for every piece of unforgeable evidence, strongest first."""
    candidates: list[tuple[str, Any, str]] = []
    if sha:
        for row in await store.image_rows_with_sha256(sha):
            candidates.append((row["job_id"], row, "sha256"))
    if detection.valid and detection.payload is not None and not tiles:
        seqs = [watermark.split_payload(detection.payload)[0]]
        rows = await store.image_rows_with_watermark(detection.payload_hex)
        candidates += [(row["job_id"], row, "watermark") for row in rows]
    else:  # a grid, maybe: its tiles' rows are its images', not the looked-up image's
        seqs = _tile_seqs(tiles)
    for seq_low in seqs:
        ids = await store.job_ids_with_seq(watermark.SEQ_MODULUS, seq_low, limit=20)
        candidates += [(found, None, "watermark") for found in ids]
    signed = metadata.get("c2pa") or {}
    if signed.get("ours") and isinstance(signed.get("claim"), dict):
        if signed["claim"].get("job_id"):
            candidates.append((str(signed["claim"]["job_id"]), None, "c2pa"))
    return candidates


async def _match_job(
    store: Any, result: LookupResult, candidates: list[tuple[str, Any, str]]
) -> None:
    """The first candidate that is a stored job names it; later other jobs are listed."""
    seen: list[str] = []
    for job_id, row, how in candidates:
        if job_id in seen:
            continue
        job_row = await store.job_row(job_id)
        if job_row is None:
            continue
        seen.append(job_id)
        if result.job is None:
            result.job, result.matched_by = _job_dict(job_row), how
            if row is not None:
                result.image = _image_dict(row)
        elif job_id != result.job["id"]:
            result.other_candidates.append(job_id)


async def _find_image(store: Any, result: LookupResult) -> None:
    """Which of the job's images it is, when no image row matched: a grid, or the mark's slot."""
    assert result.job is not None
    detection, tiles = result.detection, result.tiles
    if tiles:
        result.image = {
            "grid": True,
            "path": result.job.get("grid_path"),
            "tiles": [tile.position for tile in tiles],
        }
    elif detection.valid and detection.payload is not None:
        _, slot = watermark.split_payload(detection.payload)
        image_row = await store.image_row(result.job["id"], slot)
        if image_row is not None:
            result.image = _image_dict(image_row)
        elif slot == watermark.GRID_SLOT:  # grids marked as a whole, before tiled marks
            result.image = {"grid": True, "path": result.job.get("grid_path")}


async def _add_history(store: Any, result: LookupResult) -> None:
    """The job's parents (up to 20), children and moderation (audit) rows."""
    assert result.job is not None
    job_id = result.job["id"]
    parent = result.job.get("parent_job_id")
    while parent and len(result.lineage) < 20:
        parent_row = await store.job_row(parent)
        if parent_row is None:
            break
        entry = _job_dict(parent_row)
        result.lineage.append(entry)
        parent = entry.get("parent_job_id")
    result.children = [
        {"id": r["id"], "kind": r["kind"], "user_id": r["user_id"], "status": r["status"]}
        for r in await store.child_job_rows(job_id)
    ]
    for row in await store.audit_rows_for_job(job_id):
        entry = dict(row)
        for field_name in ("categories", "evidence"):
            try:
                entry[field_name] = json.loads(entry[field_name])
            except (TypeError, ValueError):
                pass
        result.moderation.append(entry)


def _tile_seqs(tiles: list[watermark.TileDetection]) -> list[int]:
    """The job seqs (mod 32,768) a grid's tiles name, the one most tiles agree on first."""
    counts = Counter(
        watermark.split_payload(t.detection.payload)[0]
        for t in tiles
        if t.detection.payload is not None
    )
    return [seq for seq, _ in counts.most_common()]


def store_key(store: Any) -> WatermarkKey | None:
    """The watermark key of the instance that owns ``store`` (``data_dir/keys``, next to the
    database), or None when that instance never made one (then no mark can be its own)."""
    path = getattr(store, "path", None)
    if path is None:
        return None
    keys_dir = Path(path).parent / "keys"
    if not (keys_dir / KEY_FILE).is_file():
        return None
    return load_or_create_key(keys_dir)


def _store_ca(store: Any) -> str | None:
    """This instance's C2PA CA certificate (next to the database), if it ever made one."""
    path = getattr(store, "path", None)
    ca = Path(path).parent / "keys" / CA_CERT if path is not None else None
    return ca.read_text() if ca is not None and ca.is_file() else None


def _inspect(
    image: bytes | str | Path | Image.Image, key: WatermarkKey | None, trust: str | None = None
) -> tuple[str, watermark.Detection, list[watermark.TileDetection], dict]:
    if isinstance(image, Image.Image):
        sha, img, metadata = "", image.convert("RGB"), {}
    else:
        if isinstance(image, (str, Path)):
            img = load_image(image, what="image")
            data = Path(image).read_bytes()
        else:
            data = bytes(image)
            img = load_image(data, what="image")
        sha, metadata = hashlib.sha256(data).hexdigest(), read_metadata(data, trust)
    if key is None:
        return sha, watermark.Detection(None, 0.0, False), [], metadata
    detection = watermark.detect(img, key)
    # A delivered grid's tiles carry their images' marks; the whole grid may read as one of
    # them (crops keep the mark), so its tiles are always read too.
    tiles = watermark.detect_tiles(img, key)
    if detection.valid and len(tiles) < 2:
        tiles = []  # one image (or a crop of one): its own mark is the answer
    return sha, detection, tiles, metadata


def _image_dict(row: Any) -> dict[str, Any]:
    out = dict(row)
    try:
        out["moderation"] = json.loads(out.get("moderation") or "{}")
    except ValueError:
        pass
    return out


def format_lookup(result: LookupResult) -> str:
    """Plain-text report for the CLI and the moderator command."""
    det = result.detection
    if result.tiles:
        cols, rows = result.tiles[0].layout
        marks = ", ".join(
            f"tile {t.position} payload {t.detection.payload_hex}" for t in result.tiles
        )
        mark = f"read as a {cols}x{rows} grid, {marks} (keyed tag ok)"
    elif det.valid:
        mark = f"payload {det.payload_hex} (keyed tag ok, confidence {det.confidence:.2f})"
    else:
        mark = f"none of this instance's found (confidence {det.confidence:.2f})"
    lines = ["watermark: " + mark]
    meta = result.metadata
    if meta.get("ai_generated"):
        lines.append("metadata: marked as AI-generated (IPTC trainedAlgorithmicMedia)")
    if "c2pa" in meta:
        whose = "signed by this instance" if meta["c2pa"].get("ours") else "not signed by us"
        lines.append(f"C2PA: {meta['c2pa']['validation_state']} manifest, {whose}")
    claim = result.metadata_claim
    if claim and (result.job is None or result.job["id"] != claim):
        lines.append(
            f"metadata claims job {claim}, unverified (a text chunk anyone can write; "
            "it names nobody)"
        )
    if result.job is None:
        lines.append("job: not found in this instance's store")
        return "\n".join(lines)
    job = result.job
    params = job.get("params") or {}
    lines += [
        f"job: {job['id']} ({job['kind']}, {job['status']}), matched by {result.matched_by}",
        f"who: user {job['user_id']}",
        f"when: {job.get('created_at_utc', '?')}",
        f"where: guild {job.get('guild_id') or '-'}, channel {job.get('channel_id') or '-'}",
        f"prompt: {params.get('prompt', '?')}",
    ]
    if params.get("negative_prompt"):
        lines.append(f"negative prompt: {params['negative_prompt']}")
    settings = {
        k: params.get(k) for k in ("width", "height", "steps", "guidance", "scheduler", "seed")
    }
    lines.append(
        "parameters: " + ", ".join(f"{k}={v}" for k, v in settings.items() if v is not None)
    )
    lines.append(f"GPU energy: {energy_text(job.get('energy_joules'))}")
    if result.image and result.image.get("grid"):
        tiles = result.image.get("tiles")
        lines.append("image: the grid" + (f" (marked tiles {tiles})" if tiles else ""))
    elif result.image:
        lines.append(
            f"image: index {result.image.get('idx')}, seed {result.image.get('seed', '-')}"
        )
    for parent in result.lineage:
        lines.append(f"parent: {parent['id']} ({parent['kind']}) by user {parent['user_id']}")
    for child in result.children:
        lines.append(f"child: {child['id']} ({child['kind']}) by user {child['user_id']}")
    if result.other_candidates:
        lines.append(
            "other candidates (payload reused after wrap): " + ", ".join(result.other_candidates)
        )
    if result.moderation:
        for entry in result.moderation:
            lines.append(
                f"moderation: {entry['stage']} {entry['action']} "
                f"{','.join(entry.get('categories') or [])} - {entry.get('reason') or ''}"
            )
    else:
        lines.append("moderation: no blocks or spoilers recorded for this job")
    return "\n".join(lines)
