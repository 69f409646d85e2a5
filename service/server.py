"""The server every front door shares: the settings, the models, the limits, the budgets and
the decoding threads. Routes of every API (multipart, Open Inference Protocol, TF Serving) are
thin codecs over it; they reach it through one dependency (:data:`service.deps.ServerDep`)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from service.admission import Admission
from service.gradcam import TracedCache
from service.memory import Trimmer
from service.registry import ModelRegistry
from service.settings import Settings


@dataclass
class Server:
    """Decoding has its own pool of one thread per core: on Starlette's 40 shared threads,
    8 concurrent photos thrashed two cores (1200x900 JPEGs at 8 clients, bench/run.py
    --photo: 198 req/s with 40 threads, 302 with 2).

    Grad-CAM and feature maps run on one ``heavy`` thread of their own, never on a model
    version's inference thread: tracing a Grad-CAM graph takes up to 2 s of Python, which on
    the inference thread held every ``/predict`` of that version behind it (p50 7 ms -> 1.8 s
    with 4 explain clients). The traced graphs of every version share one bounded cache."""

    registry: ModelRegistry
    settings: Settings
    admission: Admission
    decoder: ThreadPoolExecutor
    heavy: ThreadPoolExecutor
    gradcams: TracedCache
    trimmer: Trimmer
