"""Training an evaluation network from a genotype, as the original's `train.py` and `train_imagenet.py`.

Per step: loss = CE(logits) + auxiliary_weight * CE(aux_logits) (label-smoothed
CE for the ImageNet recipe), gradients clipped by global norm, SGD with
momentum and coupled L2 weight decay on a per-epoch cosine (or exponential)
schedule; the drop-path rate of epoch e is drop_path_prob * e / epochs
(Liu et al., arXiv:1806.09055, Sec. 3.2 and A.2).
"""

from __future__ import annotations

import dataclasses
import os

import keras
import numpy as np
import tensorflow as tf

from darts_tf import data, precision, replicas, runs
from darts_tf.architect import cross_entropy, gradients_of
from darts_tf.cnn.eval_model import NetworkCIFAR, NetworkImageNet, count_parameters, inference_model
from darts_tf.cnn.genotypes import GENOTYPES, Genotype, get_genotype
from darts_tf.config import TrainConfig, config_from_dict, import_ops_module
from darts_tf.errors import ConfigError
from darts_tf.export import accuracy_summary, export_saved_model
from darts_tf.nb201.genotypes import Nb201Genotype
from darts_tf.optimizers import SGD, clip_by_global_norm
from darts_tf.seeding import initializer_seed


class EvalTrainer(keras.Model):
    """Trains a NetworkCIFAR/NetworkImageNet with the auxiliary loss (arXiv:1806.09055, Sec. 3.2).

    `compile(optimizer, grad_clip)` then `fit(train_batches)`; evaluation
    uses the inference-mode logits (no drop path, no auxiliary head).
    `label_smoothing` > 0 trains on label-smoothed cross-entropy (the original's
    CrossEntropyLabelSmooth, for both heads). With `loss_scale` (a
    `darts_tf.precision.DynamicLossScale`, for a float16 network) the loss is scaled for the
    backward pass, and a step with a non-finite gradient is skipped and halves the scale.
    `sync_batchnorm=False`: under several replicas each normalises with its own batch's
    statistics (`darts_tf.replicas.local_statistics`; faster, a different result).
    """

    def __init__(
        self, network, auxiliary_weight=0.4, label_smoothing=0.0, loss_scale=None, sync_batchnorm=True, **kwargs
    ):
        super().__init__(**kwargs)
        self.network = network
        self.auxiliary_weight = auxiliary_weight
        self.label_smoothing = label_smoothing
        self.loss_scale = loss_scale
        self.sync_batchnorm = sync_batchnorm
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.accuracy_tracker = keras.metrics.SparseCategoricalAccuracy(name="accuracy")
        self.top5_tracker = keras.metrics.SparseTopKCategoricalAccuracy(k=5, name="top5")
        if network.built:
            self.built = True

    def compile(self, optimizer, grad_clip=5.0, **kwargs):
        kwargs.setdefault("jit_compile", False)
        super().compile(**kwargs)
        self.w_optimizer = optimizer
        self.grad_clip = grad_clip
        optimizer.build(self.network.trainable_variables)

    @property
    def metrics(self):
        return [self.loss_tracker, self.accuracy_tracker, self.top5_tracker]

    def make_train_function(self, force=False):
        runs.require_one_replica(self)  # several replicas: `darts_tf.distribute.fit`
        return super().make_train_function(force=force)

    def call(self, inputs, training=None):
        return self.network(inputs, training=training)["logits"]

    def _update(self, labels, loss, logits):
        self.loss_tracker.update_state(loss)
        self.accuracy_tracker.update_state(labels, logits)
        self.top5_tracker.update_state(labels, tf.cast(logits, tf.float32))  # in_top_k: float32 only
        return {m.name: m.result() for m in self.metrics}

    def train_step(self, batch):
        with replicas.local_statistics(not self.sync_batchnorm):
            return self._train_step(batch)

    def _train_step(self, batch):
        images, labels = batch
        variables = self.network.trainable_variables
        with tf.GradientTape() as tape:
            outputs = self.network(images, training=True)
            loss = smoothed_cross_entropy(labels, outputs["logits"], self.label_smoothing)
            if "aux_logits" in outputs and self.auxiliary_weight:
                aux_loss = smoothed_cross_entropy(labels, outputs["aux_logits"], self.label_smoothing)
                loss += self.auxiliary_weight * aux_loss
            scaled = precision.scaled_loss(loss, self.loss_scale)
        gradients = replicas.mean(gradients_of(tape, scaled, variables, self.loss_scale))
        if self.grad_clip:  # 0: no clipping (NAS-Bench-201's recipe)
            gradients, _ = clip_by_global_norm(gradients, self.grad_clip)
        finite = precision.apply_gradients(self.w_optimizer, gradients, variables, self.loss_scale)
        if self.loss_scale is not None:
            self.loss_scale.update(finite)
        return self._update(labels, loss, outputs["logits"])

    def test_step(self, batch):
        images, labels = batch
        logits = self.network(images, training=False)["logits"]
        return self._update(labels, cross_entropy(labels, logits), logits)


def smoothed_cross_entropy(labels, logits, smoothing: float = 0.0) -> tf.Tensor:
    """Mean cross-entropy against (1 - smoothing) * one_hot + smoothing / classes (plain CE at 0)."""
    if not smoothing:
        return cross_entropy(labels, logits)
    log_probs = tf.nn.log_softmax(tf.cast(logits, tf.float32))
    picked = tf.gather(log_probs, tf.cast(labels, tf.int32), batch_dims=1)
    return tf.reduce_mean(-(1.0 - smoothing) * picked - smoothing * tf.reduce_mean(log_probs, axis=-1))


def drop_path_variables(network: keras.Model) -> list:
    return [v for v in network.non_trainable_variables if v.path.endswith("drop_path/rate")]


class DropPathSchedule(keras.callbacks.Callback):
    """Sets every cell's drop-path rate to `drop_path_prob * epoch / epochs` at the start of each epoch."""

    def __init__(self, network: keras.Model, drop_path_prob: float, epochs: int):
        super().__init__()
        self.rates = drop_path_variables(network)
        self.drop_path_prob = drop_path_prob
        self.epochs = epochs

    def rate(self, epoch: int) -> float:
        return self.drop_path_prob * epoch / self.epochs

    def on_epoch_begin(self, epoch, logs=None):
        for variable in self.rates:
            variable.assign(self.rate(epoch))


def export_name(config: TrainConfig) -> str:
    if config.export_name:
        return config.export_name
    return config.arch.lower() if config.arch in GENOTYPES else "darts_eval"


def read_genotype(arch: str) -> Genotype | Nb201Genotype:
    """The genotype `arch` names: a published name or DARTS genotype file, or a NAS-Bench-201 cell (its arch
    string, or a genotype file holding {"arch": ...})."""
    if isinstance(arch, str) and arch.strip().startswith("|"):
        return Nb201Genotype.from_arch(arch)
    if isinstance(arch, str) and os.path.isfile(arch):
        try:
            with open(arch, encoding="utf-8") as handle:
                holds_arch = '"arch"' in handle.read(4096)
        except OSError:
            holds_arch = False
        if holds_arch:
            return Nb201Genotype.load(arch)
    return get_genotype(arch)


def build_network(config: TrainConfig, genotype, num_classes: int, input_shape: tuple) -> keras.Model:
    """NetworkCIFAR, or NetworkImageNet when `config.network == "imagenet"`, or the NAS-Bench-201 network of an
    `Nb201Genotype` (C channels, `layers` cells per stage), seeded by `config.seed`."""
    if isinstance(genotype, Nb201Genotype):
        if config.auxiliary or config.network != "cifar":
            raise ConfigError(
                "a NAS-Bench-201 cell trains in its own network, without an auxiliary head: use --preset nb201 "
                "(or --no-auxiliary, and no --network imagenet)"
            )
        from darts_tf.nb201.model import Nb201Network

        with initializer_seed(config.seed):
            return Nb201Network(
                genotype, config.C, config.layers, num_classes, tuple(input_shape),
                dtype=precision.dtype_policy(config.precision),
            )  # fmt: skip
    network_class = NetworkImageNet if config.network == "imagenet" else NetworkCIFAR
    with initializer_seed(config.seed):
        return network_class(
            config.C, num_classes, config.layers, config.auxiliary, genotype, input_shape=tuple(input_shape),
            dtype=precision.dtype_policy(config.precision),
        )  # fmt: skip


def data_info(source: data.ImageData) -> dict:
    """What serving and evaluation need to know about the training data (kept in the run's data.json)."""
    return {
        "dataset": source.name,
        "num_classes": int(source.num_classes),
        "input_shape": [int(n) for n in source.input_shape],
        "mean": [float(v) for v in source.mean],
        "std": [float(v) for v in source.std],
        "class_names": list(source.class_names),
        "test_split": source.test_split,
        "source": source.description,
    }


def build_trainer(config: TrainConfig, network: keras.Model, schedule) -> EvalTrainer:
    """The compiled `EvalTrainer` of `config` (SGD on `schedule`)."""
    loss_scale = precision.DynamicLossScale() if config.precision == "mixed_float16" else None
    trainer = EvalTrainer(
        network, auxiliary_weight=config.auxiliary_weight, label_smoothing=config.label_smoothing,
        loss_scale=loss_scale, sync_batchnorm=config.sync_batchnorm,
    )  # fmt: skip
    trainer.compile(
        SGD(schedule, momentum=config.momentum, coupled_weight_decay=config.weight_decay, nesterov=config.nesterov),
        grad_clip=config.grad_clip,
    )
    return trainer


def read_run(run_dir: str) -> tuple[TrainConfig, Genotype, dict]:
    """The config, genotype and data.json of a training run folder."""
    if not os.path.isdir(run_dir):
        raise runs.RunDirError(f"run folder {run_dir!r} does not exist (expected the `run_dir` of a darts-tf train)")
    paths = [os.path.join(run_dir, name) for name in ("config.json", "data.json")]
    if not all(os.path.exists(path) for path in paths):
        raise runs.RunDirError(f"{run_dir!r} holds no training run (no config.json/data.json)")
    config = config_from_dict(TrainConfig, runs.read_json(paths[0]), run_dir=run_dir)
    import_ops_module(config.ops_module)  # a genotype may name ops of yours
    return config, read_genotype(os.path.join(run_dir, "genotype.json")), runs.read_json(paths[1])


def load_trained_network(run_dir: str) -> tuple[keras.Model, TrainConfig, dict]:
    """The network of a training run with its latest checkpoint's weights, its config and data.json."""
    config, genotype, info = read_run(run_dir)
    if not os.path.exists(os.path.join(run_dir, runs.CHECKPOINT_DIR, runs.STATE_FILE)):
        raise runs.RunDirError(f"{run_dir!r} has no checkpoint yet (no finished epoch)")
    network = build_network(config, genotype, info["num_classes"], info["input_shape"])
    runs.load_checkpoint(run_dir, network)
    return network, config, info


def evaluate_run(run_dir: str, dataset: str | None = None, data_dir: str | None = None, batch_size: int = 256) -> dict:
    """Top-1/top-5 test accuracy of a training run's latest checkpoint (inference mode)."""
    network, config, info = load_trained_network(run_dir)
    if dataset or data_dir:  # other data, converted to the run's image shape
        config = dataclasses.replace(config, dataset=dataset or config.dataset, data_dir=data_dir)
    source = data.adapt(runs.load_run_data(dataclasses.replace(config, subset=0)), *_shape_of(info))
    if list(source.input_shape) != list(info["input_shape"]) or source.num_classes != info["num_classes"]:
        raise data.DataError(
            f"{source.name} images {source.input_shape} with {source.num_classes} classes do not fit the run in "
            f"{run_dir!r} ({tuple(info['input_shape'])}, {info['num_classes']} classes)"
        )
    test = data.evaluation_dataset(
        source.test_images, source.test_labels, batch_size, info["mean"], info["std"], config.augmentation,
        config.skip_bad_images,
    )  # fmt: skip
    model = inference_model(network)
    predict = tf.function(lambda images: model(images, training=False), reduce_retracing=True)
    logits, labels = [], []  # one pass; the labels are those of the images read (unreadable files skipped)
    for images, batch_labels in test:
        logits.append(predict(images).numpy())
        labels.append(batch_labels.numpy())
    return accuracy_summary(np.concatenate(logits), np.concatenate(labels))


def _shape_of(info: dict) -> tuple[int, int]:
    """(image size, channels) of a run's data.json, for `data.adapt`."""
    height, _, channels = info["input_shape"]
    return int(height), int(channels)


class TrainingPlan(runs.RunPlan):
    """An evaluation training's part of the run lifecycle (`darts_tf.runs.execute`)."""

    what = "training"

    def prepare(self, resume):
        self.genotype = read_run(self.config.run_dir)[1] if resume else read_genotype(self.config.arch)

    def steps_per_epoch(self, source):
        config = self.config
        if config.batch_size > len(source.train_labels):
            raise data.DataError(
                f"`batch_size` {config.batch_size} is larger than the training set ({len(source.train_labels)} "
                f"images); use `batch_size` {len(source.train_labels)} or less"
            )
        # Every step sees a full batch (one traced shape); the at most batch_size - 1
        # images left over change from epoch to epoch with the shuffle.
        return len(source.train_labels) // config.batch_size

    def build(self, source, schedule):
        network = build_network(self.config, self.genotype, source.num_classes, source.input_shape)
        return build_trainer(self.config, network, schedule)

    def optimizers(self, model):
        return {"optimizer": model.w_optimizer}

    def first_files(self, run_dir, source, model):
        self.genotype.save(os.path.join(run_dir, "genotype.json"))
        runs.write_json_atomic(os.path.join(run_dir, "data.json"), data_info(source))

    def batches(self, source, first_epoch, steps_per_epoch):
        config = self.config

        def epoch(e):
            return data.epoch_dataset(
                source.train_images, source.train_labels, config.batch_size, source.mean, source.std,
                config.seed, e, cutout_length=config.cutout, augmentation=config.augmentation,
                skip_bad_images=config.skip_bad_images,
            ).take(steps_per_epoch)  # fmt: skip

        return data.epochs_dataset(epoch, first_epoch, config.epochs)

    def validation(self, source):
        return data.evaluation_dataset(
            source.test_images, source.test_labels, self.config.eval_batch_size, source.mean, source.std,
            self.config.augmentation, self.config.skip_bad_images,
        )  # fmt: skip

    def callbacks(self, model, written, verbose):
        self.drop_path = DropPathSchedule(model.network, self.config.drop_path_prob, self.config.epochs)
        return [self.drop_path]

    def end_epoch(self, model, written, epoch, logs, verbose):
        return {k: float(v) for k, v in logs.items()}  # the epoch's metrics beside it in the checkpoint state

    def csv_extra(self, model, schedule):
        return lambda e: {"lr": schedule.value_at_epoch(e), "drop_path_prob": self.drop_path.rate(e)}

    def finish(self, model, source, written, chief):
        config, network = self.config, model.network
        result = {"parameters": count_parameters(network), "network": network, "export_path": None}
        if config.export and chief:
            base = os.path.join(config.export_dir, export_name(config))
            result["export_path"] = export_saved_model(
                network, base, source.mean, source.std, class_names=source.class_names
            )
        return result


def run_training(
    config: TrainConfig, resume: bool = False, overwrite: bool = False, verbose: int = 1, callbacks=(),
    strategy: tf.distribute.Strategy | None = None, source=None,
) -> dict:  # fmt: skip
    """Trains (or resumes training) an evaluation network and exports it; returns a summary dict.

    Writes the run folder (config.json, genotype.json, data.json, metrics.csv,
    tensorboard/, checkpoint/) and, when `config.export`, a SavedModel under
    `export_dir/<name>/<version>/`. Process-wide runtime settings are the
    caller's choice: `darts_tf.runtime.configure("training")` is what
    `darts-tf train` applies. `strategy` and `source`: as in `darts_tf.cnn.search.run_search` (the
    chief exports). The lifecycle is `darts_tf.runs.execute`'s.
    """
    return runs.execute(TrainingPlan(config), resume, overwrite, verbose, callbacks, strategy, source)
