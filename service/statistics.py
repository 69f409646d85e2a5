"""Triton's statistics extension: per model version, what its batcher did, counted as Triton
counts it, so ``perf_analyzer``, Model Analyzer and ``get_inference_statistics`` read the
server-side times they read from Triton.

Fed from the timings the batcher takes anyway (one monotonic clock): a request's ``queue`` is
from entering the batcher to its model call's start; ``compute_input`` the batch's assembly
(joining the requests' inputs), ``compute_infer`` the model call, ``compute_output`` handing
each request its slice — each charged in full to every request of the batch, as Triton does;
``success`` is the request's whole time in the batcher (the decoding before it is the
preprocessing every door shares, not the model's). ``inference_count`` counts images,
``execution_count`` model calls. Memory is bounded: a few counters per version and one entry
per batch size seen (at most the version's ``max_batch_size``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field


def _ns(seconds: float) -> int:
    return max(0, round(seconds * 1e9))


@dataclass
class Duration:
    count: int = 0
    ns: int = 0

    def add(self, seconds: float, count: int = 1) -> None:
        self.count += count
        self.ns += _ns(seconds)

    def as_dict(self) -> dict[str, int]:
        return {"count": self.count, "ns": self.ns}


@dataclass
class Execution:
    """One model call's times (seconds): assembling its batch, the call, the slicing."""

    images: int
    input_s: float
    infer_s: float
    output_s: float = 0.0


@dataclass
class BatchStatistics:
    compute_input: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    compute_output: Duration = field(default_factory=Duration)


STAGES = ("success", "fail", "queue", "compute_input", "compute_infer", "compute_output")


@dataclass
class VersionStatistics:
    inference_count: int = 0
    execution_count: int = 0
    last_inference: int = 0  # ms since the epoch
    stages: dict[str, Duration] = field(default_factory=lambda: {s: Duration() for s in STAGES})
    batches: dict[int, BatchStatistics] = field(default_factory=dict)

    def executed(self, execution: Execution) -> None:
        """A model call of ``execution.images`` images has finished."""
        self.inference_count += execution.images
        self.execution_count += 1
        self.last_inference = time.time_ns() // 1_000_000
        batch = self.batches.setdefault(execution.images, BatchStatistics())
        batch.compute_input.add(execution.input_s)
        batch.compute_infer.add(execution.infer_s)
        batch.compute_output.add(execution.output_s)

    def succeeded(self, execution: Execution, queue_s: float, total_s: float) -> None:
        """A request answered from ``execution`` after ``queue_s`` in the queue."""
        stages = self.stages
        stages["success"].add(total_s)
        stages["queue"].add(queue_s)
        stages["compute_input"].add(execution.input_s)
        stages["compute_infer"].add(execution.infer_s)
        stages["compute_output"].add(execution.output_s)

    def failed(self, total_s: float = 0.0) -> None:
        """A request refused or failed after ``total_s`` in the batcher."""
        self.stages["fail"].add(total_s)

    def as_dict(self, name: str, version: int) -> dict:
        """One entry of ``model_stats``, in Triton's JSON shape."""
        inference = {stage: duration.as_dict() for stage, duration in self.stages.items()}
        inference["cache_hit"] = inference["cache_miss"] = Duration().as_dict()  # no cache
        return {
            "name": name,
            "version": str(version),
            "last_inference": self.last_inference,
            "inference_count": self.inference_count,
            "execution_count": self.execution_count,
            "inference_stats": inference,
            "response_stats": {},
            "batch_stats": [
                {
                    "batch_size": size,
                    "compute_input": batch.compute_input.as_dict(),
                    "compute_infer": batch.compute_infer.as_dict(),
                    "compute_output": batch.compute_output.as_dict(),
                }
                for size, batch in sorted(self.batches.items())
            ],
            "memory_usage": [],
        }
