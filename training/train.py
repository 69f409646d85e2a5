"""Fit a model on a dataset: validation split, augmentation, early stopping, LR schedule."""

from __future__ import annotations

import math
import os
import platform
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import keras
import numpy as np

from training.averaging import WeightAveraging, recompute_batch_norm
from training.datasets import Dataset, split
from training.graph import expand
from training.metadata import InputSpec, OutputSpec

if TYPE_CHECKING:  # TensorFlow is imported where it is used: Keras on JAX trains without it
    import tensorflow as tf

    from training.distribute import Cluster


@dataclass
class TrainConfig:
    epochs: int = 20
    batch_size: int = 128
    validation_split: float = 0.1
    seed: int = 42
    augment: bool = False
    learning_rate: float = 1e-3
    patience: int = 6
    finetune_epochs: int = 5
    tensorboard: str | None = None
    verbose: int = 2
    schedule: str = "plateau"  # or "cosine": see Architecture.schedule
    resume: str | None = None  # checkpoint directory: an interrupted run continues from it
    average_weights: bool = False  # SWA: constant SGD rate, mean of epoch-end weights exported


@dataclass
class TrainResult:
    model: keras.Model
    validation_metrics: dict[str, float]
    epochs_run: int
    duration_s: float
    train_examples: int
    validation_examples: int
    history: dict[str, list[float]] = field(default_factory=dict)


def targets(outputs: tuple[OutputSpec, ...], labels: np.ndarray) -> dict[str, np.ndarray]:
    """Per-output targets from class labels: a binary output answers "is the label odd"."""
    return {o.name: o.target(labels) for o in outputs}


def on_tensorflow() -> bool:
    return keras.backend.backend() == "tensorflow"


def hardware() -> str:
    """Where training ran (the accelerators, else the CPU) and, unless TensorFlow, on which
    Keras backend."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        gpus = [g.name for g in tf.config.list_logical_devices("GPU")]
    elif backend == "jax":
        import jax

        gpus = [d.device_kind for d in jax.devices() if d.platform == "gpu"]
    else:
        gpus = []
    where = (
        f"{len(gpus)} GPU ({', '.join(gpus)})"
        if gpus
        else f"CPU ({os.cpu_count()} cores, {platform.machine()})"
    )
    return where if backend == "tensorflow" else f"{where}, Keras on {backend}"


def _augmenter(spec: InputSpec, seed: int) -> keras.Sequential:
    """Label-preserving distortions: flips and shifts for photos; for digits (where a flip
    changes the class) shifts of up to 1-2 pixels on the black background."""
    if spec.color_mode == "rgb":
        steps = [
            keras.layers.RandomFlip("horizontal", seed=seed),
            keras.layers.RandomTranslation(0.1, 0.1, fill_mode="reflect", seed=seed),
        ]
    else:
        steps = [keras.layers.RandomTranslation(0.05, 0.05, fill_mode="constant", seed=seed)]
    return keras.Sequential(steps, name="augment")


class ArrayBatches(keras.utils.PyDataset):
    """:func:`pipeline` for backends without tf.data (Keras on JAX on a GPU machine): the same
    conversion, a batch at a time by a few threads. Augmentation runs in the model instead
    (:func:`with_augmentation`), on the accelerator."""

    def __init__(
        self,
        images: np.ndarray,
        target: dict[str, np.ndarray],
        spec: InputSpec,
        batch_size: int,
        shuffle_seed: int | None,
    ):
        super().__init__(workers=4, max_queue_size=16)
        self.images, self.target, self.spec = images, target, spec
        self.batch_size = batch_size
        self.rng = None if shuffle_seed is None else np.random.default_rng(shuffle_seed)
        self.order = np.arange(len(images))
        self.on_epoch_end()

    def __len__(self) -> int:
        return math.ceil(len(self.images) / self.batch_size)

    def __getitem__(self, index: int):
        rows = self.order[index * self.batch_size : (index + 1) * self.batch_size]
        x = self.images[rows].astype(np.float32) / 255.0
        if x.shape[1:3] != (self.spec.height, self.spec.width):
            x = keras.ops.convert_to_numpy(
                keras.ops.image.resize(x, (self.spec.height, self.spec.width), antialias=True)
            )
        return x, {k: v[rows] for k, v in self.target.items()}

    def on_epoch_end(self) -> None:
        if self.rng is not None:
            self.order = self.rng.permutation(len(self.images))


def pipeline(
    images: np.ndarray,
    target: dict[str, np.ndarray],
    spec: InputSpec,
    batch_size: int,
    *,
    shuffle_seed: int | None = None,
    augment: keras.Sequential | None = None,
) -> tf.data.Dataset | ArrayBatches:
    """uint8 images -> float32 in [0, 1] at the model's input size, batched: a tf.data
    pipeline on TensorFlow (what multi-worker training shards), :class:`ArrayBatches` else
    (where ``augment`` belongs in the model: :func:`with_augmentation`)."""
    if not on_tensorflow():
        if augment is not None:
            raise ValueError("off TensorFlow, augmentation runs in the model: with_augmentation")
        return ArrayBatches(images, target, spec, batch_size, shuffle_seed)
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((images, target))
    if shuffle_seed is not None:
        ds = ds.shuffle(min(len(images), 20_000), seed=shuffle_seed, reshuffle_each_iteration=True)
    size = (spec.height, spec.width)

    def to_input(x, y):
        x = tf.cast(x, tf.float32) / 255.0
        if tuple(images.shape[1:3]) != size:
            x = tf.image.resize(x, size, antialias=True)
        if augment is not None:
            x = augment(x, training=True)
        return x, y

    return ds.batch(batch_size).map(to_input, num_parallel_calls=tf.data.AUTOTUNE).prefetch(2)


def with_augmentation(model: keras.Model, augment: keras.Sequential) -> keras.Model:
    """``model`` behind ``augment`` (active in training only), sharing its layers: on
    backends without tf.data the distortions then run in the compiled training step."""
    image = keras.Input(shape=model.input.shape[1:], name="image")
    return keras.Model(image, model(augment(image)), name=f"{model.name}_augmented")


def compile_model(
    model: keras.Model,
    outputs: tuple[OutputSpec, ...],
    lr: float,
    optimizer: keras.optimizers.Optimizer | None = None,
) -> None:
    model.compile(
        optimizer=optimizer or keras.optimizers.Adam(lr),
        loss={o.name: o.loss for o in outputs},
        metrics={o.name: ["accuracy"] for o in outputs},
    )


def _optimizer_and_callbacks(
    cfg: TrainConfig, steps_per_epoch: int
) -> tuple[keras.optimizers.Optimizer, list]:
    """The schedule's optimizer and callbacks, plus checkpoints (--resume) and TensorBoard."""
    if cfg.average_weights:  # the averaging needs the walk to keep moving: no decay
        optimizer = keras.optimizers.SGD(cfg.learning_rate, momentum=0.9, nesterov=True)
        callbacks: list[keras.callbacks.Callback] = []
    elif cfg.schedule == "cosine":
        rate = keras.optimizers.schedules.CosineDecay(
            cfg.learning_rate, cfg.epochs * steps_per_epoch
        )
        optimizer = keras.optimizers.SGD(rate, momentum=0.9, nesterov=True)
        callbacks = []
    else:
        optimizer = keras.optimizers.Adam(cfg.learning_rate)
        callbacks = [
            keras.callbacks.EarlyStopping(
                monitor="val_loss", patience=cfg.patience, restore_best_weights=True, verbose=1
            ),
            keras.callbacks.ReduceLROnPlateau(
                monitor="val_loss", factor=0.5, patience=max(1, cfg.patience // 3), verbose=1
            ),
        ]
    if cfg.resume:  # model, optimizer and epoch saved after every epoch, restored at start
        callbacks.insert(0, keras.callbacks.BackupAndRestore(cfg.resume))
    if cfg.tensorboard:
        callbacks.append(keras.callbacks.TensorBoard(log_dir=cfg.tensorboard))
    return optimizer, callbacks


def fit(
    build,
    outputs: tuple[OutputSpec, ...],
    spec: InputSpec,
    data: Dataset,
    cfg: TrainConfig,
    cluster: Cluster | None = None,
) -> TrainResult:
    """Train ``build()`` on ``data`` and report metrics on the held-out validation split;
    on several workers (``TF_CONFIG``) with :func:`training.distribute.fit_multi_worker`."""
    if cluster is None:
        from training.distribute import single_process

        cluster = single_process()
    keras.utils.set_random_seed(cfg.seed)
    train_idx, val_idx = split(len(data.images), cfg.validation_split, cfg.seed)
    global_batch = cfg.batch_size * cluster.workers
    augment = _augmenter(spec, cfg.seed) if cfg.augment else None
    in_model = augment is not None and not on_tensorflow()
    train_ds = pipeline(
        data.images[train_idx],
        targets(outputs, data.labels[train_idx]),
        spec,
        global_batch,
        shuffle_seed=cfg.seed,
        augment=None if in_model else augment,
    )
    val_ds = pipeline(
        data.images[val_idx], targets(outputs, data.labels[val_idx]), spec, cfg.batch_size
    )
    steps = -(-len(train_idx) // global_batch)
    with cluster.scope():
        model = build()
        trainer = with_augmentation(model, augment) if in_model else model
        optimizer, callbacks = _optimizer_and_callbacks(cfg, steps)
        compile_model(trainer, outputs, cfg.learning_rate, optimizer)
    averaging = WeightAveraging(model) if cfg.average_weights else None
    if averaging is not None:
        callbacks.append(averaging)
    if cluster.workers > 1:
        from training.distribute import evaluate, fit_multi_worker

        start = time.perf_counter()
        losses = fit_multi_worker(
            model,
            outputs,
            train_ds,
            len(train_idx),
            global_batch,
            cfg.epochs,
            optimizer,
            cluster,
            cfg.resume,
        )
        return TrainResult(
            model=model,
            validation_metrics=evaluate(model, outputs, val_ds),
            epochs_run=cfg.epochs,
            duration_s=round(time.perf_counter() - start, 1),
            train_examples=len(train_idx),
            validation_examples=len(val_idx),
            history={"loss": losses},
        )
    start = time.perf_counter()
    # the pipelines shuffle (seeded); Keras's own shuffle does not apply to them and warns
    history = trainer.fit(
        train_ds,
        validation_data=val_ds,
        epochs=cfg.epochs,
        callbacks=callbacks,
        verbose=cfg.verbose,
        shuffle=False,
    )
    if averaging is not None:
        averaging.apply()
        recompute_batch_norm(
            model,
            ArrayBatches(data.images[train_idx], {}, spec, cfg.batch_size, shuffle_seed=cfg.seed),
        )
    if cfg.augment and cfg.finetune_epochs:
        history = _refit_pixel_heads(model, data, train_idx, outputs, spec, val_ds, cfg, history)
    duration = time.perf_counter() - start
    return TrainResult(
        model=model,
        validation_metrics=validation_metrics(trainer, val_ds),
        epochs_run=len(history.history["loss"]),
        duration_s=round(duration, 1),
        train_examples=len(train_idx),
        validation_examples=len(val_idx),
        history={k: [float(v) for v in vs] for k, vs in history.history.items()},
    )


def validation_metrics(model: keras.Model, val_ds) -> dict[str, float]:
    """Loss and accuracy per output on the validation batches (the model compiled)."""
    metrics = model.evaluate(val_ds, return_dict=True, verbose=0)
    return {k: round(float(v), 5) for k, v in metrics.items()}


def pixel_heads(model: keras.Model) -> list[keras.Layer]:
    """Output layers that read the raw input through parameter-free layers only
    (digit_odd's odd/even head): linear models of the pixels themselves."""
    graph = expand(model, list(model.output_names))

    def learned_upstream(name: str) -> bool:
        return any(
            graph.layers[parent].weights or learned_upstream(parent)
            for parent in graph.inbound[name]
        )

    heads = [graph.head_layer(head) for head in graph.heads]
    return [graph.layers[name] for name in heads if not learned_upstream(name)]


def _refit_pixel_heads(model, data, train_idx, outputs, spec, val_ds, cfg, history):
    """Re-fit the pixel heads on undistorted images, everything else frozen.

    Shifted digits regularise the conv features, but a linear model of raw pixels is best
    fitted to unshifted ones; the other layers keep what augmentation taught them.
    """
    heads = pixel_heads(model)
    if not heads:
        return history
    clean = pipeline(
        data.images[train_idx],
        targets(outputs, data.labels[train_idx]),
        spec,
        cfg.batch_size,
        shuffle_seed=cfg.seed + 1,
    )
    was_trainable = {layer.name: layer.trainable for layer in model.layers}
    for layer in model.layers:
        layer.trainable = layer in heads
    compile_model(model, outputs, cfg.learning_rate)
    stop = keras.callbacks.EarlyStopping(
        monitor="val_loss", patience=2, restore_best_weights=True, verbose=1
    )
    print(f"re-fitting {', '.join(h.name for h in heads)} on undistorted images", flush=True)
    tail = model.fit(
        clean,
        validation_data=val_ds,
        epochs=cfg.finetune_epochs,
        callbacks=[stop],
        verbose=cfg.verbose,
        shuffle=False,
    )
    for layer in model.layers:  # a transfer model's frozen base stays frozen
        layer.trainable = was_trainable[layer.name]
    for key, values in tail.history.items():
        history.history.setdefault(key, []).extend(values)
    return history
