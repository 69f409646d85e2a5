"""``report.html`` of ``cnn-serve evaluate``: one self-contained page (inline CSS, the
confusion matrix as inline SVG, pictures as data URIs; no script, no request off the file)
with the headline figures, the confusion matrix, the per-class table and the worst mistakes
with their Grad-CAM overlays."""

from __future__ import annotations

import base64
import io
from html import escape

from PIL import Image

THUMBNAIL = 96  # px, the longest side of a mistake's picture
CELL = 34  # px, a confusion matrix cell

STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; color: #1d2330; margin: 1.5rem auto;
       max-width: 1100px; padding: 0 1rem; }
h1 { font-size: 1.4rem; } h2 { font-size: 1.1rem; margin-top: 2rem; }
.figures { display: flex; gap: 2rem; flex-wrap: wrap; }
.figure b { display: block; font-size: 1.8rem; }
table { border-collapse: collapse; font-variant-numeric: tabular-nums; }
td, th { padding: .25rem .7rem; border-bottom: 1px solid #e3e7ee; text-align: right; }
th:first-child, td:first-child { text-align: left; }
.mistakes { display: grid; grid-template-columns: repeat(auto-fill, minmax(230px, 1fr));
            gap: 1rem; }
.mistake { border: 1px solid #d8dde5; border-radius: 8px; padding: .5rem; font-size: .85rem; }
.mistake img { width: 96px; height: 96px; object-fit: contain; image-rendering: pixelated;
               background: #000; }
.muted { color: #5b6472; }
"""


def thumbnail(data: bytes) -> str | None:
    """An image file as a small PNG data URI (None when Pillow cannot read it)."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.draft("RGB", (THUMBNAIL, THUMBNAIL))
            picture = image.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError):
        return None
    picture.thumbnail((THUMBNAIL, THUMBNAIL))
    buf = io.BytesIO()
    picture.save(buf, "PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def confusion_svg(labels: list[str], confusion: list[list[int]]) -> str:
    """The confusion matrix as a picture: each cell shaded by its share of its row (the true
    label), with its count."""
    k, left, top = len(labels), 110, 110
    size = CELL * k
    parts = [
        (
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{left + size + 10}" '
            f'height="{top + size + 10}" role="img" aria-label="confusion matrix" '
            'font-family="system-ui, sans-serif" font-size="11">'
        )
    ]
    for i, row in enumerate(confusion):
        total = sum(row) or 1
        for j, count in enumerate(row):
            share = count / total
            colour = (37, 99, 235) if i == j else (220, 38, 38)
            fill = "rgb({},{},{})".format(*(round(255 - (255 - c) * share) for c in colour))
            x, y = left + j * CELL, top + i * CELL
            parts.append(
                f'<rect x="{x}" y="{y}" width="{CELL}" height="{CELL}" fill="{fill}" '
                'stroke="#e3e7ee"/>'
            )
            if count:
                ink = "#fff" if share > 0.5 else "#1d2330"
                parts.append(
                    f'<text x="{x + CELL / 2}" y="{y + CELL / 2 + 4}" text-anchor="middle" '
                    f'fill="{ink}">{count}</text>'
                )
    for i, label in enumerate(labels):
        short = escape(label[:14])
        parts.append(
            f'<text x="{left - 6}" y="{top + i * CELL + CELL / 2 + 4}" '
            f'text-anchor="end">{short}</text>'
        )
        column = left + i * CELL + CELL / 2
        parts.append(
            f'<text x="{column}" y="{top - 6}" '
            f'transform="rotate(-60 {column} {top - 6})">{short}</text>'
        )
    parts.append(
        f'<text x="{left + size / 2}" y="14" text-anchor="middle" font-weight="600">'
        "predicted</text>"
        f'<text x="12" y="{top + size / 2}" transform="rotate(-90 12 {top + size / 2})" '
        'text-anchor="middle" font-weight="600">true</text></svg>'
    )
    return "".join(parts)


def _figure(name: str, value: str) -> str:
    return f'<div class="figure"><b>{escape(value)}</b>{escape(name)}</div>'


def render(summary: dict, metrics: dict, mistakes: list[dict]) -> str:
    """The page. ``summary``: model, version, head, kind; ``metrics``: as metrics.json;
    ``mistakes``: dicts of path, true, predicted, confidence, picture and overlay (data URIs
    or None)."""
    title = f"{summary['model']} v{summary['version']}, head {summary['head']}"
    figures = [_figure("images", f"{metrics['n']:,}")]
    if "accuracy" in metrics:
        figures.append(_figure("accuracy", f"{metrics['accuracy']:.2%}"))
    else:
        figures += [
            _figure("MAE", f"{metrics['mae']:.4g}"),
            _figure("RMSE", f"{metrics['rmse']:.4g}"),
        ]
    figures.append(_figure("skipped", f"{len(metrics['skipped']):,}"))
    body = [
        f"<h1>Evaluation of {escape(title)}</h1>",
        f'<div class="figures">{"".join(figures)}</div>',
    ]
    if "confusion" in metrics:
        body += [
            "<h2>Confusion matrix</h2>",
            confusion_svg(metrics["labels"], metrics["confusion"]),
        ]
        rows = "".join(
            f"<tr><td>{escape(label)}</td><td>{c['precision']:.3f}</td><td>{c['recall']:.3f}</td>"
            f"<td>{c['f1']:.3f}</td><td>{c['support']:,}</td></tr>"
            for label, c in metrics["per_class"].items()
        )
        body += [
            (
                "<h2>Per class</h2><table><tr><th>label</th><th>precision</th><th>recall</th>"
                f"<th>F1</th><th>support</th></tr>{rows}</table>"
            )
        ]
    heading = "most confident mistakes" if "accuracy" in metrics else "largest errors"
    body.append(f"<h2>The {len(mistakes)} {heading}</h2>")
    if not mistakes:
        body.append('<p class="muted">None.</p>')
    cards = []
    for m in mistakes:
        pictures = "".join(
            f'<img src="{src}" alt="{escape(alt)}">'
            for src, alt in ((m["picture"], "the image"), (m["overlay"], "Grad-CAM"))
            if src
        )
        cam = "" if m["overlay"] else '<div class="muted">no Grad-CAM for this version</div>'
        cards.append(
            f'<div class="mistake" data-testid="mistake">{pictures}{cam}'
            f"<div>predicted <b>{escape(str(m['predicted']))}</b> "
            f"({escape(m['confidence'])}), true <b>{escape(str(m['true']))}</b></div>"
            f'<div class="muted">{escape(m["path"][-80:])}</div></div>'
        )
    body.append(f'<div class="mistakes">{"".join(cards)}</div>')
    if metrics["skipped"]:
        items = "".join(
            f"<li>{escape(s['path'][-100:])}: {escape(s['reason'])}</li>"
            for s in metrics["skipped"][:200]
        )
        body.append(f"<h2>Skipped</h2><ul>{items}</ul>")
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{escape(title)}</title><style>{STYLE}</style></head><body>"
        + "".join(body)
        + "</body></html>\n"
    )
