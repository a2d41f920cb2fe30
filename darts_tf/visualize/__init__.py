"""Pictures of a search: cell diagrams, softmax(alpha) heatmaps and their animation, curves, an HTML report.

Drawn with matplotlib alone (a pip wheel: no graphviz binary needed); the DOT
source of each cell is written too for users who have graphviz. Cells are laid
out as the paper draws them (Liu et al., arXiv:1806.09055, Fig. 4/5): inputs
c_{k-2} and c_{k-1} on the left, the intermediate nodes in the middle, their
concatenation c_{k} on the right, every edge labelled with its operation in
that operation's colour. No pyplot: figures are plain `matplotlib.figure.Figure`s,
so nothing touches matplotlib's global state.

The pictures live by kind: `cells` (cell diagrams and their DOT sources), `heatmaps`
(softmax(alpha)), `report` (a run folder's pictures, curves, animation and HTML report),
`summaries` (TensorBoard images of each search epoch).
"""

from darts_tf.visualize.cells import (
    FORMATS,
    OP_COLOURS,
    cell_dot,
    cell_figure,
    draw_cell,
    draw_nb201_cell,
    draw_recurrent_cell,
    nb201_cell_dot,
    nb201_cell_figure,
    recurrent_cell_dot,
    recurrent_cell_figure,
    save_cells,
    save_figure,
    save_nb201_cell,
    save_recurrent_cell,
)
from darts_tf.visualize.heatmaps import (
    draw_heatmap,
    edge_labels,
    heatmap_figure,
    heatmap_scale,
    nb201_heatmap_figure,
    recurrent_heatmap_figure,
)
from darts_tf.visualize.report import (
    compact_genotype,
    costs_figure,
    curves_figure,
    op_counts,
    read_metrics,
    read_search_run,
    save_animation,
    search_frames,
    visualize,
    visualize_recurrent_run,
    visualize_run,
)
from darts_tf.visualize.summaries import (
    write_nb201_search_summaries,
    write_recurrent_search_summaries,
    write_scalars,
    write_search_summaries,
)

__all__ = [
    "write_scalars",
    "costs_figure",
    "write_nb201_search_summaries",
    "nb201_heatmap_figure",
    "save_nb201_cell",
    "nb201_cell_figure",
    "nb201_cell_dot",
    "draw_nb201_cell",
    "FORMATS",
    "OP_COLOURS",
    "cell_dot",
    "cell_figure",
    "compact_genotype",
    "curves_figure",
    "draw_cell",
    "draw_heatmap",
    "draw_recurrent_cell",
    "edge_labels",
    "heatmap_figure",
    "heatmap_scale",
    "op_counts",
    "read_metrics",
    "read_search_run",
    "recurrent_cell_dot",
    "recurrent_cell_figure",
    "recurrent_heatmap_figure",
    "save_animation",
    "save_cells",
    "save_figure",
    "save_recurrent_cell",
    "search_frames",
    "visualize",
    "visualize_recurrent_run",
    "visualize_run",
    "write_recurrent_search_summaries",
    "write_search_summaries",
]
