"""Multi-worker training on TensorFlow's own engine: ``TF_CONFIG`` ->
``tf.distribute.MultiWorkerMirroredStrategy``.

Keras 3's ``Model.fit`` does not run under that strategy (keras-team/keras#20585: it hands
``PerReplica`` values to ops that want tensors), so several workers train with a small custom
loop: each step runs on every worker (``strategy.run``), losses are averaged over the global
batch and the gradients all-reduced, so every worker holds the same weights. The dataset is
sharded per worker (``AutoShardPolicy.DATA``); the global batch is the per-worker batch times
the workers. Only the chief writes the export; the others write theirs to a temporary
directory and delete it (saving may take part in collective ops, so every worker saves).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import keras

from training.metadata import OutputSpec

if TYPE_CHECKING:  # imported where used: one process on another Keras backend needs no TF
    import tensorflow as tf


@dataclass
class Cluster:
    """The processes training together; ``strategy`` is None off TensorFlow (one process)."""

    strategy: tf.distribute.Strategy | None
    workers: int
    chief: bool

    def scope(self) -> contextlib.AbstractContextManager:
        return self.strategy.scope() if self.strategy else contextlib.nullcontext()


def single_process() -> Cluster:
    """This process alone: on TensorFlow over all local GPUs (``MirroredStrategy``), on another
    backend wherever Keras places it."""
    if keras.backend.backend() != "tensorflow":
        return Cluster(None, 1, True)
    import tensorflow as tf

    gpus = tf.config.list_logical_devices("GPU")
    strategy = tf.distribute.MirroredStrategy() if len(gpus) > 1 else tf.distribute.get_strategy()
    return Cluster(strategy, 1, True)


def from_environment() -> Cluster:
    """The cluster ``TF_CONFIG`` describes, or this machine alone. Call before any other
    TensorFlow op: collective ops can only be configured at program start."""
    config = json.loads(os.environ.get("TF_CONFIG") or "{}")
    cluster = config.get("cluster", {})
    workers = len(cluster.get("chief", [])) + len(cluster.get("worker", []))
    if workers <= 1:
        return single_process()
    if keras.backend.backend() != "tensorflow":
        raise ValueError(
            f"TF_CONFIG names {workers} workers: multi-worker training runs on "
            f"TensorFlow (KERAS_BACKEND=tensorflow), not on "
            f"{keras.backend.backend()}"
        )
    import tensorflow as tf

    task = config.get("task", {})
    chief = task.get("type") == "chief" or (
        "chief" not in cluster and task.get("type") == "worker" and task.get("index") == 0
    )
    return Cluster(tf.distribute.MultiWorkerMirroredStrategy(), workers, chief)


def shard_per_worker(ds: tf.data.Dataset) -> tf.data.Dataset:
    import tensorflow as tf

    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return ds.with_options(options)


def fit_multi_worker(
    model: keras.Model,
    outputs: tuple[OutputSpec, ...],
    train_ds: tf.data.Dataset,
    train_examples: int,
    global_batch: int,
    epochs: int,
    optimizer: keras.optimizers.Optimizer,
    cluster: Cluster,
    checkpoints: str | None = None,
) -> list[float]:
    """Train ``model`` with ``optimizer`` (both made in ``cluster.strategy.scope()``) on
    ``train_ds`` (batched to ``global_batch``); the mean training loss per epoch of this run.

    With ``checkpoints`` (a directory every worker can read): model, optimizer and epoch are
    saved after every epoch - by the chief there, by the others to a scratch directory they
    delete (saving takes part in collectives) - and a run started with the same directory
    continues after the last saved epoch (so does one given more ``epochs`` later).
    """
    import tensorflow as tf

    strategy = cluster.strategy
    assert strategy is not None, "a multi-worker cluster runs on TensorFlow"
    with strategy.scope():
        if not optimizer.built:  # its variables must exist before a restore
            optimizer.build(model.trainable_variables)
        done = tf.Variable(0, dtype=tf.int64, trainable=False)
        losses = {o.name: keras.losses.get(o.loss) for o in outputs}  # per example
    batches = iter(strategy.experimental_distribute_dataset(shard_per_worker(train_ds.repeat())))

    @tf.function
    def step(batch):
        def on_replica(x, y):
            with tf.GradientTape() as tape:
                predicted = model(x, training=True)
                per_example = tf.add_n(
                    [
                        tf.reshape(loss(y[name], predicted[name]), [-1])
                        for name, loss in losses.items()
                    ]
                )
                loss = tf.nn.compute_average_loss(per_example, global_batch_size=global_batch)
            gradients = tape.gradient(loss, model.trainable_variables)
            optimizer.apply_gradients(zip(gradients, model.trainable_variables))
            return loss

        return strategy.reduce(
            tf.distribute.ReduceOp.SUM, strategy.run(on_replica, args=batch), axis=None
        )

    manager = None
    if checkpoints:
        state = tf.train.Checkpoint(model=model, optimizer=optimizer, epoch=done)
        latest = tf.train.latest_checkpoint(checkpoints)
        if latest:
            state.restore(latest)
            print(f"resuming after epoch {int(done.numpy())} from {latest}", flush=True)
        where = checkpoints if cluster.chief else tempfile.mkdtemp(prefix="cnn-train-worker-")
        manager = tf.train.CheckpointManager(state, where, max_to_keep=1)
    steps = math.ceil(train_examples / global_batch)
    history = []
    try:
        for epoch in range(int(done.numpy()), epochs):
            start, total = time.perf_counter(), 0.0
            for _ in range(steps):
                total += float(step(next(batches)))
            history.append(total / steps)
            done.assign(epoch + 1)
            if manager is not None:
                manager.save()
            print(
                f"epoch {epoch + 1}/{epochs} - {steps} steps of {global_batch} - "
                f"{time.perf_counter() - start:.1f} s - loss {history[-1]:.4f}",
                flush=True,
            )
    finally:
        if manager is not None and not cluster.chief:
            shutil.rmtree(manager.directory, ignore_errors=True)
    return history


def evaluate(
    model: keras.Model, outputs: tuple[OutputSpec, ...], val_ds: tf.data.Dataset
) -> dict[str, float]:
    """Accuracy per output on the validation split, computed by this worker alone (every
    worker holds the same weights)."""
    right = {o.name: 0 for o in outputs}
    seen = 0
    for x, y in val_ds:
        predicted = model(x, training=False)
        for o in outputs:
            p, truth = predicted[o.name].numpy(), y[o.name].numpy()
            guess = o.decide(p)
            right[o.name] += int((guess == truth.reshape(-1)).sum())
        seen += len(x)
    return {
        f"{name}_accuracy" if len(outputs) > 1 else "accuracy": round(count / seen, 5)
        for name, count in right.items()
    }
