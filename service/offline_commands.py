"""The commands, their arguments and their files:

    cnn-serve predict PATH... [--model NAME] [--version N|LABEL] [--top-k K] [--out FILE]
                              [--url URL] [--key KEY]
    cnn-serve evaluate DATA [--model NAME] [--version N|LABEL] [--head HEAD] [--out DIR]
                            [--url URL] [--key KEY]

``predict`` writes one row per image (CSV to stdout or a ``.csv``, or JSON Lines to a
``.jsonl``): ``path``, ``model``, ``version``, per head ``<head>`` (the label; multilabel: the
labels that apply joined by ``|``) and ``<head>_confidence`` (binary: the chosen label's
probability; multilabel: the largest), with ``--top-k`` above 1 also ``<head>_top``
(``label:p|...``); a regression or raw head's values as ``<head>.<name>``; and ``error``.
``evaluate`` writes ``DIR/metrics.json`` and ``DIR/report.html`` and prints a summary.
Without ``--url`` the models are this machine's (``CNN_SERVE_MODEL_DIR``, else the bundled
ones); with it, a running server's (its key from ``--key`` or ``CNN_SERVE_CLIENT_KEY``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from service import offline
from service.image_files import BadInput, ImageFile, gather, labelled
from training.metadata import ModelMetadata, OutputSpec

MAX_MISTAKES = 24


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", help="default: the service's default model")
    p.add_argument("--version", help="a version number or label (default: the newest)")
    p.add_argument("--url", help="a running cnn-serve, e.g. http://127.0.0.1:8000")
    p.add_argument("--key", help="its API key (default: $CNN_SERVE_CLIENT_KEY)")


def predict_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="cnn-serve predict", description="Classify image files, folders and zips."
    )
    p.add_argument("paths", nargs="+", type=Path, metavar="PATH")
    _common(p)
    p.add_argument("--top-k", type=int, default=1, help="class heads: also list the K best")
    p.add_argument("--out", type=Path, help=".csv or .jsonl (default: CSV on stdout)")
    return p


def evaluate_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="cnn-serve evaluate",
        description="Score a head on labelled images: a folder of label folders, or a CSV "
        "of path,label.",
    )
    p.add_argument("data", type=Path, metavar="DATA")
    _common(p)
    p.add_argument("--head", help="default: the first class head (or regression head)")
    p.add_argument("--out", type=Path, default=Path("evaluation"), help="default: evaluation/")
    return p


@contextlib.asynccontextmanager
async def engine(args: argparse.Namespace, params: dict) -> AsyncIterator[offline.Engine]:
    if args.url:
        from service.client import Client

        key = args.key or os.environ.get("CNN_SERVE_CLIENT_KEY")
        with Client(args.url, key) as client:
            yield offline.RemoteEngine(client, args.model, args.version, params)
    else:
        async with offline.local_server() as server:
            local = offline.LocalEngine(server, args.model, args.version, params)
            await local.warm_up()
            yield local


# ---------------------------------------------------------------------------- predict
def columns(meta: ModelMetadata, top_k: int) -> list[str]:
    names = ["path", "model", "version"]
    for head in meta.outputs:
        if head.classifies:
            names += [head.name, f"{head.name}_confidence"]
            ranked = head.kind in ("multiclass", "logits")  # the kinds with a top-k
            names += [f"{head.name}_top"] if top_k > 1 and ranked else []
        else:
            names += [f"{head.name}.{name}" for name in head.labels]
    return [*names, "error"]


def label_and_confidence(head: OutputSpec, out: dict) -> tuple[str, float]:
    """What a class head chose, and how sure it is of it."""
    if head.kind == "binary":
        p = out["probability"]
        return out["label"], p if out["label"] == head.labels[1] else 1 - p
    if head.kind == "multilabel":
        return "|".join(out["labels"]), max(out["probabilities"].values())
    return out["label"], out["confidence"]


def row(result: offline.Result, engine: offline.Engine, top_k: int) -> dict[str, Any]:
    r: dict[str, Any] = {"path": result.file.path, "model": engine.model, "version": engine.version}
    for head in engine.metadata.outputs:
        out = (result.outputs or {}).get(head.name)
        if out is None:
            continue
        if not head.classifies:
            r.update({f"{head.name}.{k}": v for k, v in out["values"].items()})
            continue
        r[head.name], r[f"{head.name}_confidence"] = label_and_confidence(head, out)
        if top_k > 1 and "top_k" in out:
            r[f"{head.name}_top"] = "|".join(
                f"{c['label']}:{c['confidence']:.4f}" for c in out["top_k"]
            )
    if result.error:
        r["error"] = result.error
    return r


async def run_predict(args: argparse.Namespace) -> int:
    files = list(gather(args.paths))
    params = {"top_k": max(args.top_k, 1)}
    async with engine(args, params) as e:
        fields = columns(e.metadata, args.top_k)
        out = args.out.open("w", newline="") if args.out else sys.stdout
        try:
            jsonl = args.out is not None and args.out.suffix.lower() == ".jsonl"
            writer = None if jsonl else csv.DictWriter(out, fields)
            if writer:
                writer.writeheader()
            errors = 0
            with offline.Progress(len(files), "predict") as progress:
                async for result in offline.classify(e, files, progress):
                    errors += result.error is not None
                    r = row(result, e, args.top_k)
                    if writer:
                        writer.writerow(r)
                    else:
                        out.write(json.dumps(r) + "\n")
        finally:
            if args.out:
                out.close()
    offline.say(
        f"{len(files):,} files, {errors:,} not classified, {progress.rate:,.0f} images/s"
        + (f" -> {args.out}" if args.out else "")
    )
    return 0


# ---------------------------------------------------------------------------- evaluate
def scored_head(meta: ModelMetadata, name: str | None) -> OutputSpec:
    heads = {o.name: o for o in meta.outputs}
    if name is not None:
        if name not in heads:
            raise BadInput(f"--head {name}: the model's heads are {', '.join(heads)}")
        head = heads[name]
    else:
        fits = [o for o in meta.outputs if o.kind in ("multiclass", "binary", "logits")]
        fits = fits or [o for o in meta.outputs if o.kind == "regression"]
        if not fits:
            raise BadInput(f"model {meta.name!r} has no head evaluate can score")
        head = fits[0]
    if head.kind == "multilabel" or (not head.classifies and head.kind != "regression"):
        raise BadInput(
            f"head {head.name!r} is {head.kind}: evaluate scores class heads and regression"
        )
    if head.kind == "regression" and head.units != 1:
        raise BadInput(f"head {head.name!r} gives {head.units} values: evaluate scores one")
    return head


def _truth(head: OutputSpec, file: ImageFile) -> tuple[Any, str | None]:
    """The file's label as the head's class index or value, or why it cannot be scored."""
    if head.kind == "regression":
        try:
            return float(file.label or ""), None
        except ValueError:
            return None, f"label {file.label!r} is not a number"
    if file.label not in head.labels:
        return None, f"label {file.label!r} is not one of the head's labels"
    return head.labels.index(file.label), None


async def run_evaluate(args: argparse.Namespace) -> int:
    files = labelled(args.data)
    async with engine(args, {"top_k": 1}) as e:
        head = scored_head(e.metadata, args.head)
        scored, skipped = [], []
        for file in files:
            truth, why = _truth(head, file)
            if why:
                skipped.append({"path": file.path, "reason": why})
            else:
                scored.append((file, truth))
        truths = {file.path: truth for file, truth in scored}
        answered: list[tuple[offline.Result, Any, Any, float]] = []
        with offline.Progress(len(scored), "evaluate") as progress:
            async for result in offline.classify(e, [f for f, _ in scored], progress):
                if result.error or not result.outputs:
                    skipped.append(
                        {"path": result.file.path, "reason": result.error or "no answer"}
                    )
                    continue
                out = result.outputs[head.name]
                truth = truths[result.file.path]
                if head.kind == "regression":
                    (value,) = out["values"].values()
                    answered.append((result, truth, value, abs(value - truth)))
                else:
                    label, confidence = label_and_confidence(head, out)
                    answered.append((result, truth, head.labels.index(label), confidence))
        metrics = _metrics(head, answered)
        metrics["skipped"] = skipped
        mistakes = await _mistakes(e, head, answered)
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        from service import report

        summary = {"model": e.model, "version": e.version, "head": head.name}
        (args.out / "report.html").write_text(report.render(summary, metrics, mistakes))
    print(_summary(e, head, metrics, args.out, progress.rate))
    return 0


def _metrics(head: OutputSpec, answered: list) -> dict:
    from service import evaluation

    if head.kind == "regression":
        return evaluation.regression([a[1] for a in answered], [a[2] for a in answered])
    return evaluation.classification(
        head.labels, [a[1] for a in answered], [a[2] for a in answered]
    )


async def _mistakes(e: offline.Engine, head: OutputSpec, answered: list) -> list[dict]:
    """The most confident wrong answers (regression: the largest errors), up to
    ``MAX_MISTAKES``, with their pictures and Grad-CAM overlays."""
    from service.report import thumbnail

    if head.kind == "regression":
        worst = sorted(answered, key=lambda a: -a[3])[:MAX_MISTAKES]
    else:
        worst = sorted((a for a in answered if a[1] != a[2]), key=lambda a: -a[3])[:MAX_MISTAKES]
    mistakes = []
    for result, truth, predicted, score in worst:
        data = await asyncio.to_thread(result.file.read)
        overlay = await e.explain(result.file.path, data, head.name)
        if head.kind == "regression":
            shown = (f"{truth:.4g}", f"{predicted:.4g}", f"error {score:.3g}")
        else:
            shown = (head.labels[truth], head.labels[predicted], f"{score:.1%}")
        mistakes.append(
            {
                "path": result.file.path,
                "true": shown[0],
                "predicted": shown[1],
                "confidence": shown[2],
                "picture": await asyncio.to_thread(thumbnail, data),
                "overlay": f"data:image/png;base64,{overlay}" if overlay else None,
            }
        )
    return mistakes


def _summary(e: offline.Engine, head: OutputSpec, metrics: dict, out: Path, rate: float) -> str:
    if "accuracy" in metrics:
        figure = f"accuracy {metrics['accuracy']:.2%}"
    else:
        figure = f"MAE {metrics['mae']:.4g}, RMSE {metrics['rmse']:.4g}"
    return (
        f"{e.model} v{e.version}, head {head.name}: {metrics['n']:,} images, {figure}, "
        f"{len(metrics['skipped']):,} skipped ({rate:,.0f} images/s)\n"
        f"  {out / 'metrics.json'}\n  {out / 'report.html'}"
    )


def main(command: str, argv: list[str]) -> int:
    parser = predict_parser() if command == "predict" else evaluate_parser()
    args = parser.parse_args(argv)
    run = run_predict if command == "predict" else run_evaluate
    import httpx

    from service import client, errors

    try:
        return asyncio.run(run(args))
    except (BadInput, errors.ServiceError, client.ServiceError, httpx.HTTPError) as exc:
        print(f"cnn-serve {command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
