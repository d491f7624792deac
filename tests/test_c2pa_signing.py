"""C2PA signing on the worker's post-processing path: valid credentials, no embedded thumbnail."""

from __future__ import annotations

import io
import json

import c2pa
from PIL import Image
from skimage import data

from core.config import Settings
from moderation.provenance import C2paSigner, ImageProvenance, encode_png, read_c2pa


def test_signed_png_is_valid_and_carries_no_thumbnail(tmp_path):
    settings = Settings(data_dir=tmp_path, provenance={"instance_name": "Test Instance"})
    signer = C2paSigner.for_settings(settings)
    assert signer is not None
    img = Image.fromarray(data.astronaut()).resize((256, 256))
    meta = ImageProvenance(
        instance="Test Instance", job_id="job0000001", index=0, parameters="a cat",
        watermark_payload=None,
    )
    plain = encode_png(img, meta, None)
    signed = encode_png(img, meta, signer)

    info = read_c2pa(signed)
    assert info is not None and info["validation_state"] in ("Valid", "Trusted")
    assert info["ai_generated"] is True
    with c2pa.Reader("image/png", io.BytesIO(signed)) as reader:
        store = json.loads(reader.json())
    active = store["manifests"][store["active_manifest"]]
    # A thumbnail would be a second copy of the picture inside the file: bytes against Discord's
    # upload limit and CPU on every delivered image, for no lookup benefit.
    assert "thumbnail" not in active
    assert len(signed) - len(plain) < 20_000
