"""The DARTS bilevel search as a Keras model with a custom `train_step`, and the search run.

Per step, exactly the original's order (Liu et al., arXiv:1806.09055, Alg. 1):
first the architecture step (first or second order, on a training and a
held-out batch), then the weight step on the training batch with gradient
clipping by global norm. `fit(tf.data.Dataset.zip((train, val)))` drives it.
"""

from __future__ import annotations

import dataclasses
import os

import keras
import numpy as np
import tensorflow as tf

from darts_tf import architect, data, precision, replicas, runs, visualize
from darts_tf.cnn import cost
from darts_tf.cnn.genotypes import Genotype, edge_weights, format_alphas
from darts_tf.cnn.search_model import SearchNetwork
from darts_tf.config import SearchConfig, parse_early_stop, search_space
from darts_tf.errors import ConfigError, DataError
from darts_tf.nb201 import genotypes as nb201
from darts_tf.optimizers import SGD, Adam, EpochCosineDecay, clip_by_global_norm
from darts_tf.seeding import initializer_seed


class ArchitectureSearch(keras.Model):
    """Bilevel DARTS search of a `SearchNetwork` (arXiv:1806.09055, Algorithm 1).

    `compile(w_optimizer, alpha_optimizer, grad_clip)` then
    `fit(tf.data.Dataset.zip((train_batches, val_batches)))`. With
    `unrolled=True` the architecture gradient is the second-order one
    (`hessian` "finite_difference" as the paper, or "exact"), with the
    virtual step xi equal to the weight optimizer's current learning rate.
    While `update_arch` is False (PC-DARTS's warm-up epochs, set by `ArchWarmup`) a
    step trains the weights only. With `loss_scale` (a `darts_tf.precision.DynamicLossScale`,
    for a float16 network) every backward pass is loss-scaled, and a step whose architecture
    or weight gradients are not finite skips that update and halves the scale.
    `sync_batchnorm=False`: under several replicas each normalises with its own batch's
    statistics (`darts_tf.replicas.local_statistics`; faster, a different result).
    `budgets` (`darts_tf.cnn.cost.Budget`s) add their penalty on `cost_model`'s expected cost of
    the architecture variables to the architecture gradient, whatever its order.
    """

    def __init__(
        self, network, unrolled=False, hessian="finite_difference", beta_decay=0.0, loss_scale=None,
        sync_batchnorm=True, cost_model=None, budgets=(), **kwargs,
    ):  # fmt: skip
        super().__init__(**kwargs)
        if hessian not in architect.HESSIAN_MODES:
            raise ConfigError(f"`hessian` must be one of {architect.HESSIAN_MODES}. Received: hessian={hessian!r}")
        self.network = network
        self.unrolled = unrolled
        self.hessian = hessian
        self.beta_decay = beta_decay
        self.loss_scale = loss_scale
        self.sync_batchnorm = sync_batchnorm
        self.cost_model = cost_model
        self.budgets = tuple(budgets)
        if self.budgets and cost_model is None:
            raise ConfigError("ArchitectureSearch with `budgets` expected a `cost_model`. Received: cost_model=None")
        # beta-DARTS: the regulariser's weight this epoch (set by BetaDecaySchedule), read by the traced step.
        self.beta_decay_weight = tf.Variable(0.0, trainable=False, name="beta_decay_weight")
        self.update_arch = True  # a Python switch: each value has its own traced step
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.accuracy_tracker = keras.metrics.SparseCategoricalAccuracy(name="accuracy")
        self.arch_loss_tracker = keras.metrics.Mean(name="arch_loss")
        self.top5_tracker = keras.metrics.SparseTopKCategoricalAccuracy(k=5, name="top5")
        if network.built:
            self.built = True

    def compile(self, w_optimizer, alpha_optimizer, grad_clip=5.0, **kwargs):
        if not self.network.built:
            raise ValueError(
                "ArchitectureSearch.compile expected a built network (its optimizers are built on its variables): "
                f"call network.build((None, height, width, channels)) first. Received: unbuilt {self.network.name!r}"
            )
        if self.unrolled and not all(hasattr(w_optimizer, a) for a in ("momentum_buffers", "coupled_weight_decay")):
            raise ValueError(
                "ArchitectureSearch(unrolled=True) expected w_optimizer to be darts_tf.optimizers.SGD (the virtual "
                "step reads its momentum buffers and coupled weight decay). "
                f"Received: w_optimizer={type(w_optimizer).__name__}"
            )
        kwargs.setdefault("jit_compile", False)
        super().compile(**kwargs)
        self.w_optimizer = w_optimizer
        self.alpha_optimizer = alpha_optimizer
        self.grad_clip = grad_clip
        # Build the optimizers now: slots exist (zero) before the first traced step,
        # so the momentum buffer read by the unrolled step is a live variable.
        w_optimizer.build(self.network.weight_variables)
        alpha_optimizer.build(self.network.arch_variables)

    @property
    def metrics(self):
        return [self.loss_tracker, self.accuracy_tracker, self.arch_loss_tracker, self.top5_tracker]

    @property
    def step_variant(self) -> bool:
        """What keys the traced steps (`darts_tf.distribute.fit`): whether the step updates the architecture."""
        return bool(self.update_arch)

    def make_train_function(self, force=False):
        # Keras calls its step function (a tf.function) from a second one that reads the
        # iterator; TensorFlow inlines the whole step graph into that one when it first
        # runs it, seconds of start-up for a second-order step. At one step per call
        # (the default), one function reads the batch and runs the step.
        runs.require_one_replica(self)  # this train function runs outside any strategy
        if self.train_function is not None and not force:
            return self.train_function
        if self.run_eagerly or self.jit_compile or self.steps_per_execution != 1:
            return super().make_train_function(force=force)
        functions = {}  # update_arch -> (step on data, step on iterator), traced when first needed

        def steps_for(update_arch):
            if update_arch not in functions:
                step = lambda batches: self.step(batches, update_arch)  # noqa: E731
                # end of data: OutOfRangeError, as Keras's
                on_iterator = lambda iterator: step(iterator.get_next())  # noqa: E731
                functions[update_arch] = tuple(
                    tf.function(f, autograph=False, reduce_retracing=True) for f in (step, on_iterator)
                )
            return functions[update_arch]

        def train_function(iterator):
            step_on_data, step_on_iterator = steps_for(self.step_variant)
            if isinstance(iterator, (tf.data.Iterator, tf.distribute.DistributedIterator)):
                return step_on_iterator(iterator)
            outputs = None
            for batches in iterator:  # train_on_batch: a generator of one batch
                outputs = step_on_data(batches)
            return outputs

        self.train_function = train_function
        return train_function

    def call(self, inputs, training=None):
        return self.network(inputs, training=training)

    def arch_gradients(self, train_batch, val_batch):
        gradients, loss = self._bilevel_gradients(train_batch, val_batch)
        if self.beta_decay:  # the alphas only (the betas, when present, come after them)
            regulariser, _ = architect.beta_decay_gradients(self.network.alpha_variables)
            regulariser += [0.0] * (len(gradients) - len(regulariser))
            gradients = [g + self.beta_decay_weight * r for g, r in zip(gradients, regulariser)]
        if self.budgets:
            alphas, betas = arch_by_kind(self.network)
            extra, values = cost.budget_gradients(self.cost_model, self.budgets, alphas, betas, loss)
            extra += [0.0] * (len(gradients) - len(extra))
            factor = cost.fbnet_factor(self.budgets, values)  # 1 unless FBNet's multiplicative form
            gradients = [tf.cast(factor, g.dtype) * g + tf.cast(e, g.dtype) for g, e in zip(gradients, extra)]
        return gradients, loss

    def _bilevel_gradients(self, train_batch, val_batch):
        if not self.unrolled:
            return architect.first_order_arch_gradients(self.network, val_batch, loss_scale=self.loss_scale)
        weights = self.network.weight_variables
        return architect.second_order_arch_gradients(
            self.network,
            train_batch,
            val_batch,
            xi=self.w_optimizer.learning_rate,
            momentum_buffers=self.w_optimizer.momentum_buffers(weights),
            momentum=self.w_optimizer.momentum,
            weight_decay=self.w_optimizer.coupled_weight_decay,
            hessian=self.hessian,
        )

    def weight_step(self, images, labels):
        """The weight step; returns (loss, logits, whether its gradients were finite or None without loss scaling)."""
        weights = self.network.weight_variables
        with tf.GradientTape() as tape:
            logits = self.network(images, training=True)
            loss = architect.cross_entropy(labels, logits)
            scaled = precision.scaled_loss(loss, self.loss_scale)
        gradients = replicas.mean(architect.gradients_of(tape, scaled, weights, self.loss_scale))
        gradients, _ = clip_by_global_norm(gradients, self.grad_clip)
        finite = precision.apply_gradients(self.w_optimizer, gradients, weights, self.loss_scale)
        return loss, logits, finite

    def train_step(self, batches):
        return self.step(batches, self.update_arch)

    def step(self, batches, update_arch=True):
        """One search step; `update_arch=False` (warm-up) leaves the architecture variables alone."""
        with replicas.local_statistics(not self.sync_batchnorm):
            return self._step(batches, update_arch)

    def _step(self, batches, update_arch):
        train_batch, val_batch = batches
        finite = []
        if update_arch:
            alpha_gradients, arch_loss = self.arch_gradients(train_batch, val_batch)
            arch = self.network.arch_variables
            finite.append(precision.apply_gradients(self.alpha_optimizer, alpha_gradients, arch, self.loss_scale))
            self.arch_loss_tracker.update_state(arch_loss)
        loss, logits, weights_finite = self.weight_step(*train_batch)
        if self.loss_scale is not None:
            self.loss_scale.update(tf.reduce_all([weights_finite, *finite]))
        self.loss_tracker.update_state(loss)
        self.accuracy_tracker.update_state(train_batch[1], logits)
        logs = {"loss": self.loss_tracker.result(), "accuracy": self.accuracy_tracker.result()}
        if update_arch:  # no architecture loss is computed during a warm-up: none is reported
            logs["arch_loss"] = self.arch_loss_tracker.result()
        return logs

    def test_step(self, batch):
        images, labels = batch
        logits = self.network(images, training=False)
        self.loss_tracker.update_state(architect.cross_entropy(labels, logits))
        self.accuracy_tracker.update_state(labels, logits)
        self.top5_tracker.update_state(labels, tf.cast(logits, tf.float32))  # in_top_k: float32 only
        return {
            "loss": self.loss_tracker.result(),
            "accuracy": self.accuracy_tracker.result(),
            "top5": self.top5_tracker.result(),
        }


def arch_by_kind(network) -> tuple[dict, dict | None]:
    """The architecture variables by cell kind, as `darts_tf.cnn.cost.CostModel.expected` takes them:
    ({"normal", "reduce"} alphas, the betas with edge normalisation or None); NAS-Bench-201: {"cell"}, None
    (its derivation does not read the betas)."""
    alphas = network.alpha_variables
    if len(alphas) == 1:
        return {"cell": alphas[0]}, None
    betas = network.beta_variables
    return {"normal": alphas[0], "reduce": alphas[1]}, ({"normal": betas[0], "reduce": betas[1]} if betas else None)


def search_cost_model(config: SearchConfig, image_shape, num_classes: int) -> cost.CostModel:
    """The costs a search of `config` counts: at its latency table's network, else at `cost_C`/`cost_layers`
    (defaults: DARTS's evaluation network, 36 channels and 20 cells; NAS-Bench-201: the searched C and cells)."""
    if config.space == "nb201":
        C, layers = config.cost_C or config.C, config.cost_layers or config.layers
    else:
        C, layers = config.cost_C or 36, config.cost_layers or 20
    return cost.cost_model_for(search_space(config), C, layers, image_shape, num_classes, config.latency_table)


def budgets_of(config: SearchConfig) -> list[cost.Budget]:
    """The config's budgets (those > 0) with its weight and form."""
    targets = {"latency": config.latency_budget, "flops": config.flops_budget, "params": config.params_budget}
    return [
        cost.Budget(metric, float(target), config.budget_weight, config.budget_form)
        for metric, target in targets.items()
        if target
    ]


def epoch_costs(network, cost_model: cost.CostModel, genotype) -> dict:
    """{column: value} of the derived network's costs (latency_ms, flops_m, params_m) and the expected ones of
    the architecture variables (expected_...), for metrics.csv, TensorBoard and the printed line."""
    derived = cost_model.of_genotype(genotype)
    alphas, betas = arch_by_kind(network)
    expected = cost_model.expected(alphas, betas)
    row = {cost.COLUMNS[m]: round(derived[m], 6) for m in cost_model.metrics}
    row |= {"expected_" + cost.COLUMNS[m]: round(float(expected[m]), 6) for m in cost_model.metrics}
    return row


def _network(config: SearchConfig, source: data.ImageData) -> keras.Model:
    """The search network of the config's space: DARTS's `SearchNetwork`, or NAS-Bench-201's."""
    options = dict(
        shared_trace=config.shared_trace, partial_channels=config.partial_channels,
        edge_normalization=config.edge_normalization, dtype=precision.dtype_policy(config.precision),
    )  # fmt: skip
    with initializer_seed(config.seed):
        if config.space == "nb201":
            from darts_tf.nb201.model import Nb201SearchNetwork

            network = Nb201SearchNetwork(config.C, source.num_classes, config.layers, **options)
        else:
            network = SearchNetwork(config.C, source.num_classes, config.layers, space=search_space(config), **options)
        network.build((None, *source.input_shape))
    return network


def build_search(config: SearchConfig, source: data.ImageData, schedule: EpochCosineDecay) -> ArchitectureSearch:
    """The compiled `ArchitectureSearch` of `config` (weights on `schedule`, alphas with Adam)."""
    network = _network(config, source)
    loss_scale = precision.DynamicLossScale() if config.precision == "mixed_float16" else None
    search = ArchitectureSearch(
        network, unrolled=config.unrolled, hessian=config.hessian, beta_decay=config.beta_decay, loss_scale=loss_scale,
        sync_batchnorm=config.sync_batchnorm, budgets=budgets_of(config),
        cost_model=search_cost_model(config, source.input_shape, source.num_classes),
    )  # fmt: skip
    search.compile(
        w_optimizer=SGD(
            schedule, momentum=config.momentum, coupled_weight_decay=config.weight_decay, nesterov=config.nesterov
        ),
        alpha_optimizer=Adam(
            config.arch_learning_rate, beta_1=0.5, beta_2=0.999, coupled_weight_decay=config.arch_weight_decay
        ),
        grad_clip=config.grad_clip,
    )
    return search


class BetaDecaySchedule(keras.callbacks.Callback):
    """beta-DARTS's schedule: the regulariser's weight grows linearly, `beta_decay * epoch / 100` (epoch from 0)."""

    def __init__(self, search: ArchitectureSearch):
        super().__init__()
        self.search = search

    def weight(self, epoch: int) -> float:
        return self.search.beta_decay * epoch / 100.0

    def on_epoch_begin(self, epoch, logs=None):
        self.search.beta_decay_weight.assign(self.weight(epoch))


class ArchWarmup(keras.callbacks.Callback):
    """PC-DARTS's warm-up: the architecture variables train from epoch `warmup` on (epoch from 0)."""

    def __init__(self, search: ArchitectureSearch, warmup: int):
        super().__init__()
        self.search = search
        self.warmup = warmup

    def on_epoch_begin(self, epoch, logs=None):
        self.search.update_arch = epoch >= self.warmup


def derived_genotype(network, config: SearchConfig) -> Genotype | nb201.Nb201Genotype:
    """The network's genotype under the run's derivation rules (`max_skip`; the betas when present)."""
    return network.genotype(max_skip=config.max_skip)


def genotype_class(config: SearchConfig) -> type:
    """The genotype type a search of `config` writes: `Genotype`, or `Nb201Genotype` for NAS-Bench-201."""
    return nb201.Nb201Genotype if config.space == "nb201" else Genotype


def table_accuracy(genotype) -> float | None:
    """A NAS-Bench-201 cell's CIFAR-10 test accuracy in the benchmark's table; None without the table
    (`darts_tf[bench]`) or for a DARTS genotype."""
    if not isinstance(genotype, nb201.Nb201Genotype):
        return None
    from darts_tf.nb201 import table

    try:
        return table.score(genotype)["test_accuracy"]
    except DataError:
        return None


def early_stop_reason(run_dir: str, epoch: int, config: SearchConfig) -> tuple[str, int] | None:
    """(why, the epoch whose genotype is kept) when `config.early_stop` triggers after `epoch`, else None.

    DARTS+ (Liang et al., arXiv:1909.06035): "skip:N" stops once the derived normal cell
    holds N or more skip connections and keeps the genotype of the epoch before;
    "stable:E" stops once the genotype has not changed for E epochs. Read from the
    run folder's genotype_epoch_*.json, so a resumed run decides as an uninterrupted one.
    """
    rule = parse_early_stop(config.early_stop)
    if rule is None:
        return None
    kind, value = rule

    def genotype_of(e):
        path = os.path.join(run_dir, f"genotype_epoch_{e:03d}.json")
        return genotype_class(config).load(path) if os.path.exists(path) else None

    current = genotype_of(epoch)
    if kind == "skip":
        skip = search_space(config).skip
        skips = current.ops.count(skip) if config.space == "nb201" else sum(op == skip for op, _ in current.normal)
        if skips >= value:
            where = "the cell" if config.space == "nb201" else "the normal cell"
            return f"{skips} skip connections in {where} after epoch {epoch}", max(epoch - 1, 0)
        return None
    unchanged = 0
    while unchanged < value and epoch - unchanged - 1 >= 0 and genotype_of(epoch - unchanged - 1) == current:
        unchanged += 1
    if unchanged >= value:
        return f"the genotype has not changed for {value} epochs (epoch {epoch})", epoch
    return None


def record_epoch(network, config: SearchConfig, epoch: int, cost_model=None) -> tuple[Genotype, dict]:
    """The architecture variables after `epoch` (0: the initial ones) and their genotype, in the run folder and
    TensorBoard (with a `cost_model`, the derived and expected costs as scalars under cost/)."""
    alphas = network.arch_arrays()
    genotype = derived_genotype(network, config)
    genotype.save(os.path.join(config.run_dir, f"genotype_epoch_{epoch:03d}.json"))
    runs.save_npz_atomic(os.path.join(config.run_dir, f"alphas_epoch_{epoch:03d}.npz"), **alphas)
    log_dir = os.path.join(config.run_dir, "tensorboard", "search")
    if cost_model is not None:
        visualize.write_scalars(log_dir, epoch, epoch_costs(network, cost_model, genotype), prefix="cost/")
    if config.space == "nb201":
        visualize.write_nb201_search_summaries(log_dir, epoch, alphas["alphas"], genotype, table_accuracy(genotype))
    else:
        visualize.write_search_summaries(
            log_dir, epoch, alphas["alphas_normal"], alphas["alphas_reduce"], genotype, config.steps,
            network.space.primitives,
        )  # fmt: skip
    return genotype, alphas


def cost_line(search: ArchitectureSearch, genotype) -> str:
    """One line: the derived network's costs (and the budgets) on the evaluation network they are counted for."""
    model = search.cost_model
    derived = model.of_genotype(genotype)
    budgets = {b.metric: b.target for b in search.budgets}
    parts = []
    for metric in model.metrics:
        text = f"{derived[metric]:.4g} {cost.UNITS[metric]}"
        parts.append(text + (f" (budget {budgets[metric]:g})" if metric in budgets else ""))
    cells = "cells per stage" if model.space.cell == "nb201" else "cells"
    return f"derived network (C={model.C}, {model.layers} {cells}): " + ", ".join(parts)


class SearchPlan(runs.RunPlan):
    """A search's part of the run lifecycle (`darts_tf.runs.execute`)."""

    what = "search"
    loss_flags = {"loss": "`learning_rate`", "arch_loss": "`arch_learning_rate`"}

    def load_data(self, source):
        """The run's data; its training images split into the weights' and the architecture's halves."""
        source = super().load_data(source)
        self.halves = data.split_for_search(source, self.config.train_portion)
        return source

    def describe(self, source) -> str:
        text = source.description
        if self.config.space == "nb201":
            from darts_tf.nb201 import table

            try:
                table.table_path()
            except DataError as error:  # the epochs' cells are then not scored
                text += f"\n{error}; without it the cells are not scored"
        return text

    def steps_per_epoch(self, source):
        config = self.config
        smallest = min(len(half[0]) for half in self.halves)
        if config.batch_size > smallest:
            raise data.DataError(
                f"`batch_size` {config.batch_size} is larger than the search split ({smallest} images per half "
                f"of {len(source.train_labels)} training images); use `batch_size` {smallest} or less"
            )
        return smallest // config.batch_size

    def build(self, source, schedule):
        return build_search(self.config, source, schedule)

    def optimizers(self, model):
        return {"w_optimizer": model.w_optimizer, "alpha_optimizer": model.alpha_optimizer}

    def first_files(self, run_dir, source, model):
        record_epoch(model.network, dataclasses.replace(self.config, run_dir=run_dir), 0, model.cost_model)

    def batches(self, source, first_epoch, steps_per_epoch):
        config, ((train_x, train_y), (val_x, val_y)) = self.config, self.halves

        def epoch_pair(epoch):
            kwargs = dict(
                mean=source.mean, std=source.std, seed=config.seed, epoch=epoch, cutout_length=config.cutout,
                skip_bad_images=config.skip_bad_images,
            )  # fmt: skip
            # The two halves use different seeds so their shuffles are independent.
            train = data.epoch_dataset(train_x, train_y, config.batch_size, **kwargs).take(steps_per_epoch)
            kwargs["seed"] = config.seed + 1
            val = data.epoch_dataset(val_x, val_y, config.batch_size, **kwargs).take(steps_per_epoch)
            return tf.data.Dataset.zip((train, val))

        return data.epochs_dataset(epoch_pair, first_epoch, config.epochs)

    def validation(self, source):
        val_x, val_y = self.halves[1]
        return data.evaluation_dataset(
            val_x, val_y, self.config.eval_batch_size, source.mean, source.std,
            skip_bad_images=self.config.skip_bad_images,
        )  # fmt: skip

    def callbacks(self, model, written, verbose):
        return [BetaDecaySchedule(model), ArchWarmup(model, self.config.arch_warmup)]

    def end_epoch(self, model, written, epoch, logs, verbose):
        """The epoch's genotype and alphas, the early-stop rule, the kept genotype; the alphas table."""
        run_dir, config = written.run_dir, written
        genotype, alphas = record_epoch(model.network, config, epoch, model.cost_model)
        stop = early_stop_reason(run_dir, epoch, config)
        kept = genotype
        if stop:
            kept = genotype_class(config).load(os.path.join(run_dir, f"genotype_epoch_{stop[1]:03d}.json"))
        kept.save(os.path.join(run_dir, "genotype.json"))
        state = {"genotype": kept.to_dict()}
        if stop:
            state["finished"] = True
            state["early_stop"] = {"rule": config.early_stop, "reason": stop[0], "genotype_epoch": stop[1]}
        if verbose:
            print(f"\nepoch {epoch}: genotype = {genotype.to_json()}")
            if stop:
                print(f"early stop ({config.early_stop}): {stop[0]}; kept the genotype of epoch {stop[1]}")
            if model.cost_model is not None:
                print(cost_line(model, genotype))
            if config.space == "nb201":
                accuracy = table_accuracy(genotype)
                if accuracy is not None:
                    print(f"NAS-Bench-201 table: CIFAR-10 test accuracy {accuracy:.2f} %")
                print(f"softmax(alphas):\n{nb201.format_alphas(alphas['alphas'])}")
            for name in [name for name in ("alphas_normal", "alphas_reduce") if name in alphas]:
                print(f"softmax({name}):\n{format_alphas(alphas[name], config.steps, model.network.space.primitives)}")
            for name in ("betas_normal", "betas_reduce"):
                if name in alphas:
                    print(f"edge weights ({name}): {np.round(edge_weights(alphas[name], config.steps), 4)}")
        return state

    def csv_extra(self, model, schedule):
        def extra(epoch):
            genotype = derived_genotype(model.network, self.config)
            row = {"lr": schedule.value_at_epoch(epoch), "genotype": genotype.to_json()}
            if model.cost_model is not None:
                row |= epoch_costs(model.network, model.cost_model, genotype)
            accuracy = table_accuracy(genotype)
            if accuracy is not None:  # the curve NAS-Bench-201 papers plot
                row["nb201_test_accuracy"] = accuracy
            return row

        return extra

    def finish(self, model, source, written, chief):
        kept = os.path.join(written.run_dir, "genotype.json")  # the kept one (early stop)
        genotype = genotype_class(self.config).load(kept)
        if chief and isinstance(genotype, nb201.Nb201Genotype):
            visualize.save_nb201_cell(genotype, written.run_dir, ("png", "svg"), prefix="cell")
        elif chief:
            visualize.save_cells(genotype, written.run_dir, ("png", "svg"), prefix="cell")
        return {"genotype": genotype}


def run_search(
    config: SearchConfig, resume: bool = False, overwrite: bool = False, verbose: int = 1, callbacks=(),
    strategy: tf.distribute.Strategy | None = None, source=None,
) -> dict:  # fmt: skip
    """Runs (or resumes) a search; returns {"genotype", "history", "seconds", "config", "first_epoch"}.

    Writes the run folder; `callbacks` (Keras callbacks) run after the run's own.
    `strategy` (default: `darts_tf.distribute.make_strategy(config.strategy)`) spreads the
    steps over its replicas at the same global batch; with several workers only the chief
    writes the run folder. Process-wide runtime settings (threads, grappler) are the caller's
    choice: `darts_tf.runtime.configure("search")` is what `darts-tf search` applies.
    `source`: your own data instead of the config's data fields, an `ImageData` or a (train,
    test) pair of tf.data.Datasets of (image, label) (`darts_tf.data.from_datasets`); pass it
    again to resume. The lifecycle is `darts_tf.runs.execute`'s.
    """
    return runs.execute(SearchPlan(config), resume, overwrite, verbose, callbacks, strategy, source)
