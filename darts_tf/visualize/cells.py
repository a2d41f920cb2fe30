"""Cell diagrams: a DARTS cell (normal or reduction) and a recurrent cell, drawn as the paper draws
them (Liu et al., arXiv:1806.09055, Fig. 4/5), saved as pictures and as DOT sources; the op colours."""

from __future__ import annotations

import io
import os

from darts_tf.cnn.genotypes import Genotype
from darts_tf.errors import ConfigError
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
    steps, per_node = genotype.steps, genotype.inputs_per_node
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
        target = index // per_node
        lines.append(f'  "{names[source]}" -> "{target}" [label="{op}", color="{colour}", fontcolor="{colour}"];')
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
    steps, per_node = genotype.steps, genotype.inputs_per_node
    graph = [(op, source, index // per_node + 2) for index, (op, source) in enumerate(edges)]
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
OP_COLOURS.update({"nor_conv_1x1": "#56b4e9", "nor_conv_3x3": "#0072b2"})
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


def save_recurrent_cell(genotype, out_dir: str, formats=("png", "svg"), prefix: str = "cell") -> list[str]:
    """`<prefix>_recurrent.<fmt>` and its `.dot` source in `out_dir`; the paths."""
    return _save_one_cell(recurrent_cell_figure(genotype), recurrent_cell_dot(genotype), out_dir, formats,
                          f"{prefix}_recurrent")  # fmt: skip


def _save_one_cell(figure, dot: str, out_dir: str, formats, stem: str) -> list[str]:
    """`<stem>.<fmt>` for every format and `<stem>.dot` in `out_dir`; the paths."""
    bad = [f for f in formats if f not in FORMATS]
    if bad:
        raise ConfigError(f"`format` must be among {', '.join(FORMATS)}. Received: {bad[0]!r}")
    written = [save_figure(figure, os.path.join(out_dir, f"{stem}.{fmt}")) for fmt in formats]
    path = os.path.join(out_dir, f"{stem}.dot")
    with atomic_file(path) as handle:
        handle.write(dot)
    return written + [path]


def cell_figure(genotype: Genotype, kind: str = "normal", title: str | None = None):
    figure = _figure(8.6, 1.6 + 1.1 * genotype.steps)
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


def _png_bytes(figure, dpi: int = 80) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    return buffer.getvalue()


def draw_nb201_cell(ax, genotype, title: str | None = None) -> None:
    """A NAS-Bench-201 cell (arXiv:2001.00326, Fig. 1): its input node 0, nodes 1..3, every edge with its op;
    node 3 is the output (`none` edges drawn too, grey)."""
    from darts_tf.nb201.genotypes import EDGES

    positions = {0: (0.0, 0.0), "out": (10.6, -1.6)}
    for node in (1, 2, 3):
        positions[node] = (5.0, 1.6 * (2 - node))
    graph = [(op, i, j) for (i, j), op in zip(EDGES, genotype.ops)]
    _draw_graph(
        ax, positions, graph, (3,), labels={0: "in", "out": "out"},
        colours={0: "#cfe8cf", "out": "#f3e9b3"}, inputs=(0,), node_name=str,
        stagger=lambda source, target: 0.55,
    )  # fmt: skip
    ax.set_title(title or "NAS-Bench-201 cell", fontsize=13)


def nb201_cell_dot(genotype) -> str:
    """The NAS-Bench-201 cell as graphviz DOT source."""
    from darts_tf.nb201.genotypes import EDGES

    lines = ['digraph "nb201" {', "  rankdir=LR;",
             '  node [style="filled,rounded", shape=box, fontname="Helvetica", penwidth=2];',
             '  edge [fontname="Helvetica", fontsize=18];', '  "0" [fillcolor=darkseagreen2];']  # fmt: skip
    lines += [f'  "{i}" [fillcolor=lightblue, shape=ellipse];' for i in (1, 2, 3)]
    for (i, j), op in zip(EDGES, genotype.ops):
        colour = OP_COLOURS.get(op, "black")
        lines.append(f'  "{i}" -> "{j}" [label="{op}", color="{colour}", fontcolor="{colour}"];')
    return "\n".join(lines + ["}"]) + "\n"


def nb201_cell_figure(genotype, title: str | None = None):
    figure = _figure(9.6, 5.0)
    draw_nb201_cell(figure.add_axes((0.01, 0.01, 0.98, 0.9)), genotype, title)
    return figure


def save_nb201_cell(genotype, out_dir: str, formats=("png", "svg"), prefix: str = "cell") -> list[str]:
    """`<prefix>_nb201.<fmt>` and its `.dot` source in `out_dir`; the paths."""
    return _save_one_cell(nb201_cell_figure(genotype), nb201_cell_dot(genotype), out_dir, formats, f"{prefix}_nb201")
