"""cnn-train: train a reference CNN and export it, or print its layer table.

    cnn-train summary NAME [--json]
    cnn-train NAME --data PATH [--epochs N --batch-size N --val-split F --seed N
                                --augment/--no-augment --tensorboard DIR --out runs/]
    cnn-train NAME --data PATH ... [--average-weights] [--bundle DIR (any Keras backend)]
    cnn-train export DIR [--data PATH] [--out runs/]   (needs TensorFlow)

Versions go to a scratch repository, ``runs/``, unless ``--out`` names another: a running
``cnn-serve`` serves ``models/`` and picks up new versions there, so a one-epoch trial written
into it would silently become what clients get. Promote a version by copying it (or by
training with ``--out models/``).
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import sys
import tempfile
from pathlib import Path

import keras
import numpy as np

from training import datasets, distribute
from training.architectures import ARCHITECTURES, TRANSFERS, build_transfer, get_architecture
from training.export import KERAS_FILE, export, layer_table, next_version, write_bundle
from training.metadata import DatasetInfo, InputSpec, ModelMetadata, TrainingConfig
from training.train import (
    TrainConfig,
    compile_model,
    fit,
    hardware,
    on_tensorflow,
    pipeline,
    targets,
    validation_metrics,
)

BUNDLED_MODELS = Path(__file__).resolve().parent.parent / "models"
SCRATCH = Path("runs")  # where versions go unless --out says otherwise
OUT_HELP = "model repository to write the version into (default: runs/; models/ is served)"
NAMES = sorted([*ARCHITECTURES, *TRANSFERS])


def summary(name: str, as_json: bool) -> int:
    model = get_architecture(name).build()
    table = layer_table(model)
    total = model.count_params()
    if as_json:
        print(
            json.dumps(
                {
                    "name": name,
                    "layers": [row.model_dump() for row in table],
                    "total_params": total,
                },
                indent=2,
            )
        )
        return 0
    print(f"{'layer':<24}{'type':<24}{'output shape':<18}{'params':>10}  inbound")
    for row in table:
        shape = "x".join(str(d) for d in row.output_shape)
        print(f"{row.name:<24}{row.type:<24}{shape:<18}{row.params:>10,}  {', '.join(row.inbound)}")
    print(f"total params: {total:,}")
    return 0


def _latest_keras(models: Path, base: str) -> Path:
    root = models / base
    version = next_version(root) - 1
    path = root / str(version) / KERAS_FILE
    if version < 1 or not path.is_file():
        raise SystemExit(
            f"cnn-train: no trained {base!r} under {root} to transfer from; "
            f"train it first: cnn-train {base} --data ..."
        )
    return path


def _warm_start(build, version_dir: Path):
    """``build`` with the weights of an exported version of the same architecture (a further
    learning-rate cycle, or fine-tuning), and that version as "name/version" for metadata."""
    path = Path(version_dir) / KERAS_FILE
    if not path.is_file():
        raise SystemExit(f"cnn-train: --init-from {version_dir}: no {KERAS_FILE} there")
    start = ModelMetadata.read(Path(version_dir))
    trained = keras.models.load_model(path, compile=False)

    def warm():
        model = build()
        try:
            model.set_weights(trained.get_weights())
        except ValueError as exc:
            raise SystemExit(
                f"cnn-train: --init-from {version_dir}: not this architecture ({exc})"
            ) from exc
        return model

    return warm, f"{start.name}/{start.version}"


def _optimizer_name(cfg: TrainConfig) -> str:
    if cfg.average_weights:
        return "sgd+swa"
    return "sgd+cosine" if cfg.schedule == "cosine" else "adam"


def _tensorflow_version() -> str:
    return importlib.import_module("tensorflow").__version__ if on_tensorflow() else "none"


def train(args: argparse.Namespace) -> int:
    try:
        cluster = distribute.from_environment()  # before any TensorFlow op (collectives)
    except ValueError as exc:
        raise SystemExit(f"cnn-train: {exc}") from exc
    if args.bundle is None and not on_tensorflow():
        raise SystemExit(
            f"cnn-train: Keras on {keras.backend.backend()} writes no SavedModel: "
            f"train with --bundle DIR, then run `cnn-train export DIR` where "
            f"TensorFlow is installed"
        )
    transfer = TRANSFERS.get(args.name)
    if transfer:
        base_path = _latest_keras(args.base_dir, transfer.base)
        base_model = keras.models.load_model(base_path)
        arch = get_architecture(transfer.base)
        outputs = transfer.outputs
        build = functools.partial(
            build_transfer, base_model, transfer.up_to, outputs, transfer.name
        )
        description = (
            f"transfer learning: {transfer.base} up to {transfer.up_to} (frozen, "
            f"from {base_path.parent}) + new trainable head"
        )
    else:
        arch = get_architecture(args.name)
        outputs, description = arch.outputs, arch.description
        build = functools.partial(arch.build)
    initialized_from = None
    if args.init_from:
        build, initialized_from = _warm_start(build, args.init_from)
    if args.average_weights and args.resume:
        raise SystemExit(
            "cnn-train: --average-weights keeps its running mean in memory; it "
            "does not combine with --resume"
        )
    if args.tensorboard and importlib.util.find_spec("tensorboard") is None:
        raise SystemExit(
            "cnn-train: --tensorboard needs the tensorboard package (pip install tensorboard)"
        )
    augment = arch.augment_by_default if args.augment is None else args.augment
    try:
        data = datasets.load(arch.dataset, args.data)
    except datasets.DatasetError as exc:
        raise SystemExit(f"cnn-train: {exc}") from exc
    cfg = TrainConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        validation_split=args.val_split,
        seed=args.seed,
        augment=augment,
        learning_rate=args.lr or (0.1 if arch.schedule == "cosine" else 1e-3),
        patience=args.patience,
        tensorboard=args.tensorboard,
        finetune_epochs=args.finetune_epochs,
        schedule=arch.schedule,
        resume=args.resume,
        average_weights=args.average_weights,
    )
    print(
        f"training {args.name} on {data.name} ({len(data.images)} examples, {data.format}) "
        f"on {hardware()}",
        flush=True,
    )
    result = fit(build, outputs, arch.input, data, cfg, cluster)

    def metadata(version: int, layers, created_at: str) -> ModelMetadata:
        return ModelMetadata(
            name=args.name,
            version=version,
            architecture=transfer.base if transfer else arch.name,
            description=description,
            input=InputSpec(**arch.input.model_dump()),
            outputs=list(outputs),
            layers=layers,
            total_params=result.model.count_params(),
            trainable_params=sum(int(np.prod(w.shape)) for w in result.model.trainable_weights),
            validation_metrics=result.validation_metrics,
            dataset=DatasetInfo(
                name=data.name,
                format=data.format,
                path=data.path,
                provenance=data.provenance,
                train_examples=result.train_examples,
                validation_examples=result.validation_examples,
            ),
            training=TrainingConfig(
                epochs=cfg.epochs,
                epochs_run=result.epochs_run,
                batch_size=cfg.batch_size,
                workers=cluster.workers,
                validation_split=cfg.validation_split,
                seed=cfg.seed,
                augment=cfg.augment,
                finetune_epochs=cfg.finetune_epochs if cfg.augment else 0,
                optimizer=_optimizer_name(cfg),
                learning_rate=cfg.learning_rate,
                duration_s=result.duration_s,
                hardware=hardware(),
                backend=keras.backend.backend(),
                base_model=transfer.base if transfer else None,
                frozen_up_to=transfer.up_to if transfer else None,
                initialized_from=initialized_from,
            ),
            tensorflow_version=_tensorflow_version(),
            keras_version=keras.__version__,
            created_at=created_at,
        )

    print("validation: " + ", ".join(f"{k}={v:.4f}" for k, v in result.validation_metrics.items()))
    if args.bundle:
        path = write_bundle(result.model, args.bundle, metadata)
        print(
            f"wrote {path}; make it a version where TensorFlow is: "
            f"cnn-train export {path} --data <this dataset>"
        )
        return 0
    if not cluster.chief:  # every worker saves (collectives); only the chief's export stays
        with tempfile.TemporaryDirectory() as scratch:
            export(result.model, Path(scratch), metadata)
        print("exported nothing: the chief exports")
        return 0
    path = export(result.model, Path(args.out), metadata)
    print(f"exported {path} ({result.epochs_run} epochs, {result.duration_s:.0f} s)")
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="cnn-train", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("name", choices=NAMES, help="architecture (or transfer model) to train")
    p.add_argument(
        "--data",
        type=Path,
        default=None,
        help="dataset path (IDX dir / mnist.npz / CIFAR batches / image folder or "
        "zip); omitted: keras.datasets (needs network)",
    )
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--val-split", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument(
        "--lr",
        type=float,
        default=None,
        help="initial learning rate (default: 1e-3 for Adam; 0.1 for the cosine schedule's SGD)",
    )
    p.add_argument("--patience", type=int, default=6, help="early-stopping patience (epochs)")
    p.add_argument(
        "--augment",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="flip/shift augmentation (default: on for colour datasets)",
    )
    p.add_argument(
        "--finetune-epochs",
        type=int,
        default=5,
        help="after augmented training, epochs re-fitting heads that read raw "
        "pixels (digit_odd's odd head) on undistorted images",
    )
    p.add_argument("--tensorboard", metavar="DIR", default=None)
    p.add_argument(
        "--resume",
        metavar="DIR",
        default=None,
        help="checkpoint every epoch into DIR; started again with the same DIR, an "
        "interrupted run continues where it stopped",
    )
    p.add_argument(
        "--init-from",
        metavar="VERSION_DIR",
        type=Path,
        default=None,
        help="start from the weights of an exported version of the same "
        "architecture (e.g. models/cifar10_resnet/1): a further LR cycle",
    )
    p.add_argument(
        "--average-weights",
        action="store_true",
        help="stochastic weight averaging: SGD at a constant --lr; the export is "
        "the mean of the weights at every epoch's end, batch-norm statistics "
        "recomputed (after a schedule: with --init-from)",
    )
    p.add_argument("--out", type=Path, default=SCRATCH, help=OUT_HELP)
    p.add_argument(
        "--bundle",
        metavar="DIR",
        type=Path,
        default=None,
        help="write model.keras + metadata.json to DIR instead of a version (on any "
        "Keras backend); `cnn-train export DIR` exports it later",
    )
    p.add_argument(
        "--base-dir",
        type=Path,
        default=BUNDLED_MODELS,
        help="model repository holding the base model of a transfer model "
        "(default: the bundled models)",
    )
    return p


def export_bundle(bundle: Path, data_path: Path | None, out: Path) -> int:
    """Make a ``--bundle`` the next version under ``out``: with ``data_path`` (the dataset it
    was trained on) its validation split is evaluated again here, and those metrics recorded."""
    if not on_tensorflow():
        raise SystemExit("cnn-train export: writing a SavedModel needs the TensorFlow backend")
    try:
        meta = ModelMetadata.read(bundle)
        model = keras.models.load_model(bundle / KERAS_FILE, compile=False)
    except (OSError, ValueError) as exc:
        raise SystemExit(f"cnn-train export: {bundle}: not a training bundle ({exc})") from exc
    update: dict = {}
    if data_path is not None:
        if meta.dataset is None or meta.training is None:
            raise SystemExit(
                f"cnn-train export: {bundle}: its metadata does not say what it was trained on"
            )
        try:
            data = datasets.load(meta.dataset.name, data_path)
        except datasets.DatasetError as exc:
            raise SystemExit(f"cnn-train export: {exc}") from exc
        trained_on = meta.dataset.train_examples + meta.dataset.validation_examples
        if len(data.images) != trained_on:
            raise SystemExit(
                f"cnn-train export: {data_path} has {len(data.images)} examples; "
                f"{bundle} was trained on {trained_on}"
            )
        _, val_idx = datasets.split(trained_on, meta.training.validation_split, meta.training.seed)
        outputs = tuple(meta.outputs)
        compile_model(model, outputs, meta.training.learning_rate)
        metrics = validation_metrics(
            model,
            pipeline(
                data.images[val_idx],
                targets(outputs, data.labels[val_idx]),
                meta.input,
                meta.training.batch_size,
            ),
        )
        print(f"validation here: {metrics} (in training: {meta.validation_metrics})")
        update = {
            "validation_metrics": metrics,
            "dataset": meta.dataset.model_copy(
                update={"path": str(data_path), "format": data.format}
            ),
        }

    def metadata(version: int, layers, created_at: str) -> ModelMetadata:
        return meta.model_copy(
            update={
                "version": version,
                "layers": layers,
                "created_at": created_at,
                "tensorflow_version": _tensorflow_version(),
                "keras_version": keras.__version__,
                **update,
            }
        )

    print(f"exported {export(model, out, metadata)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["export"]:
        ep = argparse.ArgumentParser(prog="cnn-train export")
        ep.add_argument("bundle", type=Path, help="a directory written by --bundle")
        ep.add_argument(
            "--data",
            type=Path,
            default=None,
            help="the dataset it was trained on: evaluate its validation split here",
        )
        ep.add_argument("--out", type=Path, default=SCRATCH, help=OUT_HELP)
        a = ep.parse_args(argv[1:])
        return export_bundle(a.bundle, a.data, a.out)
    if argv[:1] == ["summary"]:
        sp = argparse.ArgumentParser(prog="cnn-train summary")
        sp.add_argument("name", choices=sorted(ARCHITECTURES))
        sp.add_argument("--json", action="store_true")
        a = sp.parse_args(argv[1:])
        return summary(a.name, a.json)
    return train(parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
