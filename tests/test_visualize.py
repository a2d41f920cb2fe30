"""Pictures: cell diagrams, heatmaps, the search animation, curves, TensorBoard images and the HTML report."""

import os
import re
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from darts_tf import visualize
from darts_tf.cnn.genotypes import DARTS_V1, DARTS_V2, Genotype, softmax
from darts_tf.cnn.search import run_search
from darts_tf.config import SearchConfig

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def _not_blank_png(path, min_size=(400, 250)):
    image = np.asarray(Image.open(path).convert("L"), np.float32)
    assert image.shape[1] >= min_size[0] and image.shape[0] >= min_size[1], image.shape
    assert image.std() > 10 and (image < 128).mean() > 0.01  # drawn lines and text, not an empty canvas
    return image


def test_every_operation_has_a_colour_of_its_own():
    from darts_tf.cnn.genotypes import OPERATIONS
    from darts_tf.rnn.genotypes import PRIMITIVES as ACTIVATIONS
    from darts_tf.visualize import OP_COLOURS

    for ops in (OPERATIONS, [a for a in ACTIVATIONS if a != "none"]):
        assert set(ops) <= set(OP_COLOURS)
        assert len({OP_COLOURS[op] for op in ops}) == len(ops)


@pytest.mark.parametrize("genotype", [DARTS_V1, DARTS_V2], ids=["DARTS_V1", "DARTS_V2"])
def test_cell_diagrams_in_every_format_hold_every_op(tmp_path, genotype):
    written = visualize.save_cells(genotype, str(tmp_path), ("png", "svg", "pdf"), prefix="g")
    assert sorted(os.path.basename(p) for p in written) == sorted(
        f"g_{kind}.{ext}" for kind in ("normal", "reduce") for ext in ("png", "svg", "pdf", "dot")
    )
    for kind, edges in (("normal", genotype.normal), ("reduce", genotype.reduce)):
        _not_blank_png(tmp_path / f"g_{kind}.png")
        svg = (tmp_path / f"g_{kind}.svg").read_text()
        texts = re.findall(r"<text[^>]*>([^<]*)</text>", svg)
        for op, _ in edges:  # every edge's op is a text label (searchable, selectable)
            assert texts.count(op) == sum(1 for name, _ in edges if name == op)
        assert {"0", "1", "2", "3"} <= set(texts)
        # Node names drawn as math (c with the subscript k-2), not as text with braces.
        assert all(f"<!-- ${name}$ -->" in svg for name in ("c_{k-2}", "c_{k-1}", "c_{k}")) and ">c</tspan>" in svg
        assert "c_{k-2}" not in texts
        assert (tmp_path / f"g_{kind}.pdf").read_bytes().startswith(b"%PDF")
        dot = (tmp_path / f"g_{kind}.dot").read_text()
        assert dot.count("->") == len(edges) + 4 and all(f'label="{op}"' in dot for op, _ in edges)


def test_more_steps_and_heatmaps():
    edges = [edge for n in range(5) for edge in (("sep_conv_3x3", n), ("max_pool_3x3", n + 1))]  # 5 steps
    genotype = Genotype(normal=edges, normal_concat=range(2, 7), reduce=edges, reduce_concat=range(2, 7))
    figure = visualize.cell_figure(genotype, "normal")
    image = visualize.report._figure_rgb(figure)
    assert image.shape[0] > 600  # taller with 5 steps
    alphas = np.random.default_rng(0).normal(size=(14, 8))
    heat = visualize.report._figure_rgb(visualize.heatmap_figure(alphas, alphas, 4, "epoch 1"))
    assert heat.std() > 10
    # A search that has barely moved: the colour scale is centred on 1/8 and as wide as the departure.
    near_uniform = softmax(np.random.default_rng(1).normal(scale=1e-2, size=(14, 8)), axis=-1)
    low, centre, high = visualize.heatmap_scale(near_uniform)
    assert centre == 0.125 and high - centre == pytest.approx(np.abs(near_uniform - 0.125).max())
    assert centre - low == pytest.approx(high - centre) and high - centre < 0.01
    assert visualize.heatmap_scale(np.full((2, 8), 0.125))[2] == pytest.approx(0.127)
    figure = visualize.cells._figure(6, 6)
    ax = figure.add_subplot(1, 1, 1)
    visualize.draw_heatmap(ax, np.log(near_uniform), 4, "t")
    texts = [t for t in ax.texts]
    assert len(texts) == 14 * 8 and all(re.fullmatch(r"0\.\d{4}", t.get_text()) for t in texts)  # barely moved
    moved = visualize.cells._figure(6, 6).add_subplot(1, 1, 1)
    visualize.draw_heatmap(moved, alphas, 4, "t")  # a search that has moved: three decimals
    assert all(re.fullmatch(r"0\.\d{3}", t.get_text()) for t in moved.texts)
    bold = [t for t in texts if t.get_fontweight() == "bold"]
    assert len(bold) == 14 and len(ax.patches) == 14  # each edge's strongest op framed and bold
    assert visualize.edge_labels(2) == ["c_{k-2} -> 0", "c_{k-1} -> 0", "c_{k-2} -> 1", "c_{k-1} -> 1", "0 -> 1"]
    counts = visualize.op_counts([DARTS_V2, DARTS_V1])
    assert counts["skip_connect"] == [2, 3] and counts["sep_conv_3x3"] == [5, 5] and counts["dil_conv_3x3"] == [1, 0]


@pytest.mark.slow
def test_search_run_pictures_tensorboard_and_a_self_contained_report(tmp_path):
    config = SearchConfig(
        dataset="synthetic", epochs=2, batch_size=16, C=4, layers=3, steps=2, multiplier=2, subset=64,
        eval_batch_size=64, run_dir=str(tmp_path / "search"),
    )  # fmt: skip
    run_search(config, verbose=0)
    run_dir = tmp_path / "search"
    # The initial alphas are recorded, and the final cells are drawn into the run folder.
    assert {f"alphas_epoch_00{e}.npz" for e in range(3)} <= set(os.listdir(run_dir))
    for kind in ("normal", "reduce"):
        _not_blank_png(run_dir / f"cell_{kind}.png", (300, 150))
        assert (run_dir / f"cell_{kind}.dot").exists()
    tags = _tensorboard_tags(run_dir / "tensorboard" / "search")
    assert {"alphas/softmax", "cells/normal", "cells/reduce", "alphas/normal", "alphas/reduce", "genotype"} <= tags
    written = visualize.visualize_run(str(run_dir), str(tmp_path / "pictures"))
    names = {os.path.basename(p) for p in written}
    assert {"search.gif", "curves.png", "report.html", "cell_normal.svg", "alphas_epoch_002.svg"} <= names
    assert {f"alphas_epoch_00{e}.png" for e in range(3)} <= names
    gif = Image.open(tmp_path / "pictures" / "search.gif")
    assert gif.n_frames == 3  # epochs 0, 1, 2
    _not_blank_png(tmp_path / "pictures" / "curves.png")
    page = (tmp_path / "pictures" / "report.html").read_text()
    sources = re.findall(r"""(?:src|href)\s*=\s*["']([^"']*)""", page)
    assert sources and all(s.startswith("data:") for s in sources)  # nothing outside the page
    assert "<script" not in page and "genotype" in page.lower() and "data:image/gif;base64," in page
    # Results first (held-out accuracy, the derived cells in one line a node), the config collapsed at the end.
    order = [page.index(x) for x in ("<h2>Result</h2>", "<h2>Derived cells</h2>", "<summary>Config")]
    assert order == sorted(order) and page.rindex("<details>") == page.index("<details><summary>Config")
    assert re.search(r"held-out top-1 0\.\d{4} after epoch 2 \(best 0\.\d{4}, epoch [12]\)", page)
    assert "node 0 = " in page and "output = concat(node 0, node 1)" in page
    assert "<td>channels</td><td>the data&#x27;s own</td>" in page and "<td>subset</td><td>64</td>" in page


def _tensorboard_tags(folder) -> set:
    import tensorflow as tf

    tags = set()
    for path in folder.iterdir():
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            tags.update(value.tag for value in event.summary.value)
    return tags


def test_visualize_command_and_its_errors(tmp_path):
    def command(*args):
        return subprocess.run([sys.executable, "-m", "darts_tf.commands", "visualize", *args], capture_output=True,
                              text=True, cwd=tmp_path)  # fmt: skip

    out = command("DARTS_V2", "--out", "pics", "--format", "png")
    assert out.returncode == 0, out.stderr[-2000:]
    assert (tmp_path / "pics" / "darts_v2_normal.png").exists() and (tmp_path / "pics" / "darts_v2_reduce.dot").exists()
    (tmp_path / "bad.json").write_text('{"normal": [["no_such_op", 0]]}')
    bad = command("bad.json")
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "bad.json" in bad.stderr
    assert command("NOT_A_GENOTYPE").returncode == 2
    assert "invalid choice: 'bmp'" in command("DARTS_V2", "--format", "bmp").stderr


def test_training_run_report_shows_the_curves_cells_and_served_signature(tmp_path):
    from darts_tf.cnn.train import TrainConfig, run_training

    config = TrainConfig(
        dataset="synthetic", epochs=1, batch_size=32, C=4, layers=3, subset=64, eval_batch_size=64,
        run_dir=str(tmp_path / "train"), export_dir=str(tmp_path / "sm"), export_name="tiny",
    )  # fmt: skip
    run_training(config, verbose=0)
    written = visualize.visualize(str(tmp_path / "train"), str(tmp_path / "pictures"), ("png",))
    assert {"cell_normal.png", "cell_reduce.png", "curves.png", "report.html"} <= {os.path.basename(p) for p in written}
    page = (tmp_path / "pictures" / "report.html").read_text()
    assert "darts_tf training run" in page and "serving_default" in page and "uint8" in page
    assert "probabilities" in page and "val_accuracy" not in page  # curves are images; the signature lists outputs


@pytest.mark.parametrize("name", ["DARTS_V1", "DARTS_V2"])
def test_recurrent_cell_diagram_holds_every_activation(tmp_path, name):
    from darts_tf.rnn.genotypes import GENOTYPES

    genotype = GENOTYPES[name]
    command = [sys.executable, "-m", "darts_tf.commands", "visualize", f"rnn:{name}", "--out", str(tmp_path)]
    out = subprocess.run([*command, "--format", "png", "svg"], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    stem = f"rnn_{name.lower()}_recurrent"
    _not_blank_png(tmp_path / f"{stem}.png")
    svg = (tmp_path / f"{stem}.svg").read_text()
    texts = re.findall(r"<text[^>]*>([^<]*)</text>", svg)
    for op in {op for op, _ in genotype.recurrent}:
        assert texts.count(op) == sum(1 for name_, _ in genotype.recurrent if name_ == op)
    assert {str(i) for i in range(9)} <= set(texts)
    assert all(f"<!-- ${name}$ -->" in svg for name in ("x_t", "h_{t-1}", "h_t"))  # drawn as math
    dot = (tmp_path / f"{stem}.dot").read_text()
    assert dot.count("[label=") == 8 and dot.count("style=dashed") == 8
