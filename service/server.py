"""The server every front door shares: the settings, the models, the limits, the budgets and
the decoding threads. Routes of every API (multipart, Open Inference Protocol, TF Serving) are
thin codecs over it; they reach it through one dependency (:data:`service.deps.ServerDep`)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from service.admission import Admission
from service.decoding import Decoder
from service.gradcam import TracedCache
from service.memory import Trimmer
from service.model import ServedModel
from service.registry import ModelRegistry
from service.settings import Settings


@dataclass
class Server:
    """What every request may use, built once by the app's lifespan.

    ``decoder``: one worker process per core decodes uploads (:mod:`service.decoding`; on
    Starlette's 40 shared threads, concurrent photos thrashed the cores). ``heavy``: Grad-CAM and feature maps run on one
    thread of their own, never on a model version's inference thread, so ``/predict`` keeps
    its latency while they work (docs/performance.md); the traced Grad-CAM graphs of every
    version share one bounded cache, ``gradcams``."""

    registry: ModelRegistry
    settings: Settings
    admission: Admission
    decoder: Decoder
    heavy: ThreadPoolExecutor
    gradcams: TracedCache
    trimmer: Trimmer

    def max_images(self, model: ServedModel) -> int:
        """The most images one request may send ``model``: the model's own maximum batch
        size (its metadata), within the service's cap."""
        own = model.metadata.max_batch_size
        cap = self.settings.max_images_per_request
        return cap if own is None else min(own, cap)
