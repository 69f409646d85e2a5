"""Multi-worker training on tf.distribute: two local ``cnn-train`` processes, each with its own
``TF_CONFIG``, train together on CPU; both finish, only the chief exports, the export loads and
predicts, and the workers stepped together (the same global batches, the same all-reduced
losses)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import numpy as np
import tensorflow as tf

from training.metadata import ModelMetadata

from .digits import bar_digits_npz


def _ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _train_on_two_workers(data, outs, *extra: str) -> list[str]:
    """``cnn-train simple_cnn`` as two local workers; their logs (both must succeed)."""
    workers = [f"localhost:{port}" for port in _ports(2)]
    procs = []
    for index in range(2):
        config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        env = {
            **os.environ,
            "TF_CONFIG": json.dumps(config),
            "TF_CPP_MIN_LOG_LEVEL": "3",
            "CUDA_VISIBLE_DEVICES": "",
        }
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "training.cli",
                    "simple_cnn",
                    "--data",
                    str(data),
                    "--batch-size",
                    "16",
                    "--no-augment",
                    "--out",
                    str(outs[index]),
                    *extra,
                ],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    logs = [proc.communicate(timeout=120)[0] for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], logs
    return logs


def _epochs(log: str) -> list[str]:
    return [line for line in log.splitlines() if line.startswith("epoch ")]


def test_two_workers_train_one_model_and_only_the_chief_exports(tmp_path):
    data = tmp_path / "mnist.npz"
    bar_digits_npz(data, 240)
    outs = [tmp_path / f"out{i}" for i in range(2)]
    logs = _train_on_two_workers(data, outs, "--epochs", "3")
    # the same number of steps of the global batch (2 x 16) on both, the same losses
    epochs = [_epochs(log) for log in logs]
    assert len(epochs[0]) == 3 and all("steps of 32" in line for line in epochs[0])
    assert [line.split(" - loss ")[1] for line in epochs[0]] == [
        line.split(" - loss ")[1] for line in epochs[1]
    ]
    # the chief (worker 0) exported; the other worker left nothing behind
    assert not outs[1].exists() or not any(outs[1].rglob("saved_model.pb"))
    (version,) = (outs[0] / "simple_cnn").iterdir()
    meta = ModelMetadata.read(version)
    assert meta.training.workers == 2 and meta.training.batch_size == 16
    assert meta.validation_metrics["accuracy"] >= 0.0
    serve = tf.saved_model.load(str(version)).signatures["serving_default"]
    probabilities = serve(image=tf.zeros([3, 28, 28, 1]))["digit"].numpy()
    assert probabilities.shape == (3, 10)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)


def test_only_the_chief_checkpoints_and_a_rerun_continues(tmp_path):
    data = tmp_path / "mnist.npz"
    bar_digits_npz(data, 240)
    outs = [tmp_path / f"out{i}" for i in range(2)]
    checkpoints = tmp_path / "ckpt"
    first = _train_on_two_workers(data, outs, "--epochs", "1", "--resume", str(checkpoints))
    assert [len(_epochs(log)) for log in first] == [1, 1]
    saved = sorted(p.name for p in checkpoints.iterdir())
    assert "checkpoint" in saved and any(name.startswith("ckpt-1") for name in saved)
    more = _train_on_two_workers(data, outs, "--epochs", "3", "--resume", str(checkpoints))
    for log in more:  # both restored the chief's checkpoint and ran epochs 2 and 3 only
        assert "resuming after epoch 1" in log
        assert [line.split(" - ")[0] for line in _epochs(log)] == ["epoch 2/3", "epoch 3/3"]
    assert any(p.name.startswith("ckpt-3") for p in checkpoints.iterdir())
