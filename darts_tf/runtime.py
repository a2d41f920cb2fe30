"""TensorFlow runtime settings chosen by measurement for the DARTS search and training steps.

The measurements behind each choice are in docs/performance.md. The search
network is many small, independent ops (14 edges x 7 ops per cell), so on CPU
single-threaded kernels run side by side (intra-op 1, inter-op = cores) rather
than multi-threaded kernels one after another; training the evaluation network
gains too (`configure_for_training`). The grappler passes switched off here
("reduced") cost start-up on the search step's graph and gave no step-time gain
(function optimisation among them: the edge functions already leave out the
gradients their callers do not use, `weight_gradients=False`); its TFG
pipeline and memory optimiser are switched off for training and for the
recurrent search and training too (`REWRITER_OPTIONS`). "off" switches
grappler off altogether. The thread settings must be made before TensorFlow
runs its first op; the graph optimisation applies to functions first run
after it is set.

Memory: the first step touches all the memory a step needs, and on a virtual
machine each 4 KiB page's first touch is costly kernel time.
`restart_with_huge_pages` re-executes the command line with glibc's
`glibc.malloc.hugetlb=1` tunable, so malloc asks for transparent huge pages
(2 MiB), far fewer faults for the same step. The commands call it first
thing; TensorFlow is imported only where it is used, so this module is
cheap to import before that.

oneDNN: TensorFlow's x86 builds call oneDNN's kernels (matrix products,
convolutions, BatchNorm) only where the CPU has AVX-512 VNNI, BF16 or AMX
features, unless `TF_ENABLE_ONEDNN_OPTS=1`; on other CPUs (AVX2 only: AMD
EPYC before Zen 4, many desktops and laptops) its own kernels ran the search
step 2.2-2.9x slower and the recurrent training step 1.1x slower
(docs/performance.md). `enable_onednn` sets the variable before TensorFlow
starts; the commands call it first thing. A value the user set is kept.

Nothing here runs on import or from the library's run functions: the
`darts-tf` commands apply these settings (`configure`, `enable_onednn`), and
so can a user's own program, explicitly.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform
import sys

from darts_tf.errors import ConfigError

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


# Grappler passes the Python API cannot switch off, which cost start-up and change nothing on CPU
# (docs/performance.md). The TFG pipeline converts every function through MLIR and back for
# control-flow sinking, which these steps (no conditionals) do not use: 0.4-1 s of a one-device
# first call, 1.5-11 s at 2 replicas, where the step's function library is larger. The memory
# optimiser estimates every graph's peak memory to decide on GPU swapping and on rewriting sums
# when a graph would fill 80 % of the device: on CPU it rewrote none of these steps' graphs,
# 0.3-1.3 s of a one-device first call, 1.9-4.9 s at 2 replicas.
REWRITER_OPTIONS = {"disable_tfg_optimizer": True, "memory_optimization": "NO_MEM_OPT"}

GRAPH_OPTIMIZATION_MODES = ("reduced", "off")


def _check_graph_optimization(mode: str) -> str:
    if mode not in GRAPH_OPTIMIZATION_MODES:
        raise ConfigError(f"`graph_optimization` must be one of {GRAPH_OPTIMIZATION_MODES}. Received: {mode!r}")
    return mode


def set_graph_optimization(mode: str = "reduced") -> str:
    """Sets grappler for the search: "reduced" (GRAPPLER_OPTIONS and REWRITER_OPTIONS) or "off" (none: a
    little sooner, more memory)."""
    import tensorflow as tf

    from darts_tf import internals

    if _check_graph_optimization(mode) == "off":
        tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": True})
    else:
        tf.config.optimizer.set_experimental_options({**GRAPPLER_OPTIONS, "disable_meta_optimizer": False})
        internals.set_rewriter_options(**REWRITER_OPTIONS)
    return mode


def limit_malloc_arenas(arenas: int = 1) -> bool:
    """Caps glibc's malloc arenas (as MALLOC_ARENA_MAX does); True if applied.

    TensorFlow's CPU tensors come from malloc. With one arena per thread,
    memory freed by one thread's kernels is not reused by another's, and the
    search step's peak resident memory grew with no gain in speed
    (docs/performance.md). Other C libraries: nothing happens.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(_M_ARENA_MAX, int(arenas)))
    except (OSError, AttributeError):
        return False


def configure_for_search(threads: int | None = None, graph_optimization: str = "reduced") -> dict:
    """Sets the search's thread pools, grappler options and malloc arenas on CPU; returns what was applied.

    `threads`: inter-op threads (default: the number of cores);
    `graph_optimization`: see `set_graph_optimization`. On a machine with a
    GPU: TensorFlow's own graph optimisation and threads (these choices were
    measured on CPU) and GPU memory growth on (`gpu_memory_growth`). If
    TensorFlow has already started, the thread settings cannot change and are
    left as they are.
    """
    import tensorflow as tf

    _check_graph_optimization(graph_optimization)
    if tf.config.list_physical_devices("GPU"):
        return gpu_memory_growth()
    applied = {}
    if limit_malloc_arenas(1):
        applied["malloc_arenas"] = 1
    applied["grappler"] = set_graph_optimization(graph_optimization)
    applied.update(_single_threaded_kernels(threads))
    return applied


def gpu_memory_growth() -> dict:
    """Lets TensorFlow take GPU memory as it needs it instead of all at once (every visible GPU).

    What was applied: {"memory_growth": [GPU names]}, or "unchanged" if TensorFlow already
    initialised its GPUs. Nothing else is changed on a GPU machine.
    """
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    try:
        for gpu in gpus:
            tf.config.experimental.set_memory_growth(gpu, True)
    except RuntimeError:  # already initialised
        return {"memory_growth": "unchanged"}
    return {"memory_growth": [gpu.name for gpu in gpus]}


def _single_threaded_kernels(threads: int | None) -> dict:
    """Intra-op 1, inter-op `threads` (default: the cores); what was applied, or "unchanged" if too late."""
    import tensorflow as tf

    inter = threads or os.cpu_count() or 1
    try:
        tf.config.threading.set_intra_op_parallelism_threads(1)
        tf.config.threading.set_inter_op_parallelism_threads(inter)
    except RuntimeError:  # TensorFlow already initialised its thread pools
        return {"threads": "unchanged"}
    return {"intra_op_threads": 1, "inter_op_threads": inter}


def configure_for_training(threads: int | None = None) -> dict:
    """Threads and grappler for training the evaluation network; returns what was applied.

    On CPU, single-threaded kernels side by side (intra-op 1, inter-op
    `threads`, default the number of cores), as for the search: the DARTS_V2
    step used less CPU time and wall time than with TensorFlow's default
    threads (docs/performance.md). If TensorFlow has already started, the
    threads are left as they are ("unchanged"). On a machine with a GPU:
    TensorFlow's defaults and GPU memory growth on, as `configure_for_search`.

    Grappler's remapper is off: it fuses each BatchNorm with the ReLU after
    it into one oneDNN kernel, which ran slower in training than the two
    apart on this network's shapes, with more peak memory
    (docs/performance.md). The search already runs without it
    (`GRAPPLER_OPTIONS`). Nor does either run grappler's TFG pipeline
    or memory optimiser (`REWRITER_OPTIONS`). Applies to functions first run after it; an
    exported SavedModel is unaffected (its server optimises it anew).
    """
    import tensorflow as tf

    from darts_tf import internals

    if tf.config.list_physical_devices("GPU"):
        return gpu_memory_growth()
    tf.config.optimizer.set_experimental_options({"remapping": False})
    internals.set_rewriter_options(**REWRITER_OPTIONS)
    applied = {"grappler": {"remapping": False, **REWRITER_OPTIONS}}
    applied.update(_single_threaded_kernels(threads))
    return applied


def configure_for_recurrent() -> dict:
    """Grappler for the recurrent search and training (`darts-tf search-rnn`, `train-rnn`); returns what
    was applied.

    On CPU, grappler without its TFG pipeline and memory optimiser (`REWRITER_OPTIONS`), every
    other pass and TensorFlow's threads as they are (the recurrent steps are large matrix
    products, not the search's many small ops). On the second-order search step's graph grappler
    took 9.3 s of the first call with them, 5.8 s without; the steps and their peak memory did not
    move beyond the noise (docs/performance.md). On a machine with a GPU: memory growth only, as
    `configure_for_search`.
    """
    import tensorflow as tf

    from darts_tf import internals

    if tf.config.list_physical_devices("GPU"):
        return gpu_memory_growth()
    internals.set_rewriter_options(**REWRITER_OPTIONS)
    return {"grappler": dict(REWRITER_OPTIONS)}


WORKLOADS = ("search", "training", "recurrent")


def configure(workload: str, threads: int | None = None, graph_optimization: str = "reduced") -> dict:
    """Applies the runtime settings measured for `workload` ("search", "training" or "recurrent"); returns
    what was applied.

    The explicit call behind `darts-tf search` / `darts-tf train` / `darts-tf search-rnn` and
    `train-rnn` (the library's `run_search`, `run_training`, `run_rnn_search` and
    `run_rnn_training` never change process-wide state themselves). Call it before TensorFlow runs
    its first op for the thread settings to take effect. "search":
    `configure_for_search(threads, graph_optimization)`; "training": `configure_for_training(threads)`;
    "recurrent": `configure_for_recurrent()` (`threads` and `graph_optimization` unused).
    """
    if workload not in WORKLOADS:
        raise ConfigError(f"runtime.configure expected a workload in {WORKLOADS}. Received: workload={workload!r}")
    if workload == "search":
        return configure_for_search(threads, graph_optimization)
    if workload == "recurrent":
        return configure_for_recurrent()
    return configure_for_training(threads)


_HUGE_PAGES_NAME = "glibc.malloc.hugetlb"
HUGE_PAGES_TUNABLE = f"{_HUGE_PAGES_NAME}=1"
HUGE_PAGES_OPT_OUT = "DARTS_TF_HUGE_PAGES"  # set to 0 to keep malloc's default pages
_THP_MODE_FILE = "/sys/kernel/mm/transparent_hugepage/enabled"


def _transparent_huge_pages_mode(path: str = _THP_MODE_FILE) -> str | None:
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except OSError:
        return None
    start, end = text.find("["), text.find("]")
    return text[start + 1 : end] if 0 <= start < end else None


def huge_pages_environment(environ=None, libc=None, thp_mode=None) -> dict | None:
    """`environ` (default `os.environ`) with `HUGE_PAGES_TUNABLE` added, or None where it changes nothing.

    None when: not glibc >= 2.35 (older ones ignore the tunable), transparent
    huge pages are off ("never") or absent, the tunable is already set, or
    `DARTS_TF_HUGE_PAGES=0` asks to keep the default pages. `libc` (name,
    version) and `thp_mode` stand in for this machine's, for tests.
    """
    environ = dict(os.environ if environ is None else environ)
    if environ.get(HUGE_PAGES_OPT_OUT, "").strip().lower() in ("0", "off", "false", "no"):
        return None
    name, version = libc if libc is not None else platform.libc_ver()
    try:
        numbers = tuple(int(part) for part in version.split(".")[:2])
    except ValueError:
        return None
    if name != "glibc" or numbers < (2, 35):
        return None
    if (thp_mode if thp_mode is not None else _transparent_huge_pages_mode()) not in ("always", "madvise"):
        return None
    tunables = environ.get("GLIBC_TUNABLES", "")
    if _HUGE_PAGES_NAME in tunables:
        return None
    environ["GLIBC_TUNABLES"] = f"{tunables}:{HUGE_PAGES_TUNABLE}" if tunables else HUGE_PAGES_TUNABLE
    return environ


def default_pages_environment(environ=None) -> dict:
    """`environ` (default `os.environ`) opted out of huge pages, its huge-page tunable (any value) removed."""
    environ = dict(os.environ if environ is None else environ)
    environ[HUGE_PAGES_OPT_OUT] = "0"
    kept = [t for t in environ.get("GLIBC_TUNABLES", "").split(":") if t and not t.startswith(_HUGE_PAGES_NAME)]
    environ["GLIBC_TUNABLES"] = ":".join(kept)
    return environ


def huge_pages_active(environ=None) -> bool:
    """Whether this process was started with malloc on transparent huge pages (`HUGE_PAGES_TUNABLE`)."""
    return HUGE_PAGES_TUNABLE in (os.environ if environ is None else environ).get("GLIBC_TUNABLES", "").split(":")


def gpu_machine(environ=None, device_paths=None) -> bool:
    """Whether an NVIDIA GPU is visible to this process, read without starting TensorFlow.

    (/dev/nvidia0, /dev/nvidia1, ... exist and CUDA_VISIBLE_DEVICES does not hide them all.)
    `device_paths` stands in for this machine's, for tests.
    """
    environ = os.environ if environ is None else environ
    if environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    if device_paths is None:
        device_paths = [p for p in (os.listdir("/dev") if os.path.isdir("/dev") else []) if p.startswith("nvidia")]
    return any(name[len("nvidia") :].isdigit() for name in (os.path.basename(p) for p in device_paths))


ONEDNN_VARIABLE = "TF_ENABLE_ONEDNN_OPTS"


def onednn_environment(environ=None, gpu: bool | None = None, machine: str | None = None) -> dict | None:
    """`environ` (default `os.environ`) with `TF_ENABLE_ONEDNN_OPTS=1`, or None where it changes nothing.

    None when the variable is already set (any value: the user's choice), on a GPU
    machine (`gpu_machine`; TensorFlow's defaults there) and on CPUs other than x86-64
    (aarch64: TensorFlow's own choice, not measured here). `gpu` and `machine`
    (`platform.machine()`) stand in for this machine's, for tests.
    """
    environ = dict(os.environ if environ is None else environ)
    if ONEDNN_VARIABLE in environ or (gpu_machine(environ) if gpu is None else gpu):
        return None
    if (platform.machine() if machine is None else machine).lower() not in ("x86_64", "amd64"):
        return None
    environ[ONEDNN_VARIABLE] = "1"
    return environ


def enable_onednn() -> bool:
    """Turns TensorFlow's oneDNN kernels on for this process where it would leave them off; True if it did.

    Sets `TF_ENABLE_ONEDNN_OPTS=1` in `os.environ` (see the module docstring), which
    TensorFlow reads when it starts: call it before `import tensorflow`. Does nothing
    where `onednn_environment()` is None or TensorFlow is already imported (too late).
    """
    if "tensorflow" in sys.modules or onednn_environment() is None:
        return False
    os.environ[ONEDNN_VARIABLE] = "1"
    return True


def onednn_active() -> bool:
    """Whether TensorFlow runs its oneDNN kernels in this process (imports TensorFlow)."""
    from tensorflow.python.util import _pywrap_util_port

    return bool(_pywrap_util_port.IsMklEnabled())


def restart_with_huge_pages() -> None:
    """Re-executes this command line with malloc on transparent huge pages (see the module docstring).

    For scripts, first thing under `if __name__ == "__main__"`: the process
    is replaced (same interpreter, options and arguments), so nothing done
    before survives. Does nothing where `huge_pages_environment()` is None,
    so the restarted process goes on without restarting again, nor on a GPU
    machine (`gpu_machine`: its step's memory is on the GPU, and the restart
    would cost a CUDA start-up).
    """
    environ = huge_pages_environment()
    if environ is None or gpu_machine() or not sys.executable or not sys.argv or sys.argv[0] in ("", "-"):
        return  # nothing to gain, or no command line to run again (interactive, script read from stdin)
    argv = [sys.executable, *getattr(sys, "orig_argv", [sys.executable, *sys.argv])[1:]]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, argv, environ)
