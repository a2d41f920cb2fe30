"""Latency on the device: per-unit tables measured with LiteRT, whole networks measured, tables checked.

`measure_table` converts every unit of an evaluation network (`darts_tf.cnn.cost`: each candidate
op at each edge shape, and the fixed parts) on its own into a LiteRT model, through the same
SavedModel -> converter path the network's export takes (BatchNorms folded into the convolutions,
ReLUs fused where the converter fuses them), and times it with the LiteRT interpreter at batch 1:
the median over `repeats` timed loops. The interpreter's fixed cost per call (the "invoke" unit,
timed on a one-number model) is taken out of every other unit and counted once per network.

Measuring on a phone: `write_unit_models` writes the same unit models, a manifest and a script
that runs LiteRT's `benchmark_model` on each over adb; `import_benchmark_logs` reads its logs
into a table (docs/hardware-aware.md).

`network_latency` measures a whole derived network exported as users export it (uint8 images
in), and `check_table` compares a table's predictions with such measurements over random cells.
"""

from __future__ import annotations

import json
import os
import platform
import re
import tempfile
import time
from collections.abc import Callable, Sequence

import keras
import numpy as np
import tensorflow as tf

from darts_tf.cnn.cost import INVOKE, CostModel, LatencyTable, Unit
from darts_tf.cnn.eval_model import NetworkCIFAR, inference_model
from darts_tf.cnn.genotypes import Genotype
from darts_tf.cnn.ops import BatchNorm, Conv2D, FactorizedReduce, ReLUConvBN, build_op, make_op
from darts_tf.cnn.space import SearchSpace
from darts_tf.errors import ConfigError, ExportError
from darts_tf.export.formats import _interpreter_class, tflite_float
from darts_tf.export.saved_model import export_saved_model
from darts_tf.files import atomic_directory

MANIFEST = "manifest.json"
_BENCHMARK_LINE = re.compile(r"Inference \(avg\):\s*([0-9.eE+-]+)")


# -- units as LiteRT models ------------------------------------------------------------------------


def _unit_outputs(unit: Unit, x, space: SearchSpace):
    if unit.kind == "stem":
        # the served network's input: uint8 pixels, normalised inside
        x = (keras.ops.cast(x, "float32") / 255.0 - 0.5) / 0.25
        return BatchNorm(name="stem_bn")(Conv2D(unit.c_out, 3, name="stem_conv")(x), training=False)
    if unit.kind == "preprocess":
        return ReLUConvBN(unit.c_out, 1, 1, name="preprocess")(x, training=False)
    if unit.kind == "factorized_reduce":
        return FactorizedReduce(unit.c_out, name="factorized_reduce")(x, training=False)
    if unit.kind == "resblock":
        from darts_tf.nb201.model import ResNetBlock

        return ResNetBlock(unit.c_out, name="resblock")(x, training=False)
    if unit.kind == "combine":
        return _combine(unit, x, space)
    if unit.kind == "head":
        if unit.extra:  # NAS-Bench-201's last BN + ReLU
            x = keras.layers.ReLU()(BatchNorm(name="lastact_bn")(x, training=False))
        logits = keras.layers.Dense(unit.c_out, name="classifier")(keras.layers.GlobalAveragePooling2D()(x))
        return [logits, keras.layers.Softmax()(logits), keras.layers.Lambda(lambda t: tf.argmax(t, axis=-1))(logits)]
    if unit.kind == "invoke":
        return x + 1.0
    op = make_op(unit.kind, unit.c_in, unit.stride, affine=True, name="op")
    build_op(unit.kind, op, (1, unit.height, unit.width, unit.c_in), unit.stride)
    return op(x, training=False)


def _combine(unit: Unit, x, space: SearchSpace):
    """A cell's node sums (and DARTS's concatenation) on the cell's output size: `extra` nodes."""
    if space.cell == "nb201":  # node j sums j terms: 0 + 1 + 2 additions
        nodes = [x]
        for j in range(1, unit.extra + 1):
            total = nodes[0]
            for i in range(1, j):
                total = total + nodes[i]
            nodes.append(total if j > 1 else x * 1.5)
        return nodes[-1]
    nodes, t = [], x
    for _ in range(unit.extra):
        t = t + x if space.inputs_per_node > 1 else t * 1.5
        nodes.append(t)
    return keras.ops.concatenate(nodes[-(unit.c_out // unit.c_in) :], axis=-1)


def unit_model(unit: Unit, space: SearchSpace) -> keras.Model:
    """A Keras model of `unit` alone at batch 1 (random weights; inference mode)."""
    shape = (1, 1, 1) if unit.kind == "invoke" else (unit.height, unit.width, unit.c_in)
    dtype = "uint8" if unit.kind == "stem" else "float32"
    inputs = keras.Input(shape, batch_size=1, dtype=dtype, name="x")
    outputs = _unit_outputs(unit, inputs, space)
    return keras.Model(inputs, outputs, name="unit")


def tflite_of(model: keras.Model) -> bytes:
    """`model` as a float LiteRT model through a SavedModel, as exports are converted (variables frozen,
    BatchNorms folded)."""
    network = inference_model(model)
    spec = [tf.TensorSpec(network.input.shape, network.input.dtype, name="x")]
    archive = keras.export.ExportArchive()
    archive.track(network)
    archive.add_endpoint("serving_default", lambda x: network(x, training=False), input_signature=spec)
    with tempfile.TemporaryDirectory(prefix="darts_tf_unit_") as folder:
        archive.write_out(folder, verbose=False)
        return tflite_float(folder)


# -- timing ----------------------------------------------------------------------------------------------


def time_tflite(model, threads: int = 1, repeats: int = 15, min_seconds: float = 0.02) -> float:
    """Median latency in milliseconds of one call of a LiteRT model (bytes or a .tflite path) at batch 1.

    Random inputs (zeros for integer inputs' rows beyond the data); 3 warm-up calls; then
    `repeats` loops, each calling the model as many times as fill about `min_seconds`.
    """
    kwargs = {"model_content": model} if isinstance(model, (bytes, bytearray)) else {"model_path": os.fspath(model)}
    if "model_path" in kwargs and not os.path.isfile(kwargs["model_path"]):
        raise ExportError(f"No LiteRT model at {kwargs['model_path']!r}")
    if threads <= 0 or repeats <= 0:
        raise ConfigError(f"`threads` and `repeats` must be positive. Received: {threads}, {repeats}")
    interpreter = _interpreter_class()(**kwargs, num_threads=threads)
    interpreter.allocate_tensors()
    rng = np.random.default_rng(0)
    for detail in interpreter.get_input_details():
        shape = [1 if n < 0 else int(n) for n in detail["shape_signature"]]
        if list(detail["shape"]) != shape:
            interpreter.resize_tensor_input(detail["index"], shape)
            interpreter.allocate_tensors()
        dtype = detail["dtype"]
        if np.issubdtype(dtype, np.integer):
            value = rng.integers(0, 127, size=shape).astype(dtype)
        else:
            value = rng.standard_normal(shape).astype(dtype)
        interpreter.set_tensor(detail["index"], value)
    invoke = interpreter.invoke
    for _ in range(3):
        invoke()
    start = time.perf_counter()
    invoke()
    single = max(time.perf_counter() - start, 1e-7)
    calls = max(1, int(min_seconds / single))
    timings = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            invoke()
        timings.append((time.perf_counter() - start) / calls)
    return float(np.median(timings) * 1e3)


def litert_version() -> str:
    from importlib import metadata

    for name in ("ai-edge-litert", "tensorflow"):
        try:
            return f"{name} {metadata.version(name)}"
        except metadata.PackageNotFoundError:
            continue
    return ""


def device_name() -> str:
    model = ""
    try:
        with open("/proc/cpuinfo") as handle:
            model = next((line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")), "")
    except OSError:
        pass
    return f"{platform.system()} {platform.machine()} {model}".strip()


def measure_table(
    cost_model: CostModel, threads: int = 1, repeats: int = 15, progress: Callable[[str], None] | None = None
) -> LatencyTable:
    """A `LatencyTable` of every unit of `cost_model`'s network, timed here with the LiteRT interpreter."""
    units = cost_model.units()
    raw = {}
    for index, unit in enumerate(units):
        raw[unit] = time_tflite(tflite_of(unit_model(unit, cost_model.space)), threads, repeats)
        if progress:
            progress(f"[{index + 1}/{len(units)}] {unit.key}: {raw[unit]:.4f} ms")
    overhead = raw.pop(INVOKE)
    entries = {INVOKE.key: overhead} | {u.key: max(ms - overhead, 0.0) for u, ms in raw.items()}
    return LatencyTable(
        entries, cost_model.network, device=device_name(), threads=threads, runtime="litert",
        litert=litert_version(), repeats=repeats,
    )  # fmt: skip


# -- a phone's benchmark_model -----------------------------------------------------------------------------


def write_unit_models(cost_model: CostModel, folder: str, threads: int = 1) -> str:
    """Writes every unit's .tflite, a manifest ({file: unit key}, the network) and `run_on_device.sh`
    (adb + LiteRT's benchmark_model, one log per model) into `folder`, atomically."""
    units = cost_model.units()
    with atomic_directory(folder) as tmp:
        files = {}
        for index, unit in enumerate(units):
            name = f"unit_{index:04d}.tflite"
            with open(os.path.join(tmp, name), "wb") as handle:
                handle.write(tflite_of(unit_model(unit, cost_model.space)))
            files[name] = unit.key
        with open(os.path.join(tmp, MANIFEST), "w") as handle:
            json.dump({"network": cost_model.network, "threads": threads, "files": files}, handle, indent=1)
        with open(os.path.join(tmp, "run_on_device.sh"), "w") as handle:
            handle.write(_DEVICE_SCRIPT.replace("THREADS", str(threads)))
    return folder


_DEVICE_SCRIPT = """#!/usr/bin/env bash
# Runs LiteRT's benchmark_model on every unit model on an Android device over adb and writes
# logs/<model>.log here; then: darts-tf latency-table --import-logs <this folder> --out table.json
# BENCHMARK: benchmark_model's path on the device (push it first, see docs/hardware-aware.md).
set -euo pipefail
cd "$(dirname "$0")"
BENCHMARK="${BENCHMARK:-/data/local/tmp/benchmark_model}"
DEVICE_DIR="${DEVICE_DIR:-/data/local/tmp/darts_tf_units}"
mkdir -p logs
adb shell mkdir -p "$DEVICE_DIR"
for model in unit_*.tflite; do
    adb push -q "$model" "$DEVICE_DIR/$model" >/dev/null
    adb shell "$BENCHMARK" --graph="$DEVICE_DIR/$model" --num_threads=THREADS --warmup_runs=5 --num_runs=50 \\
        > "logs/${model%.tflite}.log" 2>&1
done
"""


def import_benchmark_logs(folder: str, device: str = "") -> LatencyTable:
    """A `LatencyTable` from `write_unit_models`'s folder after `run_on_device.sh`: each unit's
    "Inference (avg)" of benchmark_model (microseconds) from logs/<model>.log."""
    try:
        with open(os.path.join(folder, MANIFEST)) as handle:
            manifest = json.load(handle)
        files, network = manifest["files"], manifest["network"]
    except FileNotFoundError:
        raise ConfigError(f"`import_logs`: no {MANIFEST} in {folder!r} (write it with --emit-models)") from None
    except (json.JSONDecodeError, KeyError, TypeError):
        raise ConfigError(f"`import_logs`: {os.path.join(folder, MANIFEST)!r} is not a unit manifest") from None
    raw = {}
    for name, key in files.items():
        log = os.path.join(folder, "logs", name.removesuffix(".tflite") + ".log")
        try:
            with open(log, errors="replace") as handle:
                found = _BENCHMARK_LINE.findall(handle.read())
        except FileNotFoundError:
            raise ConfigError(f"`import_logs`: no log for {key!r} at {log!r} (run run_on_device.sh)") from None
        if not found:
            raise ConfigError(f"`import_logs`: {log!r} has no 'Inference (avg): ...' line of benchmark_model")
        raw[key] = float(found[-1]) / 1e3
    overhead = raw.pop(INVOKE.key, 0.0)
    entries = {INVOKE.key: overhead} | {k: max(ms - overhead, 0.0) for k, ms in raw.items()}
    return LatencyTable(
        entries, network, device=device or "benchmark_model", threads=int(manifest.get("threads", 1)),
        runtime="benchmark_model", litert="",
    )  # fmt: skip


# -- whole networks ----------------------------------------------------------------------------------------


def network_model(cost_model: CostModel, genotype, seed: int = 0) -> keras.Model:
    """The evaluation network of `genotype` at the cost model's size (no auxiliary head), random weights."""
    keras.utils.set_random_seed(seed)
    if cost_model.space.cell == "nb201":
        from darts_tf.nb201.model import Nb201Network

        return Nb201Network(genotype, C=cost_model.C, cells=cost_model.layers, num_classes=cost_model.num_classes,
                            input_shape=cost_model.image_shape)  # fmt: skip
    return NetworkCIFAR(cost_model.C, cost_model.num_classes, cost_model.layers, auxiliary=False, genotype=genotype,
                        input_shape=cost_model.image_shape)  # fmt: skip


def network_tflite(cost_model: CostModel, genotype, seed: int = 0) -> bytes:
    """The float LiteRT model of `genotype`'s network exported as `darts-tf export --format tflite` does."""
    model = network_model(cost_model, genotype, seed)
    channels = cost_model.image_shape[-1]
    with tempfile.TemporaryDirectory(prefix="darts_tf_network_") as folder:
        path = export_saved_model(model, folder, [0.5] * channels, [0.25] * channels, version=1)
        return tflite_float(path)


def network_latency(cost_model: CostModel, genotype, threads: int = 1, repeats: int = 15) -> float:
    """Measured latency (ms, batch 1) of `genotype`'s exported network with the LiteRT interpreter."""
    return time_tflite(network_tflite(cost_model, genotype), threads, repeats)


def random_genotypes(cost_model: CostModel, count: int, seed: int = 0) -> list:
    """`count` distinct random derived cells of the cost model's space (each node's inputs and ops uniform;
    never `none` in a DARTS cell)."""
    rng = np.random.default_rng(seed)
    space = cost_model.space
    ops = [op for op in space.primitives if op != space.none] if space.cell == "darts" else list(space.primitives)
    found, attempts = {}, 0
    while len(found) < count and attempts < 100 * count:
        attempts += 1
        if space.cell == "nb201":
            from darts_tf.nb201.genotypes import Nb201Genotype

            genotype = Nb201Genotype(tuple(str(o) for o in rng.choice(ops, space.num_edges)))
        else:
            cells = []
            for _ in range(2):
                edges = []
                for node in range(space.steps):
                    for source in sorted(rng.choice(2 + node, space.inputs_per_node, replace=False)):
                        edges.append((str(rng.choice(ops)), int(source)))
                cells.append(edges)
            concat = list(range(2 + space.steps - space.multiplier, 2 + space.steps))
            genotype = Genotype(cells[0], concat, cells[1], concat, inputs_per_node=space.inputs_per_node)
        found.setdefault(repr(genotype), genotype)
    return list(found.values())


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman rank correlation (average ranks for ties)."""

    def ranks(x):
        x = np.asarray(x, float)
        order = np.argsort(x, kind="stable")
        r = np.empty(len(x))
        r[order] = np.arange(len(x))
        for value in np.unique(x):
            tied = x == value
            r[tied] = r[tied].mean()
        return r

    ra, rb = ranks(a), ranks(b)
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def _measure_network(network: dict, genotype: dict, threads: int, repeats: int, ops_module: str | None) -> float:
    """`network_latency` of a genotype's network in this (fresh) process: see `check_table`."""
    from darts_tf.cnn.space import SearchSpace
    from darts_tf.config import import_ops_module

    import_ops_module(ops_module)
    space = SearchSpace.from_dict(network["space"])
    model = CostModel(space, network["C"], network["layers"], network["image_shape"], network["num_classes"])
    if space.cell == "nb201":
        from darts_tf.nb201.genotypes import Nb201Genotype

        genotype = Nb201Genotype.from_dict(genotype)
    else:
        genotype = Genotype.from_dict(genotype)
    return network_latency(model, genotype, threads, repeats)


def check_table(
    cost_model: CostModel, count: int = 20, seed: int = 0, threads: int | None = None, repeats: int = 15,
    progress: Callable[[str], None] | None = None, ops_module: str | None = None,
) -> dict:  # fmt: skip
    """Predicted (the table) against measured latency of `count` random derived networks:
    {"rows": [{"genotype", "predicted_ms", "measured_ms"}], "spearman", "mean_abs_error" (relative), ...}.

    Each network is exported and timed in a fresh Python process (spawned; `ops_module` is imported there for
    ops of yours): TensorFlow keeps every loaded SavedModel's functions for the life of a process, about 1 GB
    per 20-cell network, and timing in a fresh process also leaves this one's allocations out of the timings.
    """
    import concurrent.futures
    import multiprocessing

    if cost_model.table is None:
        raise ConfigError("check_table needs a cost model with a latency table")
    threads = threads or cost_model.table.threads
    context = multiprocessing.get_context("spawn")
    rows = []
    for index, genotype in enumerate(random_genotypes(cost_model, count, seed)):
        predicted = cost_model.of_genotype(genotype)["latency"]
        with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=context) as child:
            job = child.submit(_measure_network, cost_model.network, genotype.to_dict(), threads, repeats, ops_module)
            measured = job.result()
        rows.append({"genotype": genotype.to_dict(), "predicted_ms": predicted, "measured_ms": measured})
        if progress:
            progress(f"[{index + 1}/{count}] predicted {predicted:.3f} ms, measured {measured:.3f} ms")
    predicted = np.array([r["predicted_ms"] for r in rows])
    measured = np.array([r["measured_ms"] for r in rows])
    return {
        "rows": rows,
        "spearman": spearman(predicted, measured),
        "mean_abs_error": float(np.mean(np.abs(predicted - measured) / measured)),
        "mean_error": float(np.mean((predicted - measured) / measured)),
        "threads": threads,
    }


def measure_search_result(run_dir: str, repeats: int = 15) -> dict:
    """The kept genotype of a search run with a latency table, exported at the table's network size and
    timed with the LiteRT interpreter at the table's threads; written to RUN_DIR/latency.json.

    A table imported from a device (runtime "benchmark_model") is not timed here (another device):
    only the prediction is written.
    """
    from darts_tf.cnn.search import search_cost_model
    from darts_tf.cnn.train import read_genotype
    from darts_tf.config import SearchConfig, config_from_dict, import_ops_module
    from darts_tf.runs import write_json_atomic

    with open(os.path.join(run_dir, "config.json"), encoding="utf-8") as handle:
        values = json.load(handle)
    config = config_from_dict(SearchConfig, values)
    import_ops_module(config.ops_module)
    table = LatencyTable.load(config.latency_table)
    cost_model = search_cost_model(config, table.network["image_shape"], int(table.network["num_classes"]))
    genotype = read_genotype(os.path.join(run_dir, "genotype.json"))
    result = {
        "genotype": genotype.to_dict(), "predicted_ms": cost_model.of_genotype(genotype)["latency"],
        "budget_ms": config.latency_budget or None, "threads": table.threads, "table": config.latency_table,
        "network": cost_model.network,
    }  # fmt: skip
    if table.runtime != "litert":
        result |= {"measured_ms": None, "note": f"the table was measured on {table.device or 'another device'}"}
    else:
        result["measured_ms"] = network_latency(cost_model, genotype, table.threads, repeats)
        result["device"] = device_name()
    write_json_atomic(os.path.join(run_dir, "latency.json"), result)
    return result
