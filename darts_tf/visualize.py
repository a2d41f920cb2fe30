"""Pictures of a search: cell diagrams, softmax(alpha) heatmaps and their animation, curves, an HTML report.

Drawn with matplotlib alone (a pip wheel: no graphviz binary needed); the DOT
source of each cell is written too for users who have graphviz. Cells are laid
out as the paper draws them (Liu et al., arXiv:1806.09055, Fig. 4/5): inputs
c_{k-2} and c_{k-1} on the left, the intermediate nodes in the middle, their
concatenation c_{k} on the right, every edge labelled with its operation in
that operation's colour. No pyplot: figures are plain `matplotlib.figure.Figure`s,
so nothing touches matplotlib's global state.
"""

from __future__ import annotations

import base64
import csv
import glob
import html
import io
import json
import os
import re

import numpy as np

from darts_tf.cnn.genotypes import PRIMITIVES, Genotype, derive_genotype, softmax
from darts_tf.errors import ConfigError, RunDirError
from darts_tf.files import atomic_file

FORMATS = ("png", "svg", "pdf")
# One colour per operation, the same in every picture: Paul Tol's colour-blind-safe "bright" and
# "muted" hues, no two ops of one family alike (3x3 and 5x5 differ in hue, not only in shade).
OP_COLOURS = {
    "none": "#bbbbbb",
    "max_pool_3x3": "#4477aa",
    "avg_pool_3x3": "#66ccee",
    "skip_connect": "#777777",
    "sep_conv_3x3": "#ee6677",
    "sep_conv_5x5": "#aa3377",
    "dil_conv_3x3": "#228833",
    "dil_conv_5x5": "#ccbb44",
    "sep_conv_7x7": "#882255",
    "conv_7x1_1x7": "#44aa99",
}


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(figure)
    return figure


def _cell(genotype: Genotype, kind: str) -> tuple[tuple, tuple]:
    if kind not in ("normal", "reduce"):
        raise ConfigError(f"cell kind must be 'normal' or 'reduce'. Received: kind={kind!r}")
    return (genotype.normal, genotype.normal_concat) if kind == "normal" else (genotype.reduce, genotype.reduce_concat)


def _node_names(steps: int) -> list[str]:
    return ["c_{k-2}", "c_{k-1}", *[str(i) for i in range(steps)]]


def _math(name: str) -> str:
    """A node or edge name as matplotlib mathtext: c_{k-2} drawn as c with the subscript k-2 (no braces),
    "->" as an arrow."""
    return " ".join(f"${word}$" if "_" in word else "\u2192" if word == "->" else word for word in name.split(" "))


def cell_dot(genotype: Genotype, kind: str = "normal") -> str:
    """The cell as graphviz DOT source (left to right, edges labelled and coloured by op)."""
    edges, concat = _cell(genotype, kind)
    steps = len(edges) // 2
    names = _node_names(steps)
    lines = [
        f'digraph "{kind}" {{',
        "  rankdir=LR;",
        '  node [style="filled,rounded", shape=box, fontname="Helvetica", penwidth=2];',
        '  edge [fontname="Helvetica", fontsize=18];',
        '  "c_{k-2}" [fillcolor=darkseagreen2]; "c_{k-1}" [fillcolor=darkseagreen2];',
    ]
    lines += [f'  "{i}" [fillcolor=lightblue, shape=ellipse];' for i in range(steps)]
    lines.append('  "c_{k}" [fillcolor=palegoldenrod];')
    for index, (op, source) in enumerate(edges):
        colour = OP_COLOURS.get(op, "black")
        lines.append(f'  "{names[source]}" -> "{index // 2}" [label="{op}", color="{colour}", fontcolor="{colour}"];')
    lines += [f'  "{node - 2}" -> "c_{{k}}" [color=gray, style=dashed];' for node in concat]
    lines.append("}")
    return "\n".join(lines) + "\n"


def _positions(steps: int) -> dict:
    """Inputs left (c_{k-2} above c_{k-1}), the intermediate nodes in one column, the output right."""
    positions = {0: (0.0, 1.2), 1: (0.0, -1.2)}
    for i in range(steps):
        positions[i + 2] = (5.0, 1.6 * ((steps - 1) / 2 - i))
    positions["out"] = (9.2, 0.0)
    return positions


def draw_cell(ax, genotype: Genotype, kind: str = "normal", title: str | None = None) -> None:
    """Draws the cell into a matplotlib Axes.

    Edges from the inputs run left to right, labelled three quarters along, where the labels
    stand in one column at least 0.6 node spacings apart (near the inputs, where the arrows
    leaving one input meet, they would pile up); edges between
    intermediate nodes are arcs on the right of the node column, labelled at their apex.
    """
    edges, concat = _cell(genotype, kind)
    steps = len(edges) // 2
    graph = [(op, source, index // 2 + 2) for index, (op, source) in enumerate(edges)]
    _draw_graph(
        ax, _positions(steps), graph, concat, labels={0: "c_{k-2}", 1: "c_{k-1}", "out": "c_{k}"},
        colours={0: "#cfe8cf", 1: "#cfe8cf", "out": "#f3e9b3"}, inputs=(0, 1), node_name=lambda key: str(key - 2),
        stagger=lambda source, target: 0.75,
    )  # fmt: skip
    ax.set_title(title or f"{kind} cell", fontsize=13)


def _draw_graph(ax, positions, edges, concat, labels, colours, inputs, node_name, stagger, feeds=()) -> None:
    """Boxes at `positions`, `edges` (op, source, target) coloured by op: straight from `inputs`, arcs right of the
    node column between the others; dashed arrows from the `concat` nodes to "out", grey ones for `feeds`."""
    from matplotlib.patches import FancyBboxPatch

    half_width, half_height = 0.5, 0.3

    placed = []  # label centres so far: a label that would cover one moves down until it is clear

    def label(x, y, op, colour):
        while any(abs(x - px) < 1.6 and abs(y - py) < 0.42 for px, py in placed):
            y -= 0.12
        placed.append((x, y))
        ax.text(x, y, op, ha="center", va="center", fontsize=9, color="white", zorder=6,
                bbox={"boxstyle": "round,pad=0.2", "facecolor": colour, "edgecolor": "none"})  # fmt: skip

    def plain_arrow(source, target, dashed):
        (x0, y0), (x1, y1) = positions[source], positions[target]
        ax.annotate("", xy=(x1 - half_width, y1), xytext=(x0 + half_width, y0), zorder=1,
                    arrowprops={"arrowstyle": "-|>", "color": "#aaaaaa", "lw": 1.2, "ls": "--" if dashed else "-",
                                "shrinkA": 0, "shrinkB": 0})  # fmt: skip

    for node in concat:
        plain_arrow(node, "out", dashed=True)
    for source, target in feeds:
        plain_arrow(source, target, dashed=False)
    seen = []
    for op, source, target in edges:
        repeat = seen.count((source, target))  # a second op on the same edge: its label further back
        seen.append((source, target))
        (x0, y0), (x1, y1) = positions[source], positions[target]
        colour = OP_COLOURS.get(op, "black")
        style = {"arrowstyle": "-|>", "color": colour, "lw": 2.2, "mutation_scale": 16, "shrinkA": 0, "shrinkB": 0}
        if source in inputs:  # from an input: a straight arrow, label staggered by input
            start, end = (x0 + half_width, y0), (x1 - half_width, y1)
            ax.annotate("", xy=end, xytext=start, zorder=2, arrowprops={**style, "connectionstyle": "arc3,rad=0"})
            t = stagger(source, target) - 0.3 * repeat
            label(start[0] + t * (end[0] - start[0]), start[1] + t * (end[1] - start[1]), op, colour)
        else:  # between intermediate nodes: an arc bulging right of the column
            start, end = (x0 + half_width, y0), (x1 + half_width, y1)
            rad = -(0.55 + 0.1 * abs(target - source))
            ax.annotate("", xy=end, xytext=start, zorder=2,
                        arrowprops={**style, "connectionstyle": f"arc3,rad={rad}"})  # fmt: skip
            dx, dy = end[0] - start[0], end[1] - start[1]
            label((start[0] + end[0]) / 2 + rad * dy / 2, (start[1] + end[1]) / 2 - rad * dx / 2, op, colour)
    for key, (x, y) in positions.items():
        text = _math(labels.get(key, node_name(key) if isinstance(key, int) else key))
        corner = (x - half_width + 0.05, y - half_height + 0.05)
        face = colours.get(key, "#cfe2f3")
        ax.add_patch(FancyBboxPatch(corner, 2 * half_width - 0.1, 2 * half_height - 0.1, boxstyle="round,pad=0.05",
                                    facecolor=face, edgecolor="#333333", lw=1.5, zorder=3))  # fmt: skip
        ax.text(x, y, text, ha="center", va="center", fontsize=12, zorder=4, fontweight="bold")
    top = max(abs(y) for _, y in positions.values()) + 0.6
    ax.set_xlim(min(x for x, _ in positions.values()) - 0.7, positions["out"][0] + 0.7)
    ax.set_ylim(-top, top)
    ax.set_aspect("equal")
    ax.axis("off")


# The recurrent cell's activations (darts_tf.rnn), in the same palette.
OP_COLOURS.update({"tanh": "#e69f00", "relu": "#009e73", "sigmoid": "#cc79a7", "identity": "#999999"})


def draw_recurrent_cell(ax, genotype, title: str | None = None) -> None:
    """A recurrent cell (arXiv:1806.09055, Fig. 6): x_t and h_{t-1} into node 0, nodes 1..n, their mean h_t."""
    steps = genotype.steps
    positions = {"x_t": (-2.6, 1.2), "h_{t-1}": (-2.6, -1.2), 0: (0.0, 0.0)}
    for i in range(1, steps + 1):
        positions[i] = (5.0, 1.6 * ((steps - 1) / 2 - (i - 1)))
    positions["out"] = (10.6, 0.0)
    graph = [(op, source, i + 1) for i, (op, source) in enumerate(genotype.recurrent)]
    _draw_graph(
        ax, positions, graph, genotype.concat, labels={0: "0", "out": "h_t"},
        colours={"x_t": "#cfe8cf", "h_{t-1}": "#cfe8cf", 0: "#cfe8cf", "out": "#f3e9b3"}, inputs=(0,),
        node_name=str, stagger=lambda source, target: 0.55, feeds=(("x_t", 0), ("h_{t-1}", 0)),
    )  # fmt: skip
    nodes = ", ".join(str(n) for n in genotype.concat)
    ax.set_title(title or f"recurrent cell ($h_t$ = mean of nodes {nodes})", fontsize=13)


def recurrent_cell_dot(genotype) -> str:
    """The recurrent cell as graphviz DOT source."""
    lines = ['digraph "recurrent" {', "  rankdir=LR;",
             '  node [style="filled,rounded", shape=box, fontname="Helvetica", penwidth=2];',
             '  edge [fontname="Helvetica", fontsize=18];',
             '  "x_{t}" [fillcolor=darkseagreen2]; "h_{t-1}" [fillcolor=darkseagreen2]; "0" [fillcolor=darkseagreen2];',
             '  "x_{t}" -> "0"; "h_{t-1}" -> "0";']  # fmt: skip
    lines += [f'  "{i}" [fillcolor=lightblue, shape=ellipse];' for i in range(1, genotype.steps + 1)]
    lines.append('  "h_{t}" [fillcolor=palegoldenrod];')
    for i, (op, source) in enumerate(genotype.recurrent):
        colour = OP_COLOURS.get(op, "black")
        lines.append(f'  "{source}" -> "{i + 1}" [label="{op}", color="{colour}", fontcolor="{colour}"];')
    lines += [f'  "{node}" -> "h_{{t}}" [color=gray, style=dashed];' for node in genotype.concat]
    return "\n".join(lines + ["}"]) + "\n"


def recurrent_cell_figure(genotype, title: str | None = None):
    figure = _figure(9.6, 1.6 + 1.1 * genotype.steps)
    draw_recurrent_cell(figure.add_axes((0.01, 0.01, 0.98, 0.9)), genotype, title)
    return figure


def recurrent_heatmap_figure(alphas: np.ndarray, steps: int, title: str):
    """softmax(alphas) [edges, 5] of a recurrent search, one row per predecessor -> node edge."""
    from darts_tf.rnn.genotypes import PRIMITIVES as RNN_PRIMITIVES

    labels = [f"{j} -> {i + 1}" for i in range(steps) for j in range(i + 1)]
    figure = _figure(6.0, 0.22 * np.shape(alphas)[0] + 1.6)
    draw_heatmap(figure.add_subplot(1, 1, 1), alphas, steps, title, columns=RNN_PRIMITIVES, rows=labels)
    figure.tight_layout()
    return figure


def write_recurrent_search_summaries(log_dir: str, epoch: int, alphas, genotype) -> None:
    """TensorBoard for one recurrent search epoch: the softmax(alpha) heatmap and the cell as images, an alpha
    histogram and the genotype as text (under `log_dir`, e.g. RUN_DIR/tensorboard/search)."""
    import tensorflow as tf

    writer = tf.summary.create_file_writer(log_dir)
    with writer.as_default(step=epoch):
        heatmap = recurrent_heatmap_figure(alphas, genotype.steps, f"softmax(alphas), epoch {epoch}")
        tf.summary.image("alphas/softmax", tf.io.decode_png(_png_bytes(heatmap))[None])
        cell = recurrent_cell_figure(genotype, f"recurrent cell, epoch {epoch}")
        tf.summary.image("cells/recurrent", tf.io.decode_png(_png_bytes(cell))[None])
        tf.summary.histogram("alphas/recurrent", np.asarray(alphas))
        tf.summary.text("genotype", genotype.to_json())
    writer.close()


def save_recurrent_cell(genotype, out_dir: str, formats=("png", "svg"), prefix: str = "cell") -> list[str]:
    """`<prefix>_recurrent.<fmt>` and its `.dot` source in `out_dir`; the paths."""
    bad = [f for f in formats if f not in FORMATS]
    if bad:
        raise ConfigError(f"`format` must be among {', '.join(FORMATS)}. Received: {bad[0]!r}")
    figure = recurrent_cell_figure(genotype)
    written = [save_figure(figure, os.path.join(out_dir, f"{prefix}_recurrent.{fmt}")) for fmt in formats]
    path = os.path.join(out_dir, f"{prefix}_recurrent.dot")
    with atomic_file(path) as handle:
        handle.write(recurrent_cell_dot(genotype))
    return written + [path]


def cell_figure(genotype: Genotype, kind: str = "normal", title: str | None = None):
    steps = len(_cell(genotype, kind)[0]) // 2
    figure = _figure(8.6, 1.6 + 1.1 * steps)
    draw_cell(figure.add_axes((0.01, 0.01, 0.98, 0.9)), genotype, kind, title)
    return figure


def save_figure(figure, path: str) -> str:
    """Writes `figure` atomically; the format from the extension (SVG text stays text, so names are searchable)."""
    import matplotlib

    fmt = os.path.splitext(path)[1][1:].lower()
    if fmt not in FORMATS + ("gif",):
        raise ConfigError(f"picture format must be one of {', '.join(FORMATS)}. Received: {path!r}")
    with matplotlib.rc_context({"svg.fonttype": "none", "pdf.fonttype": 42}), atomic_file(path, "wb") as handle:
        figure.savefig(handle, format=fmt, dpi=110, bbox_inches="tight")
    return path


def save_cells(genotype: Genotype, out_dir: str, formats=("png", "svg"), prefix: str = "cell") -> list[str]:
    """`<prefix>_normal.<fmt>`, `<prefix>_reduce.<fmt>` and their `.dot` sources in `out_dir`; the paths."""
    bad = [f for f in formats if f not in FORMATS]
    if bad:
        raise ConfigError(f"`format` must be among {', '.join(FORMATS)}. Received: {bad[0]!r}")
    written = []
    for kind in ("normal", "reduce"):
        figure = cell_figure(genotype, kind)
        for fmt in formats:
            written.append(save_figure(figure, os.path.join(out_dir, f"{prefix}_{kind}.{fmt}")))
        path = os.path.join(out_dir, f"{prefix}_{kind}.dot")
        with atomic_file(path) as handle:
            handle.write(cell_dot(genotype, kind))
        written.append(path)
    return written


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


def heatmap_figure(alphas_normal: np.ndarray, alphas_reduce: np.ndarray, steps: int, title: str = ""):
    figure = _figure(11.0, 0.35 * alphas_normal.shape[0] + 2.2)
    axes = figure.subplots(1, 2)
    draw_heatmap(axes[0], alphas_normal, steps, "softmax(alphas_normal)")
    draw_heatmap(axes[1], alphas_reduce, steps, "softmax(alphas_reduce)")
    if title:
        figure.suptitle(title, fontsize=13)
    figure.tight_layout()
    return figure


def _figure_rgb(figure) -> np.ndarray:
    figure.canvas.draw()
    return np.asarray(figure.canvas.buffer_rgba())[..., :3].copy()


def read_search_run(run_dir: str) -> dict:
    """A search run folder's config, per-epoch alphas (epoch 0 = the initial ones when recorded) and metrics rows."""
    config_path = os.path.join(run_dir, "config.json")
    if not os.path.isfile(config_path):
        raise RunDirError(f"{run_dir!r} holds no run (no config.json)")
    with open(config_path, encoding="utf-8") as handle:
        config = json.load(handle)
    alphas, betas = {}, {}
    for path in sorted(glob.glob(os.path.join(run_dir, "alphas_epoch_*.npz"))):
        epoch = int(re.search(r"alphas_epoch_(\d+)\.npz$", path).group(1))
        with np.load(path, allow_pickle=False) as arrays:
            alphas[epoch] = (arrays["alphas_normal"], arrays["alphas_reduce"])
            if "betas_normal" in arrays:  # PC-DARTS edge normalisation
                betas[epoch] = {"betas_normal": arrays["betas_normal"], "betas_reduce": arrays["betas_reduce"]}
    return {"config": config, "alphas": alphas, "betas": betas, "metrics": read_metrics(run_dir)}


def _epoch_genotype(run: dict, epoch: int) -> Genotype:
    """The genotype derived from the run's architecture variables of `epoch`, under its rules."""
    config = run["config"]
    return derive_genotype(
        *run["alphas"][epoch], steps=config.get("steps", 4), multiplier=config.get("multiplier", 4),
        max_skip=config.get("max_skip"), **run.get("betas", {}).get(epoch, {}),
    )  # fmt: skip


def read_metrics(run_dir: str) -> list[dict]:
    path = os.path.join(run_dir, "metrics.csv")
    if not os.path.isfile(path):
        return []
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def search_frames(run: dict) -> list[np.ndarray]:
    """One RGB frame per recorded epoch: both heatmaps above both derived cells."""
    steps = run["config"].get("steps", 4)
    frames = []
    for epoch, (normal, reduce) in sorted(run["alphas"].items()):
        genotype = _epoch_genotype(run, epoch)
        figure = _figure(16.0, 0.35 * normal.shape[0] + 6.5)
        grid = figure.add_gridspec(2, 2, height_ratios=[0.35 * normal.shape[0] + 2.0, 4.0])
        draw_heatmap(figure.add_subplot(grid[0, 0]), normal, steps, "softmax(alphas_normal)", colorbar=False)
        draw_heatmap(figure.add_subplot(grid[0, 1]), reduce, steps, "softmax(alphas_reduce)", colorbar=False)
        draw_cell(figure.add_subplot(grid[1, 0]), genotype, "normal", "derived normal cell")
        draw_cell(figure.add_subplot(grid[1, 1]), genotype, "reduce", "derived reduction cell")
        figure.suptitle(f"epoch {epoch}" + (" (initial alphas)" if epoch == 0 else ""), fontsize=15)
        figure.tight_layout()
        frames.append(_figure_rgb(figure))
    return frames


def save_animation(frames: list[np.ndarray], path: str, seconds_per_frame: float = 0.8) -> str:
    """An animated GIF of `frames` (the last one held 3x longer), written atomically."""
    from PIL import Image

    if not frames:
        raise RunDirError(f"no frames to animate into {path!r} (the run folder has no alphas_epoch_*.npz)")
    images = [Image.fromarray(frame).convert("P", palette=Image.Palette.ADAPTIVE, colors=128) for frame in frames]
    durations = [int(1000 * seconds_per_frame)] * len(images)
    durations[-1] *= 3
    with atomic_file(path, "wb") as handle:
        images[0].save(handle, format="GIF", save_all=True, append_images=images[1:], duration=durations, loop=0)
    return path


def _column(rows: list[dict], name: str) -> np.ndarray:
    return np.array([float(row[name]) if row.get(name) not in (None, "") else np.nan for row in rows])


def op_counts(genotypes: list[Genotype], kind: str = "normal") -> dict:
    """{op: [count per genotype]} of the ops in the derived cells (skip_connect's rise: the collapse signal)."""
    counts = {op: [] for op in PRIMITIVES if op != "none"}
    for genotype in genotypes:
        edges = _cell(genotype, kind)[0]
        for op in counts:
            counts[op].append(sum(1 for name, _ in edges if name == op))
    return counts


def curves_figure(rows: list[dict], genotypes: list[Genotype] | None = None):
    """Loss and accuracy (train/val), learning rate and, for a search, the op counts of the derived cells."""
    epochs = _column(rows, "epoch")
    panels = 3 + (1 if genotypes else 0)
    figure = _figure(4.2 * panels, 3.6)
    axes = figure.subplots(1, panels)
    for name, style in (("loss", "-"), ("val_loss", "--"), ("arch_loss", ":")):
        if rows and name in rows[0]:
            axes[0].plot(epochs, _column(rows, name), style, marker="o", label=name)
    for name, style in (("accuracy", "-"), ("val_accuracy", "--"), ("val_top5", ":")):
        if rows and name in rows[0]:
            axes[1].plot(epochs, _column(rows, name), style, marker="o", label=name)
    if rows and "lr" in rows[0]:
        axes[2].plot(epochs, _column(rows, "lr"), marker="o", color="#444444")
    for ax, title in zip(axes, ("loss", "accuracy", "learning rate")):
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    if genotypes:
        counts = op_counts(genotypes, "normal")
        x = np.arange(len(genotypes))
        axes[3].xaxis.get_major_locator().set_params(integer=True)
        for op, values in counts.items():
            if any(values):
                axes[3].plot(
                    x, values, marker="o", color=OP_COLOURS[op], label=op, lw=2.5 if op == "skip_connect" else 1.5
                )
        axes[3].set_title("ops in the derived normal cell")
        axes[3].yaxis.get_major_locator().set_params(integer=True)
        axes[3].set_xlabel("epoch")
        axes[3].legend(fontsize=7)
    figure.tight_layout()
    return figure


def _run_genotypes(run: dict) -> list[Genotype]:
    return [_epoch_genotype(run, epoch) for epoch in sorted(run["alphas"])]


def _png_data(figure) -> str:
    return "data:image/png;base64," + base64.b64encode(_png_bytes(figure, dpi=100)).decode()


def _file_data(path: str, mime: str) -> str:
    with open(path, "rb") as handle:
        return f"data:{mime};base64," + base64.b64encode(handle.read()).decode()


def visualize_run(run_dir: str, out_dir: str | None = None, formats=("png", "svg")) -> list[str]:
    """Every picture of a search or training run folder into `out_dir` (default `run_dir/visualize`), and report.html.

    Search: the final cells, heatmaps of the last epoch, the heatmap+cell animation
    over the epochs (GIF), the curves. Training: the trained cells and the curves,
    and the exported model's signature in the report when the export is there.
    """
    out_dir = out_dir or os.path.join(run_dir, "visualize")
    run = read_search_run(run_dir)
    config, written, sections = run["config"], [], []
    genotype_path = os.path.join(run_dir, "genotype.json")
    genotype = Genotype.load(genotype_path) if os.path.isfile(genotype_path) else None
    genotypes = _run_genotypes(run) if run["alphas"] else []
    if genotype is None and genotypes:
        genotype = genotypes[-1]
    kind = "search" if "arch_learning_rate" in config else "training"
    summary = _results_summary(run["metrics"], kind)
    if summary:
        sections.append(summary)
    if genotype is not None:
        written += save_cells(genotype, out_dir, formats)
        cells = "".join(
            f'<figure><img alt="{kind} cell" src="{_png_data(cell_figure(genotype, kind))}"></figure>'
            for kind in ("normal", "reduce")
        )
        title = "Derived cells" if kind == "search" else "Cells"
        sections.append(
            f"<h2>{title}</h2><pre>{html.escape(compact_genotype(genotype))}</pre>{cells}"
            f"<details><summary>genotype JSON</summary><pre>{html.escape(genotype.to_json(indent=2))}</pre></details>"
        )
    if run["alphas"]:
        last, steps = max(run["alphas"]), config.get("steps", 4)
        for epoch, alphas in sorted(run["alphas"].items()):  # every epoch as PNG, the last in every format
            figure = heatmap_figure(*alphas, steps, f"epoch {epoch}")
            for fmt in formats if epoch == last else ("png",):
                written.append(save_figure(figure, os.path.join(out_dir, f"alphas_epoch_{epoch:03d}.{fmt}")))
        animation = save_animation(search_frames(run), os.path.join(out_dir, "search.gif"))
        written.append(animation)
        sections.append(
            f'<h2>softmax(alpha) and the derived cells over the epochs</h2><img alt="search animation" '
            f'src="{_file_data(animation, "image/gif")}">'
        )
    if run["metrics"]:
        figure = curves_figure(run["metrics"], genotypes or None)
        written.append(save_figure(figure, os.path.join(out_dir, "curves.png")))
        sections.append(f'<h2>Curves</h2><img alt="curves" src="{_png_data(figure)}">')
    signature = _export_signature(config)
    if signature:
        sections.append(f"<h2>Exported model</h2><pre>{html.escape(signature)}</pre>")
    return [*written, _write_report(out_dir, run_dir, kind, config, sections)]


def compact_genotype(genotype: Genotype) -> str:
    """The cells one node per line: `node 0 = sep_conv_3x3(c_{k-2}) + sep_conv_3x3(c_{k-1})`, and the output."""
    lines = []
    for kind in ("normal", "reduce"):
        edges, concat = _cell(genotype, kind)
        names = ["c_{k-2}", "c_{k-1}", *[f"node {i}" for i in range(len(edges) // 2)]]
        lines.append(f"{kind} cell:")
        for node in range(len(edges) // 2):
            inputs = " + ".join(f"{op}({names[source]})" for op, source in edges[2 * node : 2 * node + 2])
            lines.append(f"  node {node} = {inputs}")
        lines.append("  output = concat(" + ", ".join(f"node {n - 2}" for n in concat) + ")")
    return "\n".join(lines)


def _results_summary(rows: list[dict], kind: str) -> str:
    """The run's outcome first: the last and best held-out (search) or test (training) top-1, and its curve."""
    if not rows or "val_accuracy" not in rows[0]:
        return ""
    epochs, accuracy = _column(rows, "epoch"), _column(rows, "val_accuracy")
    if not np.isfinite(accuracy).any():
        return ""
    what = "held-out" if kind == "search" else "test"
    best = int(np.nanargmax(accuracy))
    text = (
        f"{what} top-1 {accuracy[-1]:.4f} after epoch {int(epochs[-1])}"
        f" (best {accuracy[best]:.4f}, epoch {int(epochs[best])})"
    )
    if "val_top5" in rows[0] and np.isfinite(_column(rows, "val_top5")[-1]):
        text += f"; top-5 {_column(rows, 'val_top5')[-1]:.4f}"
    figure = _figure(5.6, 3.4)
    ax = figure.add_subplot(1, 1, 1)
    ax.plot(epochs, 100 * accuracy, marker="o", color="#4477aa")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"{what} top-1 (%)")
    ax.set_title(f"{what} accuracy")
    ax.grid(alpha=0.3)
    figure.tight_layout()
    return f'<h2>Result</h2><p>{html.escape(text)}</p><img alt="{what} accuracy" src="{_png_data(figure)}">'


# What a config value of 0 or None means, where it does not mean the number itself.
_MEANINGS = {
    "image_size": {0: "the data's own"},
    "channels": {0: "the data's own"},
    "subset": {0: "all images"},
    "partial_channels": {1: "1 (off: every channel)"},
    "cutout": {0: "0 (off)"},
    "max_steps": {0: "0 (the whole text)"},
    "arch_warmup": {0: "0 (none)"},
    "beta_decay": {0.0: "0 (off)"},
    "drop_path_prob": {0.0: "0 (off)"},
    "label_smoothing": {0.0: "0 (off)"},
    "learning_rate_min": {0.0: "0"},
    "train_portion": {None: "the corpus's training file"},
    "max_skip": {None: "no limit"},
    "early_stop": {None: "off"},
    "data_dir": {None: "none (`dataset`)"},
    "export_name": {None: "from the arch"},
    "cache": {None: "off"},
    "tfds_data_dir": {None: "tensorflow-datasets' default"},
}


def _config_value(key: str, value) -> str:
    meanings = _MEANINGS.get(key, {})
    try:
        return meanings.get(value, "off" if value is None else str(value))
    except TypeError:  # unhashable (a list)
        return str(value)


def _write_report(out_dir: str, run_dir: str, kind: str, config: dict, sections: list[str]) -> str:
    """report.html: `sections` (HTML with every image inlined, results first), the config collapsed at the end."""
    rows = "".join(
        f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(_config_value(k, v))}</td></tr>" for k, v in config.items()
    )
    sections = [
        *sections,
        f"<details><summary>Config ({len(config)} settings)</summary><table>{rows}</table></details>",
    ]
    page = (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>darts_tf {kind} run: {html.escape(run_dir)}"
        "</title><style>body{font-family:sans-serif;max-width:1400px;margin:auto}img{max-width:100%}"
        "td{padding:2px 10px;border-bottom:1px solid #ddd}figure{display:inline-block;margin:0}</style></head>"
        f"<body><h1>darts_tf {kind} run</h1><p>{html.escape(os.path.abspath(run_dir))}</p>{''.join(sections)}"
        "</body></html>"
    )
    report = os.path.join(out_dir, "report.html")
    with atomic_file(report) as handle:
        handle.write(page)
    return report


def visualize_recurrent_run(run_dir: str, out_dir: str | None = None, formats=("png", "svg")) -> list[str]:
    """A recurrent search or training run folder (`darts-tf search-rnn` / `train-rnn`): the cell, the
    softmax(alpha) heatmap of every recorded epoch (search), perplexity curves and report.html."""
    from darts_tf.rnn.genotypes import RecurrentGenotype

    out_dir = out_dir or os.path.join(run_dir, "visualize")
    with open(os.path.join(run_dir, "config.json"), encoding="utf-8") as handle:
        config = json.load(handle)
    genotype = RecurrentGenotype.load(os.path.join(run_dir, "genotype.json"))
    written = save_recurrent_cell(genotype, out_dir, formats)
    cell = f'<img alt="recurrent cell" src="{_png_data(recurrent_cell_figure(genotype))}">'
    sections = [f"<h2>Genotype</h2><pre>{html.escape(genotype.to_json(indent=2))}</pre>{cell}"]
    paths = sorted(glob.glob(os.path.join(run_dir, "alphas_epoch_*.npz")))
    for index, path in enumerate(paths):
        epoch = int(re.search(r"alphas_epoch_(\d+)\.npz$", path).group(1))
        with np.load(path, allow_pickle=False) as arrays:
            alphas = arrays["alphas"]
        figure = recurrent_heatmap_figure(alphas, genotype.steps, f"softmax(alphas), epoch {epoch}")
        last = index == len(paths) - 1
        for fmt in formats if last else ("png",):
            written.append(save_figure(figure, os.path.join(out_dir, f"alphas_epoch_{epoch:03d}.{fmt}")))
        if last:
            sections.append(f'<h2>softmax(alpha), epoch {epoch}</h2><img alt="alphas" src="{_png_data(figure)}">')
    metrics = read_metrics(run_dir)
    if metrics:
        figure = _figure(6.0, 3.8)
        ax = figure.add_subplot(1, 1, 1)
        for name, style in (("train_ppl", "-"), ("val_ppl", "--")):
            if name in metrics[0]:
                ax.plot(_column(metrics, "epoch"), _column(metrics, name), style, marker="o", label=name)
        ax.set_yscale("log")
        ax.set_xlabel("epoch")
        ax.set_title("perplexity")
        ax.legend(fontsize=8)
        figure.tight_layout()
        written.append(save_figure(figure, os.path.join(out_dir, "curves.png")))
        sections.append(f'<h2>Curves</h2><img alt="curves" src="{_png_data(figure)}">')
    kind = "recurrent search" if "arch_learning_rate" in config else "recurrent training"
    return [*written, _write_report(out_dir, run_dir, kind, config, sections)]


def _export_signature(config: dict) -> str | None:
    """The served signature of a training run's latest export, as text (None when there is none)."""
    if not config.get("export") or "export_dir" not in config:
        return None
    # A training run's report: the export's own naming and layout (imports TensorFlow).
    from darts_tf.cnn.train import export_name
    from darts_tf.config import TrainConfig, config_from_dict
    from darts_tf.export import load_serving_signature, next_version

    base = os.path.join(config["export_dir"], export_name(config_from_dict(TrainConfig, config)))
    version = next_version(base) - 1
    if not version:
        return None
    path = os.path.join(base, str(version))
    serve = load_serving_signature(path)
    inputs = {k: f"{v.dtype.name} {v.shape}" for k, v in serve.structured_input_signature[1].items()}
    outputs = {k: f"{v.dtype.name} {v.shape}" for k, v in serve.structured_outputs.items()}
    return f"{path}\nserving_default\n  inputs:  {inputs}\n  outputs: {outputs}"


def _holds_recurrent_genotype(path: str) -> bool:
    """Whether `path` is a JSON file of a recurrent genotype (one with a "recurrent" key)."""
    try:
        with open(path, encoding="utf-8") as handle:
            return "recurrent" in json.load(handle)
    except (OSError, ValueError, TypeError):
        return False


def visualize(target: str, out_dir: str | None = None, formats=("png", "svg")) -> list[str]:
    """Pictures of a run folder, a genotype JSON file or a published genotype name; the files written."""
    from darts_tf.cnn.genotypes import get_genotype
    from darts_tf.rnn import genotypes as recurrent

    if os.path.isdir(target):
        try:
            if _holds_recurrent_genotype(os.path.join(target, "genotype.json")):  # a search-rnn / train-rnn run
                return visualize_recurrent_run(target, out_dir, formats)
            return visualize_run(target, out_dir, formats)
        except OSError as error:  # a file of the run folder unreadable, or the output folder unwritable
            raise RunDirError(f"{target!r}: {error.strerror or error} ({error.filename})") from None
    stem = os.path.splitext(os.path.basename(target))[0].lower()
    if target.startswith("rnn:") or _holds_recurrent_genotype(target):
        genotype = recurrent.get_genotype(target[4:] if target.startswith("rnn:") else target)
        return save_recurrent_cell(genotype, out_dir or ".", formats, prefix=stem.replace("rnn:", "rnn_"))
    genotype = get_genotype(target)  # a name or a JSON file; GenotypeError naming it otherwise
    return save_cells(genotype, out_dir or ".", formats, prefix=stem)


def _png_bytes(figure, dpi: int = 80) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    return buffer.getvalue()


def write_search_summaries(log_dir: str, epoch: int, alphas_normal, alphas_reduce, genotype: Genotype, steps: int):
    """TensorBoard for one search epoch: softmax(alpha) heatmaps and cell diagrams as images, alpha histograms,
    the genotype as text (under `log_dir`, e.g. RUN_DIR/tensorboard/search)."""
    import tensorflow as tf

    writer = tf.summary.create_file_writer(log_dir)
    with writer.as_default(step=epoch):
        heatmaps = heatmap_figure(alphas_normal, alphas_reduce, steps, f"epoch {epoch}")
        tf.summary.image("alphas/softmax", tf.io.decode_png(_png_bytes(heatmaps))[None])
        for kind in ("normal", "reduce"):
            picture = tf.io.decode_png(_png_bytes(cell_figure(genotype, kind, f"{kind} cell, epoch {epoch}")))
            tf.summary.image(f"cells/{kind}", picture[None])
        tf.summary.histogram("alphas/normal", np.asarray(alphas_normal))
        tf.summary.histogram("alphas/reduce", np.asarray(alphas_reduce))
        tf.summary.text("genotype", genotype.to_json())
    writer.close()
