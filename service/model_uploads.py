"""Models over HTTP (``CNN_SERVE_MODEL_UPLOADS=true``): an uploaded ``.keras``/``.h5`` file
becomes a served version exactly as ``cnn-serve import`` makes one.

One upload at a time per process (a second gets 503 at once); the body has its own size limit
(``CNN_SERVE_MAX_MODEL_BYTES``) and is spooled to disk, not held in memory; the model loads in
Keras's safe mode (no code from the file) on the heavy-work thread; the version is written
atomically, so a model that fails leaves nothing behind and the served ones serve on.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import tempfile
from pathlib import Path

from pydantic import ValidationError
from starlette.datastructures import UploadFile
from starlette.requests import Request

from service.errors import InvalidModel, InvalidParameter, clip
from service.inference import on_heavy_thread
from service.model import ServedModel, Status
from service.schemas import ModelUploadParams
from service.server import Server
from training.importer import KERAS_SUFFIXES, Options, Refused, import_model

UPLOAD_PATH = re.compile(r"/models/[^/]+/versions")  # the route, for the body's size limit
LOAD_WAIT_S = 30.0
MAX_FIELDS = 8


async def upload(server: Server, request: Request, name: str) -> ServedModel:
    """Import the request's model file as the next (or the asked) version of ``name`` and
    wait (at most ``LOAD_WAIT_S``) until it serves; the version as it is then."""
    async with server.admission.reserve(model_uploads=1):
        form = await request.form(max_files=2, max_fields=MAX_FIELDS)
        try:
            with tempfile.TemporaryDirectory(prefix="cnn-serve-upload-") as scratch:
                options = await _options(form, name, Path(scratch), server.settings.model_dir)
                try:  # the heavy-work thread's job like Grad-CAM's: its bounds apply
                    path = await on_heavy_thread(server, [], import_model, options)
                except Refused as exc:  # said without the server's scratch paths
                    raise InvalidModel(str(exc).replace(f"{scratch}/", "")) from None
        finally:
            await form.close()
    return await _served(server, name, int(path.name), path)


async def _options(form, name: str, scratch: Path, model_dir: Path) -> Options:
    model = form.get("file")
    if not isinstance(model, UploadFile):
        raise InvalidParameter("file: the model, a .keras or .h5 file, is required")
    suffix = Path(model.filename or "").suffix.lower()
    if suffix not in KERAS_SUFFIXES:
        raise InvalidModel(
            f"{clip(model.filename)}: send a Keras model file (.keras, .h5 or .hdf5)"
        )
    source = scratch / f"model{suffix}"
    await asyncio.to_thread(_save, model, source)
    labels = form.get("labels")
    labels_path = None
    if isinstance(labels, UploadFile):
        labels_path = scratch / "labels.txt"
        await asyncio.to_thread(_save, labels, labels_path)
    fields = {k: v for k, v in form.items() if k not in ("file", "labels") and v != ""}
    try:
        params = ModelUploadParams.model_validate(fields)
    except ValidationError as exc:
        raise InvalidParameter(
            "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:3])
        ) from None
    return Options(
        source,
        name,
        model_dir,
        params.version,
        {None: labels_path} if labels_path else None,
        params.value_range_pair,
        params.preprocessing,
        params.input_size_pair,
    )


def _save(upload: UploadFile, target: Path) -> None:
    upload.file.seek(0)
    with target.open("wb") as out:
        shutil.copyfileobj(upload.file, out)


async def _served(server: Server, name: str, version: int, path: Path) -> ServedModel:
    """Read the repository now and wait for the new version; one that was written but does
    not load is removed again (400) rather than left failing."""
    registry = server.registry
    try:
        await asyncio.wait_for(asyncio.shield(registry.load(name)), LOAD_WAIT_S)
    except TimeoutError:
        pass  # still loading: the caller answers 202
    model = registry.get(name, version)
    if model.status is Status.failed:
        await asyncio.to_thread(shutil.rmtree, path, True)
        await registry.sync_soon()
        raise InvalidModel(f"the model was imported but does not load ({model.error})")
    return model
