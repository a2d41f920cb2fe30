"""More than one device: the tf.distribute strategies of a search or training run, and their loop.

    strategy = make_strategy("mirrored")           # the visible GPUs, or the logical CPUs of split_cpu(n)
    with strategy.scope():
        search = build_search(...)                 # variables mirrored on every replica
    fit(search, batches, ...)                      # strategy.run per step, Keras callbacks

`--batch-size` is the global batch: each of k replicas computes on B / k images, the
gradients (and, in the search, the unrolled step, v and the finite-difference passes) are
means over all replicas (`darts_tf.replicas`), and BatchNorm uses the global batch's
statistics, so k replicas compute what one device computes at batch B. The loop is our
own (Keras 3's `fit` does not run MultiWorkerMirroredStrategy, keras-team/keras#20585).
With several workers (`multi_worker`, configured by TF_CONFIG) every worker runs the
same command; the chief writes the run folder, the others a temporary one.
"""

from __future__ import annotations

import json
import os
import re
import sys
import weakref

import keras
import numpy as np
import tensorflow as tf

from darts_tf.config import STRATEGIES
from darts_tf.errors import DistributeError, WorkerLostError

CPU_BFC_ALLOCATOR = "TF_CPU_ALLOCATOR_USE_BFC"  # TensorFlow's switch, read when its devices are made


def split_cpu(count: int, bfc_allocator: bool = True) -> list[str]:
    """Splits this machine's CPU into `count` logical devices; their names.

    Process-wide, and only possible before TensorFlow runs its first op (`--logical-cpus N`);
    lets the mirrored path run (and be tested) on a CPU-only machine, as Keras's own tests do.
    With `bfc_allocator` and `count` > 1 (unless TF_CPU_ALLOCATOR_USE_BFC is set already),
    TensorFlow's CPU tensors come from its own BFC pool instead of malloc: replicas running side
    by side in one process otherwise contend for malloc and map and unmap their ~128 KiB
    tensors every step (measured: 160,000-220,000 page faults a step and a quarter of the CPU
    time in the kernel; docs/distributed.md).
    """
    if not isinstance(count, int) or count < 1:
        raise DistributeError(f"`logical_cpus` expected a positive integer. Received: {count!r}")
    if bfc_allocator and count > 1:
        os.environ.setdefault(CPU_BFC_ALLOCATOR, "true")
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * count)
    except RuntimeError:
        devices = tf.config.list_logical_devices("CPU")
        if len(devices) != count:
            raise DistributeError(
                f"`logical_cpus` {count}: TensorFlow already started with {len(devices)} CPU device(s); "
                "split the CPU before anything else runs"
            ) from None
    return [device.name for device in tf.config.list_logical_devices("CPU")]


def read_tf_config(environ=None) -> dict | None:
    """The TF_CONFIG of `environ` (default `os.environ`), checked; None when it is not set.

    Expected: {"cluster": {"worker": ["host:port", ...], ("chief": ["host:port"])},
    "task": {"type": "worker", "index": i}}; anything else is a DistributeError naming what is wrong.
    """
    text = (os.environ if environ is None else environ).get("TF_CONFIG", "").strip()
    if not text:
        return None
    try:
        config = json.loads(text)
    except ValueError as error:
        raise DistributeError(f"TF_CONFIG is not valid JSON ({error})") from None
    cluster = config.get("cluster") if isinstance(config, dict) else None
    if not isinstance(cluster, dict) or not cluster.get("worker") and not cluster.get("chief"):
        raise DistributeError(f'TF_CONFIG needs a "cluster" with a "worker" list of host:port. Received: {text}')
    for job, addresses in cluster.items():
        if not isinstance(addresses, list) or not all(
            isinstance(a, str) and re.fullmatch(r"[^\s:]+:\d+", a) for a in addresses
        ):
            raise DistributeError(f"TF_CONFIG cluster {job!r} must be a list of host:port. Received: {addresses!r}")
    task = config.get("task")
    if not isinstance(task, dict) or task.get("type") not in cluster:
        raise DistributeError(f'TF_CONFIG "task" needs a "type" among {sorted(cluster)}. Received: {task!r}')
    index = task.get("index")
    if not isinstance(index, int) or not 0 <= index < len(cluster[task["type"]]):
        raise DistributeError(
            f"TF_CONFIG task index must be in 0..{len(cluster[task['type']]) - 1} for {task['type']!r}. "
            f"Received: {index!r}"
        )
    return config


def make_strategy(name: str = "auto", environ=None) -> tf.distribute.Strategy:
    """The strategy `--strategy NAME` asks for.

    "one": TensorFlow's default (one device); "mirrored": MirroredStrategy over the
    visible GPUs, else the logical CPUs (`split_cpu`); with one device it warns and runs
    on one; "multi_worker": MultiWorkerMirroredStrategy from TF_CONFIG (create it before
    anything else runs TensorFlow); "auto": mirrored when more than one GPU is visible.
    """
    if name not in STRATEGIES:
        raise DistributeError(f"`strategy` must be one of {', '.join(STRATEGIES)}. Received: {name!r}")
    if name == "multi_worker":  # first: listing logical devices would start TensorFlow's runtime
        if read_tf_config(environ) is None:
            raise DistributeError(
                "`strategy` multi_worker needs TF_CONFIG, e.g. "
                '{"cluster": {"worker": ["host1:12345", "host2:12345"]}, "task": {"type": "worker", "index": 0}}'
            )
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "auto":
        name = resolve_auto()[0]
    if name == "one":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
        if len(devices) < 2:
            print(
                f"warning: strategy mirrored: one device visible ({devices[0].name}); running on it "
                "(split_cpu(n), --logical-cpus N, splits a CPU into N devices)",
                file=sys.stderr,
                flush=True,
            )
            return tf.distribute.get_strategy()
    return mirrored_strategy([device.name for device in devices])


def mirrored_strategy(devices: list[str]) -> tf.distribute.MirroredStrategy:
    """MirroredStrategy over `devices`. Logical CPUs reduce by copies to the first device and sum
    there; GPUs by TensorFlow's choice (NCCL).

    On CPUs TensorFlow's choice is collective ops, which hand every all-reduce to their
    executor's threads: with a search step's ~200 (BatchNorm statistics) that is thousands of
    thread wake-ups a step (measured: a 2-replica first-order step 1.34 s against 0.97 s by
    copies; docs/distributed.md).
    """
    on_cpus = devices and all(tf.DeviceSpec.from_string(d).device_type == "CPU" for d in devices)
    if on_cpus:
        one = tf.distribute.ReductionToOneDevice(reduce_to_device=devices[0])
        return tf.distribute.MirroredStrategy(devices, cross_device_ops=one)
    return tf.distribute.MirroredStrategy(devices)


def resolve_auto() -> tuple[str, str]:
    """("mirrored" or "one", why) for `--strategy auto`: every visible GPU when there are several.

    Several replicas compute what one device computes at the same global batch and reduce
    BatchNorm statistics once per stage of a cell, not once per BatchNorm (docs/distributed.md).
    """
    gpus = tf.config.list_physical_devices("GPU")
    if len(gpus) > 1:
        return "mirrored", f"{len(gpus)} GPUs visible"
    return "one", "one GPU visible" if gpus else "no GPU visible"


def describe(strategy, name: str = "auto") -> str:
    """One line saying which strategy runs and, for `auto`, why: "strategy: mirrored over 2 GPUs (auto: ...)"."""
    if is_multi_worker(strategy):
        line = f"strategy: multi_worker, {strategy.num_replicas_in_sync} replicas ({task_name(strategy)})"
    elif strategy.num_replicas_in_sync > 1:
        devices = strategy.extended.worker_devices
        line = f"strategy: mirrored over {len(devices)} devices ({', '.join(devices)})"
    else:
        line = "strategy: one device"
    if name == "auto":
        line += f" (auto: {resolve_auto()[1]})"
    return line


def is_multi_worker(strategy) -> bool:
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


def needs_own_loop(strategy) -> bool:
    """Whether a run under `strategy` goes through `fit` here (several replicas or workers)."""
    return strategy.num_replicas_in_sync > 1 or is_multi_worker(strategy)


def task_name(strategy) -> str:
    """ "worker 1" / "chief 0" of a multi-worker strategy, "" otherwise."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if not is_multi_worker(strategy) or resolver is None or resolver.task_type is None:
        return ""
    return f"{resolver.task_type} {resolver.task_id}"


def is_chief(strategy) -> bool:
    """Whether this process writes the run folder: the chief, worker 0 without one, or a single process."""
    if not task_name(strategy):
        return True
    resolver = strategy.cluster_resolver
    if resolver.task_type == "chief":
        return True
    return resolver.task_type == "worker" and resolver.task_id == 0 and "chief" not in resolver.cluster_spec().jobs


def check_global_batch(batch_size: int, strategy, field: str = "batch_size") -> None:
    """DistributeError unless the global batch splits evenly over the replicas."""
    replicas = strategy.num_replicas_in_sync
    if batch_size % replicas:
        raise DistributeError(
            f"`{field}` {batch_size} is the global batch and must split evenly over the {replicas} replicas "
            f"(a multiple of {replicas})"
        )


def distribute_dataset(strategy, dataset: tf.data.Dataset):
    """`dataset`'s global batches split over the replicas (every worker reads the data and keeps its part)."""
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return strategy.experimental_distribute_dataset(dataset.with_options(options))


def average_statistics(model) -> int:
    """Puts the mean over every replica of each floating non-trainable variable of `model.network`
    (BatchNorm moving statistics, packed edge statistics) in every replica; returns how many.

    For runs with `sync_batchnorm=False`, whose replicas update their moving statistics from
    their own batches; `fit` calls it after each epoch, before evaluation and the checkpoint.
    Variables that are equal on every replica stay as they are.
    """
    strategy = model.distribute_strategy
    variables = [v for v in model.network.non_trainable_variables if tf.as_dtype(v.dtype).is_floating]
    if strategy.num_replicas_in_sync == 1 or not variables:
        return 0
    if model not in _AVERAGE_STEPS:

        def average():
            local = strategy.run(lambda: [tf.identity(v.value) for v in variables])
            means = strategy.reduce(tf.distribute.ReduceOp.MEAN, local, axis=None)
            for variable, value in zip(variables, means):
                variable.assign(value)

        _AVERAGE_STEPS[model] = tf.function(average, autograph=False)
    _AVERAGE_STEPS[model]()
    return len(variables)


# model -> its traced `average_statistics`
_AVERAGE_STEPS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


# model -> {strategy: its traced evaluation step}
_EVALUATE_STEPS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def evaluate(model, dataset, strategy=None) -> dict:
    """Inference-mode loss, top-1 and top-5 accuracy of `model` (logits) over `dataset`, on every replica.

    Sums per image over the whole dataset (a last, partial batch weighs its images, not one batch).
    """
    strategy = strategy or model.distribute_strategy

    def replica_sums(batch):
        images, labels = batch
        logits = tf.cast(model(images, training=False), tf.float32)
        labels = tf.cast(labels, tf.int32)
        losses = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
        k = min(5, logits.shape[-1])
        hits = [tf.reduce_sum(tf.cast(tf.math.in_top_k(labels, logits, n), tf.float32)) for n in (1, k)]
        return tf.stack([tf.reduce_sum(losses), *hits, tf.cast(tf.size(labels), tf.float32)])

    steps = _EVALUATE_STEPS.setdefault(model, {})
    step = steps.get(strategy)
    if step is None:  # traced once per model, strategy (and batch shape), not once per epoch
        step = tf.function(lambda batch: strategy.reduce("SUM", strategy.run(replica_sums, args=(batch,)), axis=None))
        steps[strategy] = step
    totals = np.zeros(4)
    for batch in distribute_dataset(strategy, dataset):
        totals += step(batch).numpy()
    count = max(totals[3], 1.0)
    return {"loss": totals[0] / count, "accuracy": totals[1] / count, "top5": totals[2] / count}


def _peer(error: Exception, strategy) -> str:
    """The other task the error names ("worker 1 (host:port)"), else "a peer worker"."""
    resolver = getattr(strategy, "cluster_resolver", None)
    own = (getattr(resolver, "task_type", None), getattr(resolver, "task_id", None))
    for job, index in re.findall(r"/job:(\w+)(?:/replica:\d+)?/task:(\d+)", str(error)):
        if (job, int(index)) == own:
            continue
        try:
            address = resolver.cluster_spec().task_address(job, int(index))
        except (AttributeError, ValueError, KeyError):
            address = None
        return f"{job} {index}" + (f" ({address})" if address else "")
    return "a peer worker"


# What a collective raises when a worker died or stopped answering.
_LOST = (tf.errors.UnavailableError, tf.errors.DeadlineExceededError, tf.errors.CancelledError, tf.errors.AbortedError)


def fit(model, batches, epochs: int, initial_epoch: int, steps_per_epoch: int, validation_data=None,
        callbacks=(), verbose: int = 1):  # fmt: skip
    """`model.fit` for several replicas or workers, or for epochs of different lengths:
    `strategy.run(model.train_step)` per step, Keras callbacks.

    `model` (a Keras model with a `train_step`, e.g. `ArchitectureSearch` or `EvalTrainer`) was
    built under its strategy's scope; `batches` yields global batches, `steps_per_epoch` of them
    an epoch. With `steps_per_epoch=None`, `batches` is a function of the epoch (from 0) giving
    that epoch's dataset of known length (Keras's `fit` cannot vary an epoch's length: the
    recurrent runs' sequence lengths are drawn per epoch). A model's `step_variant` (when it has
    one) keys its traced steps: each value has its own. Callbacks see what `fit` gives them
    (batch logs, epoch logs with val_loss, val_accuracy, val_top5 from `evaluate`); returns the
    History callback. A lost worker: `WorkerLostError` naming it (the last epoch's checkpoint stays).
    """
    strategy = model.distribute_strategy
    callback_list = keras.callbacks.CallbackList(
        list(callbacks), add_history=True, add_progbar=verbose != 0, verbose=verbose, epochs=epochs,
        steps=steps_per_epoch, model=model,
    )  # fmt: skip
    functions = {}  # one traced step per step variant (the search's warm-up switch, averaged SGD)

    def train_function(iterator):
        key = getattr(model, "step_variant", None)
        if key not in functions:

            def step(iterator):
                outputs = strategy.run(model.train_step, args=(next(iterator),))
                # Keras metrics keep one sum per replica (synchronised on read): read here, in the
                # cross-replica context, they are the means over every replica's images.
                return {metric.name: metric.result() for metric in model.metrics if metric.name in outputs}

            functions[key] = tf.function(step, autograph=False)
        return functions[key](iterator)

    model.stop_training = False
    logs = {}
    per_epoch = steps_per_epoch is None
    try:
        iterator = None if per_epoch else iter(distribute_dataset(strategy, batches))
        callback_list.on_train_begin()
        for epoch in range(initial_epoch, epochs):
            for metric in model.metrics:
                metric.reset_state()
            steps = steps_per_epoch
            if per_epoch:
                dataset = batches(epoch)
                steps = int(dataset.cardinality())
                if steps < 0:
                    raise ValueError(f"fit: the dataset of epoch {epoch + 1} has no known length. Received: {steps}")
                iterator = iter(distribute_dataset(strategy, dataset))
                callback_list.set_params({**callback_list.params, "steps": steps})  # the progress bar's target
            callback_list.on_epoch_begin(epoch)
            for step in range(steps):
                callback_list.on_train_batch_begin(step)
                logs = {name: float(value) for name, value in train_function(iterator).items()}
                callback_list.on_train_batch_end(step, logs)
                if model.stop_training:
                    break
            epoch_logs = dict(logs)
            if not getattr(model, "sync_batchnorm", True):  # before evaluation and the checkpoint
                average_statistics(model)
            if validation_data is not None:
                epoch_logs.update({f"val_{k}": v for k, v in evaluate(model, validation_data, strategy).items()})
            callback_list.on_epoch_end(epoch, epoch_logs)
            logs = epoch_logs
            if model.stop_training:
                break
        callback_list.on_train_end(logs)
    except _LOST as error:
        raise WorkerLostError(
            f"{_peer(error, strategy)} stopped answering ({type(error).__name__}); the run stopped, its last "
            "epoch's checkpoint is kept: start every worker again with `resume`"
        ) from None
    return model.history
