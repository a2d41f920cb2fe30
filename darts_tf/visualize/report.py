"""A run folder's pictures: the cells, the alpha heatmaps of every epoch and their animation, the curves,
and one self-contained HTML report (`visualize_run`, `visualize_recurrent_run`, `visualize`)."""

from __future__ import annotations

import base64
import csv
import glob
import html
import json
import os
import re

import numpy as np

from darts_tf.cnn.genotypes import PRIMITIVES, Genotype, derive_genotype
from darts_tf.cnn.space import SearchSpace, search_space
from darts_tf.config import import_ops_module
from darts_tf.errors import DataError, RunDirError
from darts_tf.files import atomic_file
from darts_tf.nb201.genotypes import EDGES, OPS, derive_nb201
from darts_tf.visualize.cells import (
    OP_COLOURS,
    _cell,
    _figure,
    _png_bytes,
    cell_figure,
    draw_cell,
    draw_nb201_cell,
    nb201_cell_figure,
    recurrent_cell_figure,
    save_cells,
    save_figure,
    save_nb201_cell,
    save_recurrent_cell,
)
from darts_tf.visualize.heatmaps import (
    draw_heatmap,
    heatmap_figure,
    nb201_heatmap_figure,
    recurrent_heatmap_figure,
)


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
    import_ops_module(config.get("ops_module"))  # the space and genotypes may name ops of yours
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
        *run["alphas"][epoch], space=run_space(run), max_skip=config.get("max_skip"),
        **run.get("betas", {}).get(epoch, {}),
    )  # fmt: skip


def run_space(run: dict) -> SearchSpace:
    """The search space a run folder's config.json names (DARTS's for runs that name none)."""
    config = run["config"]
    return search_space(
        config.get("primitives"), config.get("steps", 4), config.get("multiplier", 4), config.get("inputs_per_node", 2)
    )


def read_metrics(run_dir: str) -> list[dict]:
    path = os.path.join(run_dir, "metrics.csv")
    if not os.path.isfile(path):
        return []
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def search_frames(run: dict) -> list[np.ndarray]:
    """One RGB frame per recorded epoch: both heatmaps above both derived cells."""
    steps, columns = run["config"].get("steps", 4), run_space(run).primitives
    frames = []
    for epoch, (normal, reduce) in sorted(run["alphas"].items()):
        genotype = _epoch_genotype(run, epoch)
        figure = _figure(16.0, 0.35 * normal.shape[0] + 6.5)
        grid = figure.add_gridspec(2, 2, height_ratios=[0.35 * normal.shape[0] + 2.0, 4.0])
        draw_heatmap(
            figure.add_subplot(grid[0, 0]), normal, steps, "softmax(alphas_normal)", colorbar=False, columns=columns
        )
        draw_heatmap(
            figure.add_subplot(grid[0, 1]), reduce, steps, "softmax(alphas_reduce)", colorbar=False, columns=columns
        )
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
    """{op: [count per genotype]} of the ops in the derived cells (skip_connect's rise: the collapse signal):
    DARTS's ops but `none`, then any other op the genotypes use."""
    used = [op for genotype in genotypes for op, _ in _cell(genotype, kind)[0]]
    counts = {op: [] for op in [*PRIMITIVES, *used] if op != "none"}
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
        for index, (op, values) in enumerate(counts.items()):
            if any(values):
                colour = OP_COLOURS.get(op, f"C{index % 10}")  # an op of yours: matplotlib's cycle
                axes[3].plot(x, values, marker="o", color=colour, label=op, lw=2.5 if op == "skip_connect" else 1.5)
        axes[3].set_title("ops in the derived normal cell")
        axes[3].yaxis.get_major_locator().set_params(integer=True)
        axes[3].set_xlabel("epoch")
        axes[3].legend(fontsize=7)
    figure.tight_layout()
    return figure


# metrics.csv's cost columns (darts_tf.cnn.cost.COLUMNS), their titles and the config field of their budget
_COSTS = (
    ("latency_ms", "latency (ms)", "latency_budget"),
    ("flops_m", "mult-adds (M)", "flops_budget"),
    ("params_m", "parameters (M)", "params_budget"),
)


def costs_figure(rows: list[dict], config: dict | None = None):
    """The derived network's latency, mult-adds and parameters per epoch (solid), the architecture variables'
    expected ones (dashed) and the budgets (a red line); None when metrics.csv has no cost columns."""
    panels = [entry for entry in _COSTS if rows and entry[0] in rows[0]]
    if not panels:
        return None
    figure = _figure(4.2 * len(panels), 3.4)
    axes = np.atleast_1d(figure.subplots(1, len(panels)))
    epochs = _column(rows, "epoch")
    for ax, (column, title, budget_field) in zip(axes, panels):
        ax.plot(epochs, _column(rows, column), marker="o", label="derived network")
        if "expected_" + column in rows[0]:
            ax.plot(epochs, _column(rows, "expected_" + column), "--", label="expected (softmax)")
        budget = (config or {}).get(budget_field)
        if budget:
            ax.axhline(float(budget), color="#cc3311", lw=1.2, label="budget")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.legend(fontsize=7)
    figure.tight_layout()
    return figure


def _costs_section(rows: list[dict], config: dict, out_dir: str, written: list) -> list[str]:
    figure = costs_figure(rows, config)
    if figure is None:
        return []
    written.append(save_figure(figure, os.path.join(out_dir, "costs.png")))
    return [f'<h2>Costs of the derived network</h2><img alt="costs" src="{_png_data(figure)}">']


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
            figure = heatmap_figure(*alphas, steps, f"epoch {epoch}", run_space(run).primitives)
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
        sections += _costs_section(run["metrics"], config, out_dir, written)
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


def visualize_nb201_run(run_dir: str, out_dir: str | None = None, formats=("png", "svg")) -> list[str]:
    """A NAS-Bench-201 search or training run folder: the cell (and its table accuracy when the table is
    installed), the softmax(alpha) heatmap of every recorded epoch with an animation (search), the curves, the
    table accuracy of every epoch's cell (search) and report.html."""
    from darts_tf.nb201.genotypes import Nb201Genotype

    out_dir = out_dir or os.path.join(run_dir, "visualize")
    with open(os.path.join(run_dir, "config.json"), encoding="utf-8") as handle:
        config = json.load(handle)
    kind = "search" if "arch_learning_rate" in config else "training"
    metrics = read_metrics(run_dir)
    sections = [section for section in [_results_summary(metrics, kind)] if section]
    genotype = Nb201Genotype.load(os.path.join(run_dir, "genotype.json"))
    written = save_nb201_cell(genotype, out_dir, formats)
    table_line = ""
    try:
        from darts_tf.nb201.table import CELLS, score

        scored = score(genotype)
        table_line = f"NAS-Bench-201 table: CIFAR-10 test accuracy {scored['test_accuracy']:.2f} %, rank "
        table_line += f"{scored['rank']:,} of {CELLS:,}"
    except DataError:  # the table is an optional extra
        pass
    cell = f'<img alt="cell" src="{_png_data(nb201_cell_figure(genotype))}">'
    sections.append(f"<h2>Cell</h2><pre>{html.escape(genotype.arch)}\n{html.escape(table_line)}</pre>{cell}")
    frames = []
    paths = sorted(glob.glob(os.path.join(run_dir, "alphas_epoch_*.npz")))
    for index, path in enumerate(paths):
        epoch = int(re.search(r"alphas_epoch_(\d+)\.npz$", path).group(1))
        with np.load(path, allow_pickle=False) as arrays:
            alphas = arrays["alphas"]
        figure = nb201_heatmap_figure(alphas, f"softmax(alphas), epoch {epoch}")
        for fmt in formats if index == len(paths) - 1 else ("png",):
            written.append(save_figure(figure, os.path.join(out_dir, f"alphas_epoch_{epoch:03d}.{fmt}")))
        frame = _figure(14.0, 5.0)
        grid = frame.add_gridspec(1, 2, width_ratios=[1.0, 1.6])
        draw_heatmap(frame.add_subplot(grid[0, 0]), alphas, 3, "softmax(alphas)", colorbar=False,
                     columns=OPS, rows=[f"{i} -> {j}" for i, j in EDGES])  # fmt: skip
        draw_nb201_cell(frame.add_subplot(grid[0, 1]), derive_nb201(alphas, config.get("max_skip")), "derived cell")
        frame.suptitle(f"epoch {epoch}" + (" (initial alphas)" if epoch == 0 else ""), fontsize=15)
        frame.tight_layout()
        frames.append(_figure_rgb(frame))
    if frames:
        animation = save_animation(frames, os.path.join(out_dir, "search.gif"))
        written.append(animation)
        sections.append(
            f'<h2>softmax(alpha) and the derived cell over the epochs</h2><img alt="search animation" '
            f'src="{_file_data(animation, "image/gif")}">'
        )
    if metrics:
        figure = curves_figure(metrics)
        written.append(save_figure(figure, os.path.join(out_dir, "curves.png")))
        sections.append(f'<h2>Curves</h2><img alt="curves" src="{_png_data(figure)}">')
        if "nb201_test_accuracy" in metrics[0]:
            figure = _figure(5.6, 3.4)
            ax = figure.add_subplot(1, 1, 1)
            ax.plot(_column(metrics, "epoch"), _column(metrics, "nb201_test_accuracy"), marker="o", color="#aa3377")
            ax.xaxis.get_major_locator().set_params(integer=True)
            ax.set_xlabel("epoch")
            ax.set_ylabel("CIFAR-10 test top-1 (%)")
            ax.set_title("the table accuracy of each epoch's cell")
            ax.grid(alpha=0.3)
            figure.tight_layout()
            written.append(save_figure(figure, os.path.join(out_dir, "table_accuracy.png")))
            sections.append(f'<h2>NAS-Bench-201 table</h2><img alt="table accuracy" src="{_png_data(figure)}">')
        sections += _costs_section(metrics, config, out_dir, written)
    signature = _export_signature(config)
    if signature:
        sections.append(f"<h2>Exported model</h2><pre>{html.escape(signature)}</pre>")
    return [*written, _write_report(out_dir, run_dir, f"NAS-Bench-201 {kind}", config, sections)]


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


def _holds_nb201_genotype(path: str) -> bool:
    """Whether `path` is a JSON file of a NAS-Bench-201 genotype (one with an "arch" key)."""
    try:
        with open(path, encoding="utf-8") as handle:
            return "arch" in json.load(handle)
    except (OSError, ValueError, TypeError):
        return False


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
            if _holds_nb201_genotype(os.path.join(target, "genotype.json")):  # a NAS-Bench-201 search or training
                return visualize_nb201_run(target, out_dir, formats)
            return visualize_run(target, out_dir, formats)
        except OSError as error:  # a file of the run folder unreadable, or the output folder unwritable
            raise RunDirError(f"{target!r}: {error.strerror or error} ({error.filename})") from None
    stem = os.path.splitext(os.path.basename(target))[0].lower()
    if target.startswith("rnn:") or _holds_recurrent_genotype(target):
        genotype = recurrent.get_genotype(target[4:] if target.startswith("rnn:") else target)
        return save_recurrent_cell(genotype, out_dir or ".", formats, prefix=stem.replace("rnn:", "rnn_"))
    if target.strip().startswith("|") or _holds_nb201_genotype(target):  # a NAS-Bench-201 arch string or file
        from darts_tf.nb201.genotypes import Nb201Genotype

        genotype = Nb201Genotype.from_arch(target) if target.strip().startswith("|") else Nb201Genotype.load(target)
        return save_nb201_cell(genotype, out_dir or ".", formats, prefix="nb201" if target.startswith("|") else stem)
    genotype = get_genotype(target)  # a name or a JSON file; GenotypeError naming it otherwise
    return save_cells(genotype, out_dir or ".", formats, prefix=stem)
