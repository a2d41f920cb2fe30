"""softmax(alpha) heatmaps of a search: the two cells of the CNN space, the recurrent cell."""

from __future__ import annotations

import numpy as np

from darts_tf.cnn.genotypes import PRIMITIVES, softmax
from darts_tf.visualize.cells import _figure, _math, _node_names


def recurrent_heatmap_figure(alphas: np.ndarray, steps: int, title: str):
    """softmax(alphas) [edges, 5] of a recurrent search, one row per predecessor -> node edge."""
    from darts_tf.rnn.genotypes import PRIMITIVES as RNN_PRIMITIVES

    labels = [f"{j} -> {i + 1}" for i in range(steps) for j in range(i + 1)]
    figure = _figure(6.0, 0.22 * np.shape(alphas)[0] + 1.6)
    draw_heatmap(figure.add_subplot(1, 1, 1), alphas, steps, title, columns=RNN_PRIMITIVES, rows=labels)
    figure.tight_layout()
    return figure


def nb201_heatmap_figure(alphas: np.ndarray, title: str):
    """softmax(alphas) [6, 5] of a NAS-Bench-201 search, one row per edge i -> j."""
    from darts_tf.nb201.genotypes import EDGES, OPS

    figure = _figure(6.6, 0.3 * len(EDGES) + 1.8)
    draw_heatmap(figure.add_subplot(1, 1, 1), alphas, 3, title, columns=OPS, rows=[f"{i} -> {j}" for i, j in EDGES])
    figure.tight_layout()
    return figure


def edge_labels(steps: int) -> list[str]:
    names = _node_names(steps)
    return [f"{names[j]} -> {i}" for i in range(steps) for j in range(i + 2)]


def heatmap_scale(weights: np.ndarray) -> tuple[float, float, float]:
    """(low, uniform, high) of the heatmap's colour scale: centred on 1/number of ops, as wide as the
    largest departure from it (at least 0.002), so that a search that has barely moved still shows."""
    uniform = 1.0 / weights.shape[-1]
    spread = max(float(np.abs(weights - uniform).max()), 2e-3)
    return max(uniform - spread, 0.0), uniform, uniform + spread


def draw_heatmap(
    ax, alphas: np.ndarray, steps: int, title: str, colorbar: bool = True, columns=PRIMITIVES, rows=None
) -> None:
    """softmax(alpha) per edge (rows) over the operations (columns), values written in the cells.

    Colours are relative to the uniform weight 1/len(columns) (white): red above it, blue below,
    the scale as wide as the largest departure; each edge's strongest op is framed and bold.
    """
    from matplotlib.colors import TwoSlopeNorm
    from matplotlib.patches import Rectangle

    weights = softmax(np.asarray(alphas, np.float64), axis=-1)
    low, uniform, high = heatmap_scale(weights)
    image = ax.imshow(weights, cmap="RdBu_r", norm=TwoSlopeNorm(uniform, low, high), aspect="auto")
    ax.set_xticks(range(len(columns)), columns, rotation=45, ha="right", fontsize=8)
    labels = rows if rows is not None else edge_labels(steps)
    ax.set_yticks(range(weights.shape[0]), [_math(label) for label in labels], fontsize=8)
    strongest = weights.argmax(axis=-1)
    # Enough decimals to tell the values apart: three, more while the search has barely moved.
    decimals = int(min(5, max(3, np.ceil(-np.log10(high - uniform)) + 1)))
    for (row, column), value in np.ndenumerate(weights):
        dark = abs(value - uniform) > 0.6 * (high - uniform)
        ax.text(column, row, f"{value:.{decimals}f}", ha="center", va="center", fontsize=6.5,
                        color="white" if dark else "black",
                fontweight="bold" if column == strongest[row] else "normal")  # fmt: skip
    for row, column in enumerate(strongest):
        ax.add_patch(Rectangle((column - 0.5, row - 0.5), 1, 1, fill=False, edgecolor="black", lw=1.4))
    ax.set_title(title, fontsize=11)
    if colorbar:
        bar = ax.figure.colorbar(image, ax=ax, fraction=0.046, pad=0.02)
        bar.set_ticks(
            [low, uniform, high], labels=[f"{low:.{decimals}f}", f"1/{weights.shape[-1]}", f"{high:.{decimals}f}"]
        )
        bar.ax.tick_params(labelsize=7)


def heatmap_figure(
    alphas_normal: np.ndarray, alphas_reduce: np.ndarray, steps: int, title: str = "", columns=PRIMITIVES
):
    """Both cells' softmax(alpha) side by side; `columns`: the search space's ops."""
    figure = _figure(11.0, 0.35 * alphas_normal.shape[0] + 2.2)
    axes = figure.subplots(1, 2)
    draw_heatmap(axes[0], alphas_normal, steps, "softmax(alphas_normal)", columns=columns)
    draw_heatmap(axes[1], alphas_reduce, steps, "softmax(alphas_reduce)", columns=columns)
    if title:
        figure.suptitle(title, fontsize=13)
    figure.tight_layout()
    return figure
