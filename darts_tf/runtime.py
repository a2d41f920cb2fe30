"""TensorFlow runtime settings measured to suit the DARTS search step (see README, Performance).

The search network is many small, independent ops (14 edges x 7 ops per
cell), so on CPU single-threaded kernels run side by side (intra-op 1,
inter-op = cores) beat multi-threaded kernels run one after another: 2.0 s
vs 3.0 s per first-order step at batch 16 on 2 cores. The grappler passes
switched off here ("reduced") cost start-up on the search step's graph and
gave no measurable step-time gain. Function optimisation is among them: it
specialised each of the step's ~450-1,100 edge calls to prune the gradients
the caller does not use (15-45 s of start-up), which the edge functions now
leave out when traced (`arch_gradients_only`). "off" switches grappler off
altogether. The thread settings must be made before TensorFlow runs its
first op; the graph optimisation applies to functions first run after it is
set.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

import tensorflow as tf

_M_ARENA_MAX = -8  # glibc mallopt parameter

GRAPPLER_OPTIONS = {
    "layout_optimizer": False,
    "constant_folding": False,
    "shape_optimization": False,
    "remapping": False,
    "arithmetic_optimization": False,
    "dependency_optimization": False,
    "loop_optimization": False,
    "function_optimization": False,
    "debug_stripper": False,
    "scoped_allocator_optimization": False,
    "pin_to_host_optimization": False,
    "implementation_selector": False,
}


GRAPH_OPTIMIZATION_MODES = ("reduced", "off")


def _check_graph_optimization(mode: str) -> str:
    if mode not in GRAPH_OPTIMIZATION_MODES:
        raise ValueError(f"graph_optimization must be one of {GRAPH_OPTIMIZATION_MODES}. Received: {mode!r}")
    return mode


def set_graph_optimization(mode: str = "reduced") -> str:
    """Sets grappler for the search: "reduced" (GRAPPLER_OPTIONS) or "off" (none: a little sooner, more memory)."""
    if _check_graph_optimization(mode) == "off":
        tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": True})
    else:
        tf.config.optimizer.set_experimental_options({**GRAPPLER_OPTIONS, "disable_meta_optimizer": False})
    return mode


def limit_malloc_arenas(arenas: int = 1) -> bool:
    """Caps glibc's malloc arenas (as MALLOC_ARENA_MAX does); True if applied.

    TensorFlow's CPU tensors come from malloc. With one arena per thread,
    memory freed by one thread's kernels is not reused by another's, and the
    search step's peak resident memory grew by ~0.4 GiB (batch 16, 2 cores)
    with no gain in speed. Other C libraries: nothing happens.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(_M_ARENA_MAX, int(arenas)))
    except (OSError, AttributeError):
        return False


def configure_for_search(threads: int | None = None, graph_optimization: str = "reduced") -> dict:
    """Sets the search's thread pools (CPU only), grappler options and malloc arenas; returns what was applied.

    `threads`: inter-op threads (default: the number of cores);
    `graph_optimization`: see `set_graph_optimization`. On a machine
    with a GPU only the grappler options are set. If TensorFlow has already
    started, the thread settings cannot change and are left as they are.
    """
    _check_graph_optimization(graph_optimization)
    applied = {}
    on_cpu = not tf.config.list_physical_devices("GPU")
    if on_cpu and limit_malloc_arenas(1):
        applied["malloc_arenas"] = 1
    applied["grappler"] = set_graph_optimization(graph_optimization)
    if on_cpu:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(1)
            tf.config.threading.set_inter_op_parallelism_threads(threads or os.cpu_count() or 1)
            applied["intra_op_threads"] = 1
            applied["inter_op_threads"] = threads or os.cpu_count() or 1
        except RuntimeError:  # TensorFlow already initialised its thread pools
            applied["threads"] = "unchanged"
    return applied
