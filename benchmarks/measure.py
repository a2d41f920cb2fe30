"""Measurements behind `darts-tf benchmark`: step times, start-up, memory, throughput, FLOPs.

Each measurement runs in its own process (the script starts one per
configuration) so that peak resident memory and time to first step belong
to that configuration alone. The search step is run through Keras's own
`train_function` (the function `fit` calls), so what is timed is what a
search runs.
"""

from __future__ import annotations

import functools
import json
import os
import platform
import statistics
import tempfile
import time

import numpy as np

from darts_tf.runtime import huge_pages_active, onednn_active

# The original's step, seconds and peak RSS in GiB, for the table's "original (stored)" column, by the kind of
# CPU it was measured on (`cpu_kind`): quark0/darts cnn/ and rnn/ on PyTorch 2.13 CPU, 2 threads, .cuda() a no-op,
# measured side by side with darts_tf (docs/performance.md). The original's own times vary by up to 25 % between
# windows, and by 2-3x between kinds of CPU: compare with a run of the original in the same window.
ORIGINAL_BY_CPU = {
    # 2-core AMD EPYC with AVX-512: the search and recurrent rows on 2026-12-05, the others on an earlier day.
    "avx512": {
        ("search", "first", 16): {"seconds": 3.35, "rss_gib": 2.58},
        ("search", "first", 32): {"seconds": 6.93, "rss_gib": 4.78},
        ("search", "first", 64): {"seconds": 13.86, "rss_gib": 9.21},
        ("search", "second", 16): {"seconds": 9.35, "rss_gib": 3.37},
        ("search", "second", 32): {"seconds": 16.05, "rss_gib": 6.33},
        ("search", "second", 64): {"seconds": 33.27, "rss_gib": 12.4},
        ("eval_train", None, 32): {"seconds": 2.78},
        ("eval_train", None, 96): {"seconds": 9.17, "rss_gib": 8.0},
        ("serve", None, 32): {"images_per_s": 39.0},
        ("serve", None, 96): {"images_per_s": 30.0},
        ("serve", None, 256): {"images_per_s": 13.0},
        # The original's rnn/ code (its model, model_search and architect modules), the same synthetic
        # 10,000-word batches (docs/recurrent.md).
        ("rnn_search", "first", 256): {"seconds": 9.68, "rss_gib": 7.69},
        ("rnn_search", "second", 256): {"seconds": 22.33, "rss_gib": 8.09},
        ("rnn_train", None, 64): {"seconds": 2.35, "rss_gib": 1.17},
    },
    # 2-core AMD EPYC with AVX2 only, 2026-12-07 (performance.md, "On a CPU with AVX2 only"): the search rows
    # in one window, the recurrent rows in another.
    "avx2": {
        ("search", "first", 16): {"seconds": 9.23, "rss_gib": 2.57},
        ("search", "first", 32): {"seconds": 16.01, "rss_gib": 4.78},
        ("search", "first", 64): {"seconds": 36.42, "rss_gib": 9.21},
        ("search", "second", 16): {"seconds": 20.11, "rss_gib": 3.37},
        ("search", "second", 32): {"seconds": 43.98, "rss_gib": 6.37},
        ("search", "second", 64): {"seconds": 87.45, "rss_gib": 12.25},
        ("rnn_search", "first", 256): {"seconds": 21.10, "rss_gib": 7.64},
        ("rnn_search", "second", 256): {"seconds": 58.37, "rss_gib": 8.11},
        ("rnn_train", None, 64): {"seconds": 5.74, "rss_gib": 1.21},
    },
}
ORIGINAL_HOSTS = {
    "avx512": "a 2-core AMD EPYC with AVX-512",
    "avx2": "a 2-core AMD EPYC with AVX2 only",
}


def cpu_kind(flags: set[str] | None = None) -> str:
    """ "avx512", "avx2" or "other": which stored original rows fit this CPU (`flags`: /proc/cpuinfo's)."""
    if flags is None:
        flags = set((_cpuinfo("flags") or "").split())
    if "avx512f" in flags:
        return "avx512"
    return "avx2" if "avx2" in flags else "other"


# FLOPs per multiply-accumulate of the ops counted (convolutions and matmuls, forward and backward).
_CONV_OPS = {
    "Conv2D",
    "Conv2DBackpropInput",
    "Conv2DBackpropFilter",
    "DepthwiseConv2dNative",
    "DepthwiseConv2dNativeBackpropInput",
    "DepthwiseConv2dNativeBackpropFilter",
}


def peak_rss_gib() -> float:
    """This process's peak resident set size (VmHWM) in GiB."""
    try:
        with open("/proc/self/status", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 2**20
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def setup_device(device: str) -> str:
    """Pins TensorFlow to "cpu" (hides GPUs) or "gpu"; returns the device string to place ops on."""
    import tensorflow as tf

    if device == "cpu":
        tf.config.set_visible_devices([], "GPU")
        return "/CPU:0"
    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        raise RuntimeError("--device gpu: TensorFlow sees no GPU")
    for gpu in gpus:
        tf.config.experimental.set_memory_growth(gpu, True)
    return "/GPU:0"


def environment(device: str) -> dict:
    import tensorflow as tf

    info = {
        "tensorflow": tf.__version__,
        "keras": __import__("keras").__version__,
        "device": device,
        "cpu": _cpu_model(),
        "cpu_cores": os.cpu_count(),
        "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads() or os.cpu_count(),
        "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads() or os.cpu_count(),
        "python": platform.python_version(),
        "malloc_huge_pages": huge_pages_active(),
        "onednn": onednn_active(),
        "cpu_kind": cpu_kind(),
    }
    if device == "gpu":
        gpus = tf.config.list_physical_devices("GPU")
        details = tf.config.experimental.get_device_details(gpus[0])
        info["gpu"] = details.get("device_name", "GPU")
        info["gpu_count"] = len(gpus)
        info["compute_capability"] = list(details.get("compute_capability") or ())
    return info


@functools.cache
def _cpuinfo(field: str) -> str | None:
    """The first `field` of /proc/cpuinfo (read once per field), or None."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith(field):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def _cpu_model() -> str:
    return _cpuinfo("model name") or platform.processor() or "unknown"


def _live_ops(graph, fetches) -> list:
    """Ops that run when `fetches` (tensors and ops) are computed: the graph pruned as the runtime does."""
    seen, stack, live = set(), [t.op if hasattr(t, "op") else t for t in fetches], []
    while stack:
        op = stack.pop()
        if op.name in seen:
            continue
        seen.add(op.name)
        live.append(op)
        stack.extend(t.op for t in op.inputs)
        stack.extend(op.control_inputs)
    return live


def _shape(tensor) -> list:
    return [int(d) if d is not None else 0 for d in tensor.shape]


def op_flops(op) -> int:
    """2 x multiply-accumulates of a convolution or matmul op (0 for every other op)."""
    if op.type in ("MatMul", "BatchMatMulV2"):
        out = _shape(op.outputs[0])
        a = _shape(op.inputs[0])
        k = a[-2] if op.get_attr("transpose_a" if op.type == "MatMul" else "adj_x") else a[-1]
        return 2 * int(np.prod(out)) * k
    if op.type not in _CONV_OPS:
        return 0
    if op.type.endswith("BackpropInput"):
        grad = op.inputs[2]  # out_backprop: the forward output's shape
        fwd_out = _shape(grad)
        filt = _shape(op.inputs[1])
    elif op.type.endswith("BackpropFilter"):
        fwd_out = _shape(op.inputs[2])
        filt = _shape(op.outputs[0])
    else:
        fwd_out = _shape(op.outputs[0])
        filt = _shape(op.inputs[1])
    n, h, w = fwd_out[0], fwd_out[1], fwd_out[2]
    kh, kw, cin, mult = filt
    if op.type.startswith("Depthwise"):
        return 2 * n * h * w * kh * kw * cin * mult
    return 2 * n * h * w * kh * kw * cin * mult  # mult = output channels for a dense conv


def function_flops(concrete) -> int:
    """Convolution and matmul FLOPs that a traced tf.function executes (pruned to its outputs and side effects)."""
    graph = concrete.graph
    fetches = list(graph.outputs) + list(getattr(graph, "control_outputs", []))
    return sum(op_flops(op) for op in _live_ops(graph, fetches))


def matmul_roof(device: str, size: int = 2048, repeats: int = 5) -> float:
    """GFLOP/s of a large float32 matmul on `device`: the practical peak the step's FLOP/s are set against."""
    import tensorflow as tf

    with tf.device(device):
        a = tf.random.normal([size, size])
        b = tf.random.normal([size, size])
        matmul = tf.function(lambda x, y: tf.reduce_sum(tf.matmul(x, y)))
        matmul(a, b).numpy()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            matmul(a, b).numpy()
            times.append(time.perf_counter() - start)
    return 2 * size**3 / min(times) / 1e9


def _sync(outputs) -> None:
    import tensorflow as tf

    for value in tf.nest.flatten(outputs):
        if hasattr(value, "numpy"):
            value.numpy()


def _timed_steps(step, steps: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        _sync(step())
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        _sync(step())
        times.append(time.perf_counter() - start)
    return times


def _summary(times: list[float], batch: int) -> dict:
    median = statistics.median(times)
    return {
        "median_s": median,
        "min_s": min(times),
        "images_per_s": batch / median,
        "times_s": times,
    }


# Search variants of the benchmark's search rows: SearchConfig fields beside plain DARTS.
VARIANTS = {
    "plain": {},
    "pcdarts": {"partial_channels": 4, "edge_normalization": True},
    "nb201": {"space": "nb201", "nesterov": True, "weight_decay": 5e-4},  # `layers`: cells per stage
}


def _search_model(
    C: int, layers: int, order: str, shared_trace: bool = True, variant: str = "plain", size: int = 32,
    precision: str = "float32",
):  # fmt: skip
    from darts_tf.cnn.search import SearchConfig, build_search
    from darts_tf.optimizers import learning_rate_schedule

    class Source:  # only what build_search reads
        num_classes = 10
        input_shape = (size, size, 3)

    config = SearchConfig(
        C=C, layers=layers, unrolled=order == "second", shared_trace=shared_trace, precision=precision,
        **VARIANTS[variant],
    )  # fmt: skip
    return build_search(config, Source(), learning_rate_schedule(config, 390))


def _batches(batch: int, count: int, seed: int = 0, size: int = 32):
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        x = tf.constant(rng.normal(size=(batch, size, size, 3)).astype("float32"))
        y = tf.constant(rng.integers(0, 10, size=batch).astype("int32"))
        out.append((x, y))
    return out


def bench_search(
    order: str, batch: int, C: int, layers: int, steps: int, warmup: int, t0: float, device: str, variant="plain",
    precision: str = "float32",
) -> dict:  # fmt: skip
    """A search step (architecture step + weight step) through Keras's train_function."""
    import tensorflow as tf

    with tf.device(device):
        search = _search_model(C, layers, order, variant=variant, precision=precision)
        train, val = _batches(batch, 2)
        data = tf.data.Dataset.from_tensors((train, val)).repeat()
        iterator = iter(data)
        search.make_train_function()
        train_function = search.train_function
        built = time.time()
        _sync(train_function(iterator))
        first = time.time()
        times = _timed_steps(lambda: train_function(iterator), steps, warmup)
    result = {"first_step_s": first - t0, "build_s": built - t0, **_summary(times, batch)}
    result["peak_rss_gib"] = peak_rss_gib()
    if device.startswith("/GPU"):
        result["peak_gpu_gib"] = tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2**30
    return result


def search_step_flops(order: str, C: int, layers: int, batch: int = 2) -> int:
    """FLOPs of one search step at batch `batch` (convs + matmuls, from the traced and pruned graph)."""
    import tensorflow as tf

    # Counted on the plain (inlined) edges: one flat graph that pruning sees whole;
    # the shared out-of-line edge functions compute the same ops.
    search = _search_model(C, layers, order, shared_trace=False)
    spec = (tf.TensorSpec([batch, 32, 32, 3], tf.float32), tf.TensorSpec([batch], tf.int32))
    concrete = tf.function(search.train_step).get_concrete_function((spec, spec))
    return function_flops(concrete)


def _eval_network(auxiliary: bool = True, precision: str = "float32"):
    from darts_tf.cnn.eval_model import NetworkCIFAR
    from darts_tf.cnn.genotypes import DARTS_V2

    return NetworkCIFAR(36, 10, 20, auxiliary, DARTS_V2, dtype=precision)


def bench_eval_train(batch: int, steps: int, warmup: int, t0: float, device: str, precision: str = "float32") -> dict:
    """A training step of DARTS_V2 (C=36, 20 cells, auxiliary 0.4, drop path 0.2) through Keras's train_function."""
    import tensorflow as tf

    from darts_tf.cnn.train import TrainConfig, build_trainer, drop_path_variables
    from darts_tf.optimizers import learning_rate_schedule

    with tf.device(device):
        network = _eval_network(precision=precision)
        for rate in drop_path_variables(network):
            rate.assign(0.2)
        config = TrainConfig(precision=precision)  # float16: the trainer scales the loss
        trainer = build_trainer(config, network, learning_rate_schedule(config, 520))
        return _time_training(trainer, _batches(batch, 1)[0], steps, warmup, t0)


def _time_training(trainer, batch: tuple, steps: int, warmup: int, t0: float) -> dict:
    """Steps of `trainer` through Keras's train_function on one repeated (images, labels) batch."""
    import tensorflow as tf

    iterator = iter(tf.data.Dataset.from_tensors(batch).repeat())
    trainer.make_train_function()
    train_function = trainer.train_function
    _sync(train_function(iterator))
    first = time.time()
    times = _timed_steps(lambda: train_function(iterator), steps, warmup)
    return {"first_step_s": first - t0, **_summary(times, len(batch[1])), "peak_rss_gib": peak_rss_gib()}


def bench_imagenet_train(batch: int, steps: int, warmup: int, t0: float, device: str) -> dict:
    """A training step of DARTS_V2 in the ImageNet mobile setting (NetworkImageNet C=48, 14 cells, 224 px, 1000
    classes, auxiliary 0.4, label smoothing 0.1: `--preset imagenet`) through Keras's train_function."""
    import tensorflow as tf

    from darts_tf.cnn.eval_model import NetworkImageNet
    from darts_tf.cnn.genotypes import DARTS_V2
    from darts_tf.cnn.train import TrainConfig, build_trainer
    from darts_tf.config import TRAIN_PRESETS
    from darts_tf.optimizers import learning_rate_schedule

    config = TrainConfig(**TRAIN_PRESETS["imagenet"])
    with tf.device(device):
        network = NetworkImageNet(config.C, 1000, config.layers, True, DARTS_V2)
        trainer = build_trainer(config, network, learning_rate_schedule(config, 10000))
        rng = np.random.default_rng(0)
        images = tf.constant(rng.normal(size=(batch, 224, 224, 3)).astype("float32"))
        labels = tf.constant(rng.integers(0, 1000, size=batch).astype("int32"))
        return _time_training(trainer, (images, labels), steps, warmup, t0)


def _jpeg_folder(root: str, height: int, width: int, per_class: int, classes: int = 4) -> str:
    """train/ and test/ folders of JPEGs of natural-image-like content (smooth colour fields plus noise)."""
    import tensorflow as tf

    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:height, 0:width] / max(height, width)
    for split in ("train", "test"):
        for label in range(classes):
            folder = os.path.join(root, split, f"class_{label}")
            os.makedirs(folder, exist_ok=True)
            for i in range(per_class if split == "train" else 1):
                phase = rng.uniform(0, 6.28, size=3)
                field = 127 + 100 * np.sin(6 * x[..., None] + 4 * y[..., None] + phase)
                image = np.clip(field + rng.normal(0, 12, size=field.shape), 0, 255).astype(np.uint8)
                tf.io.write_file(os.path.join(folder, f"{i}.jpg"), tf.io.encode_jpeg(image, quality=90))
    return root


def bench_folder(size: int, batch: int, files: int = 256, epochs: int = 3) -> dict:
    """Images/s of the streamed image-folder pipeline: JPEG decode + the training augmentation + normalise.

    32 px: 32x32 JPEGs, CIFAR augmentation (pad-4 crop, flip, cutout 16). 224 px: 500x375
    JPEGs (ImageNet's typical size), ImageNet augmentation (random-resized crop, flip, colour jitter).
    """
    from darts_tf import data

    imagenet = size > 64
    height, width = (375, 500) if imagenet else (size, size)
    with tempfile.TemporaryDirectory() as root:
        _jpeg_folder(root, height, width, files // 4)
        source = data.load_data(data_dir=root, image_size=size, stream=True)
        kwargs = {"augmentation": "imagenet"} if imagenet else {"cutout_length": 16}
        counts, seconds = 0, 0.0
        for epoch in range(epochs):  # the first epoch warms up (tracing, thread pools)
            ds = data.epoch_dataset(source.train_images, source.train_labels, batch, source.mean, source.std, 0,
                                    epoch, **kwargs).prefetch(2)  # fmt: skip
            start = time.perf_counter()
            n = sum(int(x.shape[0]) for x, _ in ds)
            if epoch:
                counts, seconds = counts + n, seconds + time.perf_counter() - start
    return {"images_per_s": counts / seconds, "file_shape": [height, width, 3]}


def export_for_serving(path: str) -> str:
    """Exports a DARTS_V2 CIFAR network (random weights: throughput does not depend on them)."""
    from darts_tf.data import CIFAR_MEAN, CIFAR_STD
    from darts_tf.export import export_saved_model

    return export_saved_model(_eval_network(), path, CIFAR_MEAN, CIFAR_STD, version=1, overwrite=True)


def bench_serve(saved_model: str, batch: int, steps: int, warmup: int, t0: float, device: str) -> dict:
    """Inference through the exported SavedModel's serving_default signature on uint8 images."""
    import tensorflow as tf

    with tf.device(device):
        serve = tf.saved_model.load(saved_model).signatures["serving_default"]
        images = tf.constant(np.random.default_rng(0).integers(0, 256, size=(batch, 32, 32, 3), dtype=np.uint8))
        _sync(serve(images=images))
        first = time.time()
        times = _timed_steps(lambda: serve(images=images), steps, warmup)
    return {"first_step_s": first - t0, **_summary(times, batch), "peak_rss_gib": peak_rss_gib()}


def bench_deploy(saved_model: str, batches: list[int], steps: int, warmup: int, calibration: int = 100) -> dict:
    """Latency (batch 1) and throughput of the SavedModel, the float .tflite and the int8 .tflite, 1 and 2 threads.

    The LiteRT models are converted here from the SavedModel (and, int8, from the same
    network rebuilt, calibrated on random images: speed does not depend on the values).
    """
    from darts_tf.data import CIFAR_MEAN, CIFAR_STD
    from darts_tf.export import formats

    folder = tempfile.mkdtemp(prefix="darts_tf_deploy_bench_")
    rng = np.random.default_rng(0)
    float_model = formats.tflite_float(saved_model)
    paths = {"LiteRT float": formats.write_file(os.path.join(folder, "model.tflite"), float_model)}
    images = rng.integers(0, 256, size=(calibration, 32, 32, 3), dtype=np.uint8)
    int8 = formats.tflite_int8(_eval_network(auxiliary=False), CIFAR_MEAN, CIFAR_STD, images)
    paths["LiteRT int8"] = formats.write_file(os.path.join(folder, "model_int8.tflite"), int8)
    sizes = {name: os.path.getsize(path) / 2**20 for name, path in paths.items()}
    rows = []
    runtimes = [("SavedModel", saved_model, None)]
    runtimes += [(name, path, threads) for name, path in paths.items() for threads in (1, 2)]
    for name, path, threads in runtimes:
        predict = formats.load_predictor(path, threads=threads)
        for batch in batches:
            x = rng.integers(0, 256, size=(batch, 32, 32, 3), dtype=np.uint8)
            times = _timed_steps(lambda x=x, predict=predict: predict(x), steps, warmup)
            label = name if threads is None else f"{name}, {threads} thread{'s' if threads > 1 else ''}"
            rows.append({"runtime": label, "batch": batch, **_summary(times, batch)})
    return {"rows": rows, "sizes_mib": sizes}


def bench_data(batch: int, batches: int = 50) -> dict:
    """Images/s of the training input pipeline (crop, flip, cutout, normalise) on CIFAR-sized images."""
    from darts_tf import data

    source = data.make_synthetic(num_train=batch * batches, num_test=10, image_size=32)
    ds = data.epoch_dataset(
        source.train_images, source.train_labels, batch, data.CIFAR_MEAN, data.CIFAR_STD, 0, 0, cutout_length=16
    )
    iterator = iter(ds)
    next(iterator)
    start = time.perf_counter()
    n = 0
    for x, _ in iterator:
        n += int(x.shape[0])
    return {"images_per_s": n / (time.perf_counter() - start)}


def bench_rnn(
    kind: str, order: str, batch: int, steps: int, warmup: int, t0: float, device: str, precision: str = "float32"
) -> dict:
    """A recurrent search step (kind "rnn_search": architecture + weight step, nhid 300) or a training step
    ("rnn_train": DARTS_V2 at 850) at the paper's sizes: 10,000 words, bptt 35, the original's dropouts;
    the language model in `precision`'s compute type (float16: the steps scale the loss)."""
    import tensorflow as tf

    from darts_tf.config import RNNSearchConfig, RNNTrainConfig

    rng = np.random.default_rng(0)
    tokens = tf.constant(rng.integers(0, 10_000, size=(36, batch)).astype("int32"))
    inputs, targets = tokens[:-1], tokens[1:]
    with tf.device(device):
        if kind == "rnn_search":
            from darts_tf.rnn.search import RecurrentSearch, build_search_model

            config = RNNSearchConfig(batch_size=batch, unrolled=order == "second", precision=precision)
            model = RecurrentSearch(build_search_model(config, 10_000), config)
        else:
            from darts_tf.rnn.train import LanguageModelTrainer, build_model

            config = RNNTrainConfig(batch_size=batch, data_dir="", arch="DARTS_V2", precision=precision)
            model = LanguageModelTrainer(build_model(config, 10_000), config)
        # The run's step as a run traces it: a sequence length of its own per batch (any), the batch fixed.
        tokens = tf.TensorSpec([None, batch], tf.int32)
        words = (tokens, tokens, tf.TensorSpec([2], tf.int32))
        signature = (words, (tokens, tokens)) if kind == "rnn_search" else words
        train_step = tf.function(model.train_step, input_signature=[signature], autograph=False)

        def step(k):
            words = (inputs, targets, tf.constant([0, k], tf.int32))
            return train_step((words, (inputs, targets)) if kind == "rnn_search" else words)

        built = time.time()
        _sync(step(0))
        first = time.time()
        counter = iter(range(1, 10_000))
        times = _timed_steps(lambda: step(next(counter)), steps, warmup)
    result = {"first_step_s": first - t0, "build_s": built - t0, **_summary(times, batch * 35)}
    result["tokens_per_s"] = result.pop("images_per_s")
    result["peak_rss_gib"] = peak_rss_gib()
    return result


def bench_distributed(what: str, order: str, replicas: int, batch: int, C: int, layers: int, steps: int,
                      warmup: int, t0: float, device: str, size: int = 32,
                      sync_batchnorm: bool = True) -> dict:  # fmt: skip
    """A search step (`what="search"`, `order`) or a training step (DARTS_V2 at C, layers; auxiliary, drop path 0.2)
    at global batch `batch` on `replicas` devices: one device's own train function for 1, else MirroredStrategy
    over the first `replicas` GPUs or logical CPUs with `strategy.run` per step (as `darts_tf.distribute.fit`);
    `sync_batchnorm=False`: each replica's own BatchNorm statistics."""
    import tensorflow as tf

    from darts_tf import distribute
    from darts_tf import replicas as replicas_lib
    from darts_tf.cnn.eval_model import NetworkCIFAR
    from darts_tf.cnn.genotypes import DARTS_V2
    from darts_tf.cnn.train import TrainConfig, build_trainer, drop_path_variables
    from darts_tf.optimizers import learning_rate_schedule

    kind = "GPU" if device.startswith("/GPU") else "CPU"
    devices = [d.name for d in tf.config.list_logical_devices(kind)][:replicas]
    if len(devices) < replicas:
        raise RuntimeError(f"--replicas {replicas}: {len(devices)} {kind} device(s) visible")
    strategy = distribute.mirrored_strategy(devices) if replicas > 1 else tf.distribute.get_strategy()
    with strategy.scope():
        if what == "search":
            model = _search_model(C, layers, order, size=size)
            data = tuple(_batches(batch, 2, size=size))
        else:
            network = NetworkCIFAR(C, 10, layers, size >= 24, DARTS_V2, input_shape=(size, size, 3))
            for rate in drop_path_variables(network):
                rate.assign(0.2)
            model = build_trainer(TrainConfig(), network, learning_rate_schedule(TrainConfig(), 520))
            data = _batches(batch, 1, size=size)[0]
    model.sync_batchnorm = sync_batchnorm
    dataset = tf.data.Dataset.from_tensor_slices(data).repeat().batch(batch)
    if replicas == 1:
        iterator = iter(dataset)
        model.make_train_function()
        step = model.train_function
    else:
        iterator = iter(distribute.distribute_dataset(strategy, dataset))
        step = tf.function(lambda it: strategy.run(model.train_step, args=(next(it),)), autograph=False)
    traced = time.time()
    with replicas_lib.counting_collectives() as collectives:
        _sync(step(iterator))
    first = time.time()
    times = _timed_steps(lambda: step(iterator), steps, warmup)
    return {
        "first_step_s": first - t0, "trace_and_first_step_s": first - traced, **_summary(times, batch),
        "peak_rss_gib": peak_rss_gib(),
        # one device: Keras's train function is Python around tf.functions; the same step traced apart
        "graph_ops": graph_ops(step if replicas > 1 else tf.function(lambda it: model.train_step(next(it)),
                                                                      autograph=False), iterator),
        "collectives_per_replica": collectives.per_replica(replicas),
    }  # fmt: skip


def graph_ops(function, *args) -> int | None:
    """The ops of a traced tf.function's graph and of every function it calls (each function once)."""
    try:
        graph = function.get_concrete_function(*args).graph.as_graph_def()
    except Exception:  # noqa: BLE001 - not a traced tf.function of these arguments: no count
        return None
    return len(graph.node) + sum(len(f.node_def) for f in graph.library.function)


def run_worker(spec: dict) -> dict:
    """Runs one measurement described by `spec` (from the script) in this process."""
    import tensorflow as tf

    kind, t0 = spec["kind"], spec["t0"]
    device = setup_device(spec.get("device", "cpu"))
    as_scripts = spec.get("runtime", "search") == "search"
    what = spec.get("what") if kind == "distributed" else None
    if kind in ("rnn_search", "rnn_train") and as_scripts:
        from darts_tf.runtime import configure_for_recurrent

        configure_for_recurrent()  # as `darts-tf search-rnn` / `train-rnn`: grappler only (threads below)
    if (kind in ("search", "search_flops") or what == "search") and as_scripts:
        from darts_tf.runtime import configure_for_search

        configure_for_search(spec.get("threads") or None, spec.get("graph_optimization", "reduced"))
    elif (kind in ("eval_train", "imagenet_train") or what == "train") and as_scripts:
        from darts_tf.runtime import configure_for_training

        configure_for_training(spec.get("threads") or None)  # as `darts-tf train`
    elif spec.get("threads"):
        tf.config.threading.set_intra_op_parallelism_threads(spec["threads"])
        tf.config.threading.set_inter_op_parallelism_threads(spec["threads"])
    if kind == "distributed" and spec.get("device", "cpu") == "cpu" and spec["replicas"] > 1:
        from darts_tf.distribute import split_cpu

        # After the thread settings: splitting the CPU starts TensorFlow's runtime, which fixes them.
        split_cpu(spec["replicas"])
    steps, warmup = spec.get("steps", 5), spec.get("warmup", 1)
    if kind == "search":
        return bench_search(
            spec["order"], spec["batch"], spec["C"], spec["layers"], steps, warmup, t0, device,
            spec.get("variant", "plain"), spec.get("precision", "float32"),
        )  # fmt: skip
    if kind == "distributed":
        return bench_distributed(
            spec["what"], spec.get("order"), spec["replicas"], spec["batch"], spec["C"], spec["layers"], steps, warmup,
            t0, device, spec.get("size", 32), spec.get("sync_batchnorm", True),
        )  # fmt: skip
    if kind == "search_flops":
        return {"flops_per_image": search_step_flops(spec["order"], spec["C"], spec["layers"], 2) / 2}
    if kind == "eval_train":
        return bench_eval_train(spec["batch"], steps, warmup, t0, device, spec.get("precision", "float32"))
    if kind == "export":
        return {"path": export_for_serving(spec["path"])}
    if kind == "serve":
        return bench_serve(spec["path"], spec["batch"], steps, warmup, t0, device)
    if kind == "data":
        return bench_data(spec["batch"])
    if kind == "deploy":
        return bench_deploy(spec["path"], spec["batches"], steps, warmup)
    if kind == "folder":
        return bench_folder(spec["size"], spec["batch"])
    if kind == "imagenet_train":
        return bench_imagenet_train(spec["batch"], steps, warmup, t0, device)
    if kind in ("rnn_search", "rnn_train"):
        return bench_rnn(
            kind, spec.get("order", "first"), spec["batch"], steps, warmup, t0, device, spec.get("precision", "float32")
        )
    if kind == "environment":
        return {**environment(spec.get("device", "cpu")), "matmul_gflops": matmul_roof(device)}
    raise ValueError(f"Unknown benchmark kind {kind!r}")


def default_export_dir() -> str:
    return os.path.join(tempfile.gettempdir(), "darts_tf_benchmark_saved_model")


def dumps(result: dict) -> str:
    return json.dumps(result, sort_keys=True)
