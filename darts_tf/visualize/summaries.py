"""TensorBoard summaries of a search epoch: heatmaps and cells as images, alpha histograms, the genotype."""

from __future__ import annotations

import numpy as np

from darts_tf.cnn.genotypes import PRIMITIVES, Genotype
from darts_tf.visualize.cells import _png_bytes, cell_figure, nb201_cell_figure, recurrent_cell_figure
from darts_tf.visualize.heatmaps import heatmap_figure, nb201_heatmap_figure, recurrent_heatmap_figure


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


def write_nb201_search_summaries(log_dir: str, epoch: int, alphas, genotype, table_accuracy=None) -> None:
    """TensorBoard for one NAS-Bench-201 search epoch: the softmax(alpha) heatmap and the cell as images, an
    alpha histogram, the arch string, and the cell's table accuracy when known."""
    import tensorflow as tf

    writer = tf.summary.create_file_writer(log_dir)
    with writer.as_default(step=epoch):
        heatmap = nb201_heatmap_figure(alphas, f"softmax(alphas), epoch {epoch}")
        tf.summary.image("alphas/softmax", tf.io.decode_png(_png_bytes(heatmap))[None])
        cell = nb201_cell_figure(genotype, f"cell, epoch {epoch}")
        tf.summary.image("cells/nb201", tf.io.decode_png(_png_bytes(cell))[None])
        tf.summary.histogram("alphas/nb201", np.asarray(alphas))
        tf.summary.text("genotype", genotype.arch)
        if table_accuracy is not None:
            tf.summary.scalar("nb201_test_accuracy", table_accuracy)
    writer.close()


def write_search_summaries(
    log_dir: str, epoch: int, alphas_normal, alphas_reduce, genotype: Genotype, steps: int, columns=PRIMITIVES
):
    """TensorBoard for one search epoch: softmax(alpha) heatmaps (`columns`: the space's ops) and cell diagrams
    as images, alpha histograms, the genotype as text (under `log_dir`, e.g. RUN_DIR/tensorboard/search)."""
    import tensorflow as tf

    writer = tf.summary.create_file_writer(log_dir)
    with writer.as_default(step=epoch):
        heatmaps = heatmap_figure(alphas_normal, alphas_reduce, steps, f"epoch {epoch}", columns)
        tf.summary.image("alphas/softmax", tf.io.decode_png(_png_bytes(heatmaps))[None])
        for kind in ("normal", "reduce"):
            picture = tf.io.decode_png(_png_bytes(cell_figure(genotype, kind, f"{kind} cell, epoch {epoch}")))
            tf.summary.image(f"cells/{kind}", picture[None])
        tf.summary.histogram("alphas/normal", np.asarray(alphas_normal))
        tf.summary.histogram("alphas/reduce", np.asarray(alphas_reduce))
        tf.summary.text("genotype", genotype.to_json())
    writer.close()


def write_scalars(log_dir: str, epoch: int, values: dict, prefix: str = "") -> None:
    """TensorBoard scalars `prefix + name` for one epoch (e.g. the derived network's costs under cost/)."""
    import tensorflow as tf

    writer = tf.summary.create_file_writer(log_dir)
    with writer.as_default(step=epoch):
        for name, value in values.items():
            tf.summary.scalar(prefix + name, float(value))
    writer.close()
