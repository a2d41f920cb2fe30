"""The settings of a search and of a training run, as plain dataclasses (no TensorFlow).

A config says *what* a run computes (network, data, schedule, seeds); how the
process runs it (threads, grappler, malloc pages, logging) is the commands'
business (`darts_tf.runtime`), not part of the config. The commands build
configs from a preset and their flags; `config.json` in a run folder holds one.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import os
import sys

from darts_tf.errors import ConfigError

# Dataset names `--dataset` accepts (a local copy is named by `--data-dir` instead).
DATASETS = ("cifar10", "synthetic")
NETWORKS = ("cifar", "imagenet")  # NetworkCIFAR or NetworkImageNet (three stride-2 stem convolutions)
AUGMENTATIONS = ("cifar", "imagenet")  # see darts_tf.data.pipeline
LR_SCHEDULES = ("cosine", "exponential")
# tf.distribute strategies (darts_tf.distribute.make_strategy): how a run is spread, not what it computes.
STRATEGIES = ("auto", "one", "mirrored", "multi_worker")
# The networks' compute type (darts_tf.precision.PRECISIONS; here without TensorFlow).
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")
# The cell spaces a search runs over: DARTS's (darts_tf.cnn) or NAS-Bench-201's (darts_tf.nb201).
SPACES = ("darts", "nb201")

# Keys that older run folders' config.json may hold and that are no longer part of a config.
_RETIRED_KEYS = ("graph_optimization",)


@dataclasses.dataclass
class DataSettings:
    """Where a run's images come from and their shape (`darts_tf.data.load_data`'s arguments)."""

    dataset: str = "cifar10"  # cifar10, synthetic or tfds:NAME
    data_dir: str | None = None  # CIFAR-10/100 python batches, an image folder or an .npz (detected)
    image_size: int = 0  # resize to this square size (0: the data's own)
    channels: int = 0  # 1 or 3 (0: the data's own)
    tfds_data_dir: str | None = None
    skip_bad_images: bool = False
    subset: int = 0  # use only `subset` training images, as many of each class (0: all)
    stream: bool = False  # image folders: decode on the fly from disk (automatic above 4 GiB decoded)
    cache: str | None = None  # image folders: decode once into this folder, then read it memory-mapped


@dataclasses.dataclass
class RunSettings:
    """How a run is carried out, not what it computes (as Model Garden's runtime config): where
    it writes, over which devices, in which compute type, at which evaluation batch. Changing
    them leaves a run's result as it is (to round-off; `precision`: half precision's;
    `sync_batchnorm` off: each replica's own BatchNorm statistics)."""

    run_dir: str = "runs/run"
    # auto, one, mirrored, multi_worker (darts_tf.distribute): how the run is spread over devices;
    # batch_size stays the global batch, so the result is the one device's.
    strategy: str = "auto"
    # float32, mixed_bfloat16 or mixed_float16 (darts_tf.precision): the networks' compute type.
    precision: str = "float32"
    # Under several replicas: BatchNorm statistics of the global batch (True: what one device computes)
    # or of each replica's batch (False: faster, a different result, as PyTorch's DataParallel).
    sync_batchnorm: bool = True
    eval_batch_size: int = 256


def task_and_run_settings(config) -> tuple[dict, dict]:
    """A config's fields as (what the experiment is, how it is run): the second holds its
    `RunSettings` fields and the other fields of how it runs (`shared_trace`, the export's)."""
    run_names = {f.name for f in dataclasses.fields(RunSettings)} | set(getattr(config, "RUN_FIELDS", ()))
    values = dataclasses.asdict(config)
    return (
        {name: value for name, value in values.items() if name not in run_names},
        {name: value for name, value in values.items() if name in run_names},
    )


@dataclasses.dataclass
class SearchConfig(DataSettings, RunSettings):
    """Every setting of a search run; the defaults are the paper's (arXiv:1806.09055, Sec. 3.1.2).

    The experiment: the data fields (`DataSettings`), the network, the schedule and the
    algorithm below; how it runs: `RunSettings` and `shared_trace` (`task_and_run_settings`).
    """

    RUN_FIELDS = ("shared_trace",)

    space: str = "darts"  # darts, or nb201: NAS-Bench-201's cell (`layers` then counts cells per stage)
    epochs: int = 50
    batch_size: int = 64
    C: int = 16
    layers: int = 8
    steps: int = 4
    multiplier: int = 4
    # The candidate ops of every edge, registered names (None: DARTS's eight; darts_tf.cnn.space).
    primitives: list[str] | None = None
    inputs_per_node: int = 2  # incoming edges derivation keeps per node (DARTS: 2)
    ops_module: str | None = None  # a Python file or module imported first: it registers ops of yours
    seed: int = 2
    unrolled: bool = False
    hessian: str = "finite_difference"
    train_portion: float = 0.5
    learning_rate: float = 0.025
    learning_rate_min: float = 0.001
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 3e-4
    grad_clip: float = 5.0
    arch_learning_rate: float = 3e-4
    arch_weight_decay: float = 1e-3
    cutout: int = 0
    beta_decay: float = 0.0  # beta-DARTS: regulariser weight beta_decay * epoch / 100 (their setting: 50)
    max_skip: int | None = None  # P-DARTS: at most this many skip connections in the derived normal cell
    early_stop: str | None = None  # DARTS+: "skip:N" (N skips in the normal cell) or "stable:E" (E epochs unchanged)
    partial_channels: int = 1  # PC-DARTS: each edge's ops see 1/K of its channels (their setting: 4; 1: off)
    edge_normalization: bool = False  # PC-DARTS: per-node softmax edge weights (betas), trained with the alphas
    arch_warmup: int = 0  # epochs of weight training before the architecture steps start (PC-DARTS: 15)
    # Costs of the evaluation network the cells become (darts_tf.cnn.cost; docs/hardware-aware.md): a latency
    # table (darts-tf latency-table) gives latency and the network's size; budgets (0: none) in ms, millions
    # of mult-adds, millions of parameters join the architecture loss with `budget_weight` in `budget_form`.
    latency_table: str | None = None
    latency_budget: float = 0.0
    flops_budget: float = 0.0
    params_budget: float = 0.0
    budget_weight: float = 1.0
    budget_form: str = "hinge"  # hinge, linear (ProxylessNAS), fbnet (FBNet)
    # The evaluation network costs are counted for without a table (0: DARTS's 36 channels and 20 cells;
    # NAS-Bench-201: the search's C and cells per stage).
    cost_C: int = 0
    cost_layers: int = 0
    # Packed edges as shared out-of-line functions: a much faster start-up and less memory, steps as
    # fast (docs/performance.md); False inlines every edge (the plain reference).
    shared_trace: bool = True
    run_dir: str = "runs/search"


SEARCH_PRESETS = {
    "paper": {},
    # A CPU-sized search: a narrow, shallow network for a few epochs.
    "quick": {"epochs": 3, "batch_size": 64, "C": 8, "layers": 5},
    # PC-DARTS's train_search.py (Xu et al., arXiv:1907.05737): K=4, edge normalisation, batch 256,
    # lr 0.1 annealed to 0, arch lr 6e-4, architecture steps from epoch 15 on; first order.
    "pcdarts": {
        "partial_channels": 4,
        "edge_normalization": True,
        "batch_size": 256,
        "learning_rate": 0.1,
        "learning_rate_min": 0.0,
        "arch_learning_rate": 6e-4,
        "arch_warmup": 15,
    },
    # NAS-Bench-201's DARTS search (Dong & Yang, ICLR 2020; its DARTS.config): its cell and network (C=16,
    # N=5 cells per stage), SGD with Nesterov momentum and weight decay 5e-4, otherwise DARTS's settings.
    "nb201": {"space": "nb201", "layers": 5, "nesterov": True, "weight_decay": 5e-4},
}


@dataclasses.dataclass
class TrainConfig(DataSettings, RunSettings):
    """Every setting of an evaluation training run; the defaults are the paper's CIFAR-10 ones.

    How it runs: `RunSettings` and the export's fields (`task_and_run_settings`).
    """

    RUN_FIELDS = ("export", "export_dir", "export_name")

    arch: str = "DARTS_V2"  # a published genotype name, or a genotype JSON file
    ops_module: str | None = None  # a Python file or module imported first: it registers ops of yours
    network: str = "cifar"  # cifar (NetworkCIFAR) or imagenet (NetworkImageNet)
    augmentation: str = "cifar"  # cifar (pad-4 crop, flip) or imagenet (random-resized crop, flip, colour jitter)
    epochs: int = 600
    batch_size: int = 96
    C: int = 36
    layers: int = 20
    auxiliary: bool = True
    auxiliary_weight: float = 0.4
    cutout: int = 16
    drop_path_prob: float = 0.2
    label_smoothing: float = 0.0
    learning_rate: float = 0.025
    lr_schedule: str = "cosine"  # cosine (to learning_rate_min) or exponential (x lr_decay every epoch)
    learning_rate_min: float = 0.0
    lr_decay: float = 0.97
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 3e-4
    grad_clip: float = 5.0  # 0: no clipping
    seed: int = 0
    run_dir: str = "runs/eval"
    export: bool = True
    export_dir: str = "saved_models"
    export_name: str | None = None  # default: the arch name (lower case) or "darts_eval"


TRAIN_PRESETS = {
    "paper": {},
    # A CPU-sized run: a narrow 8-cell network for a few epochs on the CIFAR sample.
    "quick": {"epochs": 8, "batch_size": 64, "C": 16, "layers": 8},
    # The original's train_imagenet.py: the mobile setting (C=48, 14 cells, 224x224) for 250 epochs.
    "imagenet": {
        "network": "imagenet",
        "augmentation": "imagenet",
        "image_size": 224,
        "C": 48,
        "layers": 14,
        "epochs": 250,
        "batch_size": 128,
        "learning_rate": 0.1,
        "lr_schedule": "exponential",
        "lr_decay": 0.97,
        "weight_decay": 3e-5,
        "label_smoothing": 0.1,
        "auxiliary_weight": 0.4,
        "drop_path_prob": 0.0,
        "cutout": 0,
    },  # fmt: skip
    # NAS-Bench-201's training of a cell (Dong & Yang, ICLR 2020; as the table of darts-tf score was made):
    # its network (C=16, 5 cells per stage), 200 epochs, batch 256, SGD with Nesterov momentum 0.9, lr 0.1
    # cosine to 0, weight decay 5e-4, random crop and flip only, no auxiliary head, drop path or clipping.
    "nb201": {
        "C": 16,
        "layers": 5,
        "epochs": 200,
        "batch_size": 256,
        "learning_rate": 0.1,
        "learning_rate_min": 0.0,
        "nesterov": True,
        "weight_decay": 5e-4,
        "auxiliary": False,
        "cutout": 0,
        "drop_path_prob": 0.0,
        "grad_clip": 0.0,
    },  # fmt: skip
}


@dataclasses.dataclass
class LanguageModelSettings:
    """What the recurrent search and training share: the corpus, the language model and its
    regularisation, the optimiser, and how the run writes (`run_dir`, `eval_batch_size`,
    `max_steps`). The defaults are the original's rnn/train_search.py; `RNNTrainConfig`
    overrides the ones its rnn/train.py sets otherwise."""

    data_dir: str = "data/penn"  # train.txt, valid.txt, test.txt (or ptb.*.txt)
    train_portion: float | None = None  # without a training file: train on this first part of valid.txt
    emsize: int = 300  # = nhid (tied embedding)
    nhid: int = 300
    epochs: int = 50
    batch_size: int = 256
    bptt: int = 35
    learning_rate: float = 20.0
    clip: float = 0.25
    weight_decay: float = 5e-7
    dropout: float = 0.75
    dropouth: float = 0.25
    dropoutx: float = 0.75
    dropouti: float = 0.2
    dropoute: float = 0.0
    ar_alpha: float = 0.0  # AR (activation regularisation) weight
    tar_beta: float = 1e-3  # TAR (temporal activation regularisation) weight
    seed: int = 3
    eval_batch_size: int = 10
    max_steps: int = 0  # weight steps per epoch at most (0: the whole training text)
    run_dir: str = "runs/search_rnn"
    # float32, mixed_bfloat16 or mixed_float16 (darts_tf.precision): the language model's compute type.
    precision: str = "float32"


@dataclasses.dataclass
class RNNSearchConfig(LanguageModelSettings):
    """A recurrent (Penn Treebank) search; the defaults are the original's rnn/train_search.py."""

    arch_learning_rate: float = 3e-3
    arch_weight_decay: float = 1e-3
    unrolled: bool = False
    # Second order: "original" keeps the tied embedding at w in the virtual step w' (as quark0/darts
    # computes it, which found the published cells); "paper" moves every weight (docs/fidelity.md).
    virtual_step: str = "original"


RNN_SEARCH_PRESETS = {
    "paper": {},
    # CPU-sized: the shared PTB sample (80% of ptb.valid.txt trains, the rest validates), a 64-unit cell.
    "quick": {"train_portion": 0.8, "emsize": 64, "nhid": 64, "batch_size": 64, "epochs": 3},
}


@dataclasses.dataclass
class RNNTrainConfig(LanguageModelSettings):
    """A recurrent cell's language-model training; the defaults are the original's rnn/train.py."""

    emsize: int = 850
    nhid: int = 850
    epochs: int = 8000  # the original's cap; averaged SGD after `nonmono` epochs without improvement
    batch_size: int = 64
    weight_decay: float = 8e-7
    dropoute: float = 0.1
    seed: int = 1267
    run_dir: str = "runs/train_rnn"
    arch: str = "DARTS_V2"  # a published recurrent genotype name, or a genotype JSON file
    nonmono: int = 5
    max_seq_len_delta: int = 20
    test_batch_size: int = 1
    export: bool = True
    export_dir: str = "saved_models"
    export_name: str | None = None


RNN_TRAIN_PRESETS = {
    "paper": {},
    "quick": {"train_portion": 0.8, "emsize": 64, "nhid": 64, "epochs": 10, "batch_size": 32, "nonmono": 2},
}


def check_rnn_config(config) -> None:
    """ConfigError naming the field for out-of-range settings of a recurrent config."""
    for name in ("emsize", "nhid", "epochs", "batch_size", "bptt", "eval_batch_size"):
        if getattr(config, name) <= 0:
            raise ConfigError(f"`{name}` must be positive. Received: {getattr(config, name)}")
    if config.emsize != config.nhid:
        raise ConfigError(f"`emsize` must equal `nhid` (tied weights). Received: {config.emsize} and {config.nhid}")
    for name in ("dropout", "dropouth", "dropoutx", "dropouti", "dropoute"):
        if not 0.0 <= getattr(config, name) < 1.0:
            raise ConfigError(f"`{name}` must be in [0, 1). Received: {getattr(config, name)}")
    check_choices(config)  # `precision`
    if getattr(config, "virtual_step", "original") not in ("original", "paper"):
        raise ConfigError(f"`virtual_step` must be original or paper. Received: {config.virtual_step!r}")
    if getattr(config, "nonmono", 0) < 0:
        raise ConfigError(f"`nonmono` must be 0 or more. Received: {config.nonmono}")
    if config.train_portion is not None and not 0.0 < config.train_portion < 1.0:
        raise ConfigError(f"`train_portion` must be in (0, 1). Received: {config.train_portion}")


def config_from_dict(config_class, values: dict, **overrides):
    """A config from a saved `config.json` (retired keys dropped), with `overrides` applied."""
    kept = {key: value for key, value in values.items() if key not in _RETIRED_KEYS}
    return config_class(**{**kept, **overrides})


def parse_early_stop(rule: str | None) -> tuple[str, int] | None:
    """("skip", N) or ("stable", E) from "skip:N" / "stable:E" (ConfigError naming `early_stop` otherwise)."""
    if rule is None:
        return None
    kind, _, value = str(rule).partition(":")
    if kind not in ("skip", "stable") or not value.isdigit() or int(value) < 1:
        raise ConfigError(f"`early_stop` must be skip:N or stable:E with a positive integer. Received: {rule!r}")
    return kind, int(value)


def check_choices(config) -> None:
    """ConfigError naming the field when a config field holds a value outside its choices."""
    choices_of = (("network", NETWORKS), ("augmentation", AUGMENTATIONS), ("lr_schedule", LR_SCHEDULES),
                  ("strategy", STRATEGIES), ("precision", PRECISIONS), ("space", SPACES))  # fmt: skip
    for field, choices in choices_of:
        value = getattr(config, field, None)
        if value is not None and value not in choices:
            raise ConfigError(f"`{field}` must be one of {', '.join(choices)}. Received: {value!r}")
    if not 0.0 <= getattr(config, "label_smoothing", 0.0) < 1.0:
        raise ConfigError(f"`label_smoothing` must be in [0, 1). Received: {config.label_smoothing}")
    if not 0.0 < getattr(config, "lr_decay", 1.0) <= 1.0:
        raise ConfigError(f"`lr_decay` must be in (0, 1]. Received: {config.lr_decay}")
    parse_early_stop(getattr(config, "early_stop", None))
    if getattr(config, "beta_decay", 0.0) < 0:
        raise ConfigError(f"`beta_decay` must be 0 or more. Received: {config.beta_decay}")
    if getattr(config, "max_skip", None) is not None and config.max_skip < 0:
        raise ConfigError(f"`max_skip` must be 0 or more. Received: {config.max_skip}")
    if getattr(config, "arch_warmup", 0) < 0:
        raise ConfigError(f"`arch_warmup` must be 0 or more. Received: {config.arch_warmup}")
    if hasattr(config, "primitives"):
        space = search_space(config)  # ConfigError naming an unknown op or a bad cell size
        rule = parse_early_stop(config.early_stop)
        if space.skip is None and (config.max_skip is not None or (rule and rule[0] == "skip")):
            raise ConfigError("`max_skip` and `early_stop` skip:N count skip_connect, which `primitives` lacks")
    check_budgets(config)
    partial = getattr(config, "partial_channels", 1)
    if partial != 1 and (partial < 1 or config.C % partial):
        raise ConfigError(f"`partial_channels` must be a positive divisor of `C` {config.C}. Received: {partial}")


def check_budgets(config) -> None:
    """ConfigError naming the field for a bad budget setting (`darts_tf.cnn.cost`)."""
    if not hasattr(config, "latency_budget"):
        return
    from darts_tf.cnn.cost import FORMS

    for name in ("latency_budget", "flops_budget", "params_budget", "budget_weight", "cost_C", "cost_layers"):
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0 or value == float("inf"):
            raise ConfigError(f"`{name}` must be a number >= 0. Received: {value!r}")
    if config.budget_form not in FORMS:
        raise ConfigError(f"`budget_form` must be one of {', '.join(FORMS)}. Received: {config.budget_form!r}")
    if config.latency_budget and not config.latency_table:
        raise ConfigError("`latency_budget` needs a `latency_table` (measure one with `darts-tf latency-table`)")
    if config.latency_table and (config.cost_C or config.cost_layers):
        raise ConfigError("`cost_C`/`cost_layers` come from the `latency_table` when one is given: leave them 0")


def search_space(config):
    """The `darts_tf.cnn.space.SearchSpace` of a search config: its primitives (DARTS's if None), steps,
    multiplier and inputs_per_node."""
    from darts_tf.cnn.space import search_space as make

    if getattr(config, "space", "darts") == "nb201":
        from darts_tf.nb201.genotypes import NB201_SPACE

        fixed = {"primitives": None, "steps": 4, "multiplier": 4, "inputs_per_node": 2}
        changed = [name for name, value in fixed.items() if getattr(config, name) != value]
        if changed:
            raise ConfigError(f"NAS-Bench-201's cell is fixed (its 5 ops, 3 nodes): `{changed[0]}` cannot change it")
        return NB201_SPACE
    primitives = config.primitives
    if primitives is not None and (isinstance(primitives, str) or not isinstance(primitives, (list, tuple))):
        raise ConfigError(f"`primitives` must be a list of op names. Received: {primitives!r}")
    return make(primitives, config.steps, config.multiplier, config.inputs_per_node)


def import_ops_module(spec: str | None) -> None:
    """Imports `spec` (a .py file or an importable module name; None: nothing), whose `register_op`
    calls add ops of yours (`darts_tf.cnn.space`); importing it again does nothing."""
    if spec is None:
        return
    if not isinstance(spec, str) or not spec:
        raise ConfigError(f"`ops_module` must be a .py file or a module name. Received: {spec!r}")
    if spec.endswith(".py") or os.sep in spec:
        path = os.path.abspath(spec)
        if not os.path.isfile(path):
            raise ConfigError(f"`ops_module` {spec!r} does not exist (expected a .py file or a module name)")
        name = "darts_tf_ops_" + "".join(c if c.isalnum() else "_" for c in path)
        if name in sys.modules:
            return
        loader_spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(loader_spec)
        sys.modules[name] = module
        try:
            loader_spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[name]
            raise
        return
    try:
        importlib.import_module(spec)
    except ModuleNotFoundError as error:
        if error.name and spec.startswith(error.name):  # the module itself, not one it imports
            raise ConfigError(f"`ops_module` {spec!r} is not an importable module (nor a .py file)") from None
        raise
