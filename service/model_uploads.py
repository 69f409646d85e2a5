"""Models over HTTP (``CNN_SERVE_MODEL_UPLOADS=true``, with an admin key): an uploaded
``.keras``/``.h5`` file becomes a served version exactly as ``cnn-serve import`` makes one.

An upload is untrusted input that builds a program, so:

- the body has its own size limit (``CNN_SERVE_MAX_MODEL_BYTES``) and pace rules (like every
  body), at most two arrive at once (more: 503), and it is spooled to disk
  inside the repository (``.imports/``), where a crash leaves nothing a restart does not
  remove;
- the repository's size (``CNN_SERVE_MAX_REPOSITORY_BYTES``, 507) and the model's versions
  (``CNN_SERVE_MAX_VERSIONS_PER_MODEL``, 409) are bounded;
- the file is read, checked and exported by a child process with memory, CPU and time
  limits (:mod:`training.sandbox`), one at a time, the others waiting in a bounded queue;
  the server only loads the result, a version written atomically under the model's lock.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
from pathlib import Path

from pydantic import ValidationError
from starlette.datastructures import UploadFile
from starlette.requests import Request

from service.errors import (
    InsufficientStorage,
    InvalidModel,
    InvalidParameter,
    VersionExists,
    clip,
)
from service.model import ServedModel, Status
from service.schemas import ModelUploadParams
from service.server import Server
from service.settings import Settings
from training import repository
from training.import_command import KERAS_SUFFIXES, Conflict, Options, Refused
from training.sandbox import import_isolated

UPLOAD_PATH = re.compile(r"/models/[^/]+/versions")  # the route, for the body's size limit
MAX_FIELDS = 8


async def upload(server: Server, request: Request, name: str) -> ServedModel:
    """Import the request's model file as the next (or the asked) version of ``name`` and
    wait (at most ``registry.CHANGE_WAIT_S``) until it serves; the version as it is then."""
    settings, admission = server.settings, server.admission
    with repository.scratch(settings.model_dir) as scratch:
        async with admission.reserve(model_upload_bodies=1):
            form = await request.form(max_files=2, max_fields=MAX_FIELDS)
            try:
                options = await _options(form, name, scratch, settings)
            finally:
                await form.close()
        await asyncio.to_thread(_check_room, settings, options.source.stat().st_size)
        loop = asyncio.get_running_loop()
        await admission.model_imports.acquire(1, loop.time() + settings.import_timeout_s)
        try:
            path = await asyncio.to_thread(
                import_isolated, options, settings.import_limits(), scratch
            )
        except Conflict as exc:
            raise VersionExists(_without_paths(str(exc), scratch, settings)) from None
        except Refused as exc:
            raise InvalidModel(_without_paths(str(exc), scratch, settings)) from None
        finally:
            admission.model_imports.release(1)
    return await _served(server, name, int(path.name), path)


def _without_paths(message: str, scratch: Path, settings: Settings) -> str:
    """A refusal as the uploader may read it: no directory of the server's."""
    for directory in (scratch, settings.model_dir):
        message = message.replace(f"{directory}/", "").replace(str(directory), "the repository")
    return message


def _check_room(settings: Settings, incoming: int) -> None:
    """The repository with this upload (counted as its file; a version is about that size)
    within ``CNN_SERVE_MAX_REPOSITORY_BYTES``."""
    used = sum(
        os.path.getsize(os.path.join(root, f))
        for root, _, files in os.walk(settings.model_dir)
        for f in files
        if not root.startswith(str(settings.model_dir / repository.SCRATCH))
    )
    if used + incoming > settings.max_repository_bytes:
        raise InsufficientStorage(
            f"the model repository holds {used:,} bytes; this upload would take it past "
            f"{settings.max_repository_bytes:,} (CNN_SERVE_MAX_REPOSITORY_BYTES)"
        )


async def _options(form, name: str, scratch: Path, settings: Settings) -> Options:
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
        settings.model_dir,
        params.version,
        labels={None: labels_path} if labels_path else None,
        heads=params.heads,
        value_range=params.value_range_pair,
        preprocessing=params.preprocessing,
        input_size=params.input_size_pair,
        max_versions=settings.max_versions_per_model,
        max_unpacked_bytes=settings.max_model_bytes,
        max_memory_bytes=settings.max_model_memory_bytes,
    )


def _save(upload: UploadFile, target: Path) -> None:
    upload.file.seek(0)
    with target.open("wb") as out:
        shutil.copyfileobj(upload.file, out)


async def _served(server: Server, name: str, version: int, path: Path) -> ServedModel:
    """Read the repository now and wait for the new version; one that was written but does
    not load is removed again (400) rather than left failing."""
    registry = server.registry
    await registry.load_now(name)  # past its wait, still loading: the caller answers 202
    model = registry.get(name, version)
    if model.status is Status.failed:
        await asyncio.to_thread(shutil.rmtree, path, True)
        await registry.sync_soon()
        raise InvalidModel(f"the model was imported but does not load ({model.error})")
    return model
