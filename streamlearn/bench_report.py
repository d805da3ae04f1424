"""A benchmark run as pictures: one self-contained HTML page with PNG figures.

``write_report(results, directory)`` takes one or more ``BenchResult.to_json()`` dicts (one per
learner, side by side) and writes ``index.html`` with

- the accuracy matrix of each learner as a heatmap (row: after learning task i; column: task j's
  held-out set);
- per-task accuracy curves: each task's held-out accuracy after every task learned from it on, and
  the mean over the tasks seen so far;
- RA / LA / BTI and examples/s, as bars and in a table.

The images are embedded as ``data:`` URIs, so ``index.html`` alone is the whole report (it loads
nothing from anywhere); the same PNGs are written beside it for use elsewhere.

matplotlib draws through ``matplotlib.figure.Figure`` with the Agg canvas, never pyplot: no display,
no global figure state, and it is imported only when a report is written.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

#: the figures, in page order: (file name, title, what it shows)
FIGURES = (
    (
        "accuracy-matrix.png",
        "Accuracy matrix",
        "Row i, column j: accuracy on task j's held-out set "
        "after learning tasks 1..i. Below the diagonal is what was retained; the diagonal is what was "
        "just learned; above it the tasks are not yet seen.",
    ),
    (
        "task-curves.png",
        "Per-task accuracy over the stream",
        "Each line is one task's held-out "
        "accuracy after each task learned, from the moment it was learned; the black dashed line is the "
        "mean over the tasks seen so far (its last point is RA).",
    ),
    (
        "scores.png",
        "Scores and speed",
        "RA (retained accuracy: mean final accuracy over all tasks), "
        "LA (learning accuracy: mean accuracy on each task just after learning it), BTI (LA - RA: what "
        "was forgotten), and examples/s of the prequential loop (predict + learn).",
    ),
)


def square(matrix: Sequence[Sequence[float]]) -> np.ndarray:
    """The lower-triangular matrix of a result as a square array, NaN where a task was not yet seen.

    >>> square([[0.9], [0.8, 0.95]]).tolist()
    [[0.9, nan], [0.8, 0.95]]
    """
    n = len(matrix)
    out = np.full((n, n), np.nan)
    for i, row in enumerate(matrix):
        out[i, : len(row)] = row
    return out


def accuracy_floor(results: Sequence[dict[str, Any]]) -> float:
    """The shared lower end of the accuracy axes: the lowest accuracy, down to a tenth.

    Accuracies on MNIST-like streams sit between 0.7 and 0.95; from 0 the differences between
    learners would be a few pixels, so the axes start just below the lowest value drawn.

    >>> accuracy_floor([{"accuracy_matrix": [[0.82], [0.79, 0.85]]}])
    0.7
    """
    low = min(v for r in results for row in r["accuracy_matrix"] for v in row)
    return max(0.0, math.floor(10 * low - 1e-9) / 10)


def _grid(n: int, figure: Any, cols: int = 3) -> list[Any]:
    cols = min(n, cols)
    rows = math.ceil(n / cols)
    figure.set_size_inches(4.6 * cols, 4.0 * rows)
    axes = [figure.add_subplot(rows, cols, k + 1) for k in range(n)]
    return axes


def _png(figure: Any) -> bytes:
    buf = io.BytesIO()
    figure.savefig(buf, format="png", dpi=100)
    return buf.getvalue()


def heatmaps(results: Sequence[dict[str, Any]]) -> bytes:
    from matplotlib.figure import Figure

    fig = Figure(layout="constrained")
    image = None
    low = accuracy_floor(results)
    for ax, r in zip(_grid(len(results), fig), results, strict=True):
        m = square(r["accuracy_matrix"])
        n = len(m)
        image = ax.imshow(np.ma.masked_invalid(m), vmin=low, vmax=1.0, cmap="viridis", origin="upper")
        ax.set_facecolor("#eeeeee")
        ax.set_title(f"{r['learner']}  (RA {r['ra']:.3f})")
        ax.set_xlabel("evaluated on task")
        ax.set_ylabel("after learning task")
        ticks = list(range(0, n, max(1, math.ceil(n / 10))))
        ax.set_xticks(ticks, [str(t + 1) for t in ticks])
        ax.set_yticks(ticks, [str(t + 1) for t in ticks])
        if n <= 8:  # few cells: the numbers fit and read better than the colour
            for i in range(n):
                for j in range(i + 1):
                    ax.text(
                        j,
                        i,
                        f"{m[i, j]:.2f}",
                        ha="center",
                        va="center",
                        fontsize=9,
                        color="white" if m[i, j] < low + 0.6 * (1 - low) else "black",
                    )
    if image is not None:
        fig.colorbar(image, ax=fig.axes, shrink=0.8, label="accuracy")
    return _png(fig)


def task_curves(results: Sequence[dict[str, Any]]) -> bytes:
    from matplotlib import colormaps
    from matplotlib.figure import Figure

    fig = Figure(layout="constrained")
    low = accuracy_floor(results)
    for ax, r in zip(_grid(len(results), fig), results, strict=True):
        m = square(r["accuracy_matrix"])
        n = len(m)
        after = np.arange(1, n + 1)
        colours = colormaps["viridis"](np.linspace(0.0, 0.9, n))
        for j in range(n):
            ax.plot(
                after[j:],
                m[j:, j],
                color=colours[j],
                lw=1.2,
                marker="o",
                markevery=None if n <= 8 else [0],  # many tasks: a dot where each one starts
                ms=3,
                label=f"task {j + 1}" if n <= 8 else None,
            )
        if n > 8:
            ax.text(
                0.98,
                0.97,
                "colour: task, dark = early",
                transform=ax.transAxes,
                ha="right",
                va="top",
                fontsize=8,
                color="#555",
            )
        seen_mean = [float(np.mean(m[i, : i + 1])) for i in range(n)]
        ax.plot(after, seen_mean, color="black", lw=2.2, ls="--", label="mean of seen tasks")
        ax.set_ylim(low, 1.0 + 0.02 * (1 - low))
        ax.set_xlim(0.8, n + 0.2)
        ax.set_xticks(list(range(1, n + 1, max(1, math.ceil(n / 10)))))
        ax.set_title(r["learner"])
        ax.set_xlabel("after learning task")
        ax.set_ylabel("held-out accuracy")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower left", fontsize=8)
    return _png(fig)


def scores(results: Sequence[dict[str, Any]]) -> bytes:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11.0, 4.0), layout="constrained")
    ax, speed = fig.subplots(1, 2, width_ratios=[3, 2])
    names = [r["learner"] for r in results]
    x = np.arange(len(results))
    for k, (key, label) in enumerate((("ra", "RA"), ("la", "LA"), ("bti", "BTI"))):
        values = [r[key] for r in results]
        bars = ax.bar(x + (k - 1) * 0.27, values, width=0.27, label=label)
        ax.bar_label(bars, fmt="%.3f", fontsize=7, padding=1)
    ax.set_xticks(x, names)
    ax.set_xlim(-0.7, len(results) - 0.3)  # one learner: bars of the same width as with five
    ax.set_ylim(min(0.0, *(r["bti"] for r in results)) - 0.02, 1.08)
    ax.axhline(0.0, color="black", lw=0.8)
    ax.set_ylabel("accuracy")
    ax.set_title("RA / LA / BTI")
    ax.legend(ncols=3, fontsize=8, loc="upper right")
    rates = [r["examples_per_s"] for r in results]
    bars = speed.bar(x, rates, width=0.5, color="#4c72b0")
    speed.bar_label(bars, fmt="%.0f", fontsize=8, padding=1)
    speed.set_xticks(x, names)
    speed.set_xlim(-0.7, len(results) - 0.3)
    speed.set_yscale("log")  # MER and SGD differ by ~100x: a linear axis would hide one of them
    speed.set_ylim(min(rates) / 4, max(rates) * 3)
    speed.set_ylabel("examples/s (log scale)")
    speed.set_title("speed: predict + learn")
    return _png(fig)


TABLE_COLUMNS = (
    ("learner", "learner", "{}"),
    ("ra", "RA", "{:.4f}"),
    ("la", "LA", "{:.4f}"),
    ("bti", "BTI", "{:+.4f}"),
    ("prequential_accuracy", "prequential acc.", "{:.4f}"),
    ("examples_per_s", "examples/s", "{:.1f}"),
    ("learn_examples_per_s", "learn only ex/s", "{:.1f}"),
    ("wall_s", "wall s", "{:.1f}"),
    ("batch_size", "batch", "{}"),
    ("device", "device", "{}"),
)


def table_html(results: Sequence[dict[str, Any]]) -> str:
    head = "".join(f"<th>{html.escape(label)}</th>" for _, label, _ in TABLE_COLUMNS)
    rows = []
    for r in results:
        cells = "".join(
            f"<td>{html.escape(fmt.format(r[key]) if key in r else '')}</td>" for key, _, fmt in TABLE_COLUMNS
        )
        rows.append(f"<tr>{cells}</tr>")
    return f'<table id="scores"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def _hparams_html(results: Sequence[dict[str, Any]]) -> str:
    items = []
    for r in results:
        hp = ", ".join(f"{k}={v}" for k, v in sorted(r.get("hparams", {}).items()))
        items.append(f"<li><b>{html.escape(str(r['learner']))}</b>: {html.escape(hp)}</li>")
    return f'<ul class="hparams">{"".join(items)}</ul>'


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>{title}</title>
<style>
body {{ font: 15px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1400px; padding: 0 1em;
       color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
th, td {{ border: 1px solid #ccc; padding: 0.3em 0.7em; text-align: right; }}
th:first-child, td:first-child {{ text-align: left; }}
thead {{ background: #f2f2f2; }}
figure {{ margin: 2em 0; }} figure img {{ max-width: 100%; height: auto; }}
figcaption {{ color: #555; max-width: 60em; }} .meta, .hparams {{ color: #555; font-size: 90%; }}
</style></head><body>
<h1>{title}</h1>
<p class="meta">{meta}</p>
{table}
{figures}
<h2>Hyper-parameters</h2>
{hparams}
</body></html>
"""


def write_report(results: Sequence[dict[str, Any]], directory: str | Path) -> Path:
    """Write ``index.html`` (figures embedded) and the PNGs into ``directory``; return the page's path."""
    if not results:
        raise ValueError("write_report needs at least one result")
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    drawn = {
        "accuracy-matrix.png": heatmaps(results),
        "task-curves.png": task_curves(results),
        "scores.png": scores(results),
    }
    figures = []
    for name, title, caption in FIGURES:
        (out / name).write_bytes(drawn[name])
        data = base64.b64encode(drawn[name]).decode("ascii")
        figures.append(
            f'<figure><h2>{html.escape(title)}</h2><img src="data:image/png;base64,{data}" '
            f'alt="{html.escape(title)}" data-file="{name}"><figcaption>{html.escape(caption)}'
            "</figcaption></figure>"
        )
    streams = sorted({str(r["stream"]) for r in results})
    first = results[0]
    meta = (
        f"stream {', '.join(streams)}, {first['tasks']} tasks, seed {first['seed']}; "
        f"single pass, test-then-train; written {dt.datetime.now().isoformat(timespec='seconds')}"
    )
    names = ", ".join(str(r["learner"]) for r in results)
    page = PAGE.format(
        title=html.escape(f"streamlearn bench: {names}"),
        meta=html.escape(meta),
        table=table_html(results),
        figures="\n".join(figures),
        hparams=_hparams_html(results),
    )
    index = out / "index.html"
    index.write_text(page, encoding="utf-8")
    return index
