"""The allocator's tuning: megabyte blocks freed by one request are reused by the next."""

from __future__ import annotations

import resource

import pytest

from service import memory

BLOCK = 3 * 2**20  # about a 1,024-image MNIST OIP body (3.2 MB)
ROUNDS = 20


def _faults_of_fresh_blocks() -> int:
    """Page faults while a new 3 MB block is built and dropped ``ROUNDS`` times."""
    part = b"x" * (BLOCK // 4)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(ROUNDS):
        block = b"".join([part] * 4)  # every page written, as a body read writes them
        del block
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


def test_megabyte_blocks_are_reused_not_faulted_in_anew() -> None:
    if not memory.tune_allocator():
        pytest.skip("not glibc: malloc's thresholds are its own")
    _faults_of_fresh_blocks()  # the heap grows once
    pages = BLOCK // resource.getpagesize()
    # in a fresh mapping every round faults every page in: ~15,000 faults
    assert _faults_of_fresh_blocks() < ROUNDS * pages // 10


def _rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize()


def test_blocks_larger_than_the_threshold_go_back_when_freed() -> None:
    if not memory.tune_allocator():
        pytest.skip("not glibc: malloc's thresholds are its own")
    answer = b"x" * (16 * memory.MMAP_THRESHOLD)  # a feature-map answer's size
    held = _rss_bytes()
    del answer
    assert held - _rss_bytes() >= 15 * memory.MMAP_THRESHOLD


def test_trim_frees_what_only_a_reference_cycle_kept() -> None:
    """A rejected request's error keeps its frames (and the request's buffers) in a reference
    cycle, which the collector's raised thresholds leave for long: 16 rejected 39 MB gRPC
    messages left a server 1.3 GB larger until trim collected them (bench.abuse)."""
    import gc

    if not memory.tune_allocator():
        pytest.skip("not glibc: malloc's thresholds are its own")
    gc.disable()
    try:

        def rejected(request: bytearray) -> BaseException:
            try:
                raise ValueError("the wrong shape")
            except ValueError as exc:  # exc -> traceback -> this frame -> exc: a cycle
                caught = exc
                return caught

        request = bytearray(b"\1" * (300 * 2**20))
        error = rejected(request)
        del request, error
        held = _rss_bytes()
        memory.trim()
        assert held - _rss_bytes() >= 250 * 2**20
    finally:
        gc.enable()
