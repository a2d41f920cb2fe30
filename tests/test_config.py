"""darts_tf.config: presets are valid configs, config.json round trips, bad fields are named."""

import dataclasses
import json
import subprocess
import sys

import pytest

from darts_tf import config
from darts_tf.errors import ConfigError

PRESETS = [
    (config.SearchConfig, config.SEARCH_PRESETS, config.check_choices),
    (config.TrainConfig, config.TRAIN_PRESETS, config.check_choices),
    (config.RNNSearchConfig, config.RNN_SEARCH_PRESETS, config.check_rnn_config),
    (config.RNNTrainConfig, config.RNN_TRAIN_PRESETS, config.check_rnn_config),
]


@pytest.mark.parametrize("config_class, presets, check", PRESETS)
def test_every_preset_is_a_valid_config_that_round_trips_through_json(config_class, presets, check):
    assert "paper" in presets and presets["paper"] == {}  # the defaults are the paper's
    for values in presets.values():
        made = config_class(**values)
        check(made)
        saved = json.loads(json.dumps(dataclasses.asdict(made)))
        assert config.config_from_dict(config_class, saved) == made


def test_config_json_of_older_runs_loads_without_retired_keys_and_with_overrides():
    saved = {**dataclasses.asdict(config.SearchConfig()), "graph_optimization": "off"}
    loaded = config.config_from_dict(config.SearchConfig, saved, run_dir="elsewhere")
    assert loaded == config.SearchConfig(run_dir="elsewhere")


def test_presets_differ_from_the_paper_only_where_they_say():
    quick = config.SearchConfig(**config.SEARCH_PRESETS["quick"])
    changed = {
        f.name for f in dataclasses.fields(quick) if getattr(quick, f.name) != getattr(config.SearchConfig(), f.name)
    }
    assert changed == {"epochs", "C", "layers"}  # batch 64 is the paper's too
    assert config.TrainConfig(**config.TRAIN_PRESETS["imagenet"]).network == "imagenet"


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"network": "vgg"}, "`network` must be one of cifar, imagenet. Received: 'vgg'"),
        ({"augmentation": "auto"}, "`augmentation` must be one of cifar, imagenet"),
        ({"lr_schedule": "step"}, "`lr_schedule` must be one of cosine, exponential"),
        ({"strategy": "tpu"}, "`strategy` must be one of auto, one, mirrored, multi_worker"),
        ({"precision": "float16"}, "`precision` must be one of float32, mixed_bfloat16, mixed_float16"),
        ({"label_smoothing": 1.0}, r"`label_smoothing` must be in \[0, 1\)"),
        ({"lr_decay": 0.0}, r"`lr_decay` must be in \(0, 1\]"),
    ],
)
def test_training_choices_are_named_by_field(bad, message):
    with pytest.raises(ConfigError, match=message):
        config.check_choices(config.TrainConfig(**bad))


@pytest.mark.parametrize(
    "rule, expected",
    [(None, None), ("skip:2", ("skip", 2)), ("stable:10", ("stable", 10))],
)
def test_early_stop_rules(rule, expected):
    assert config.parse_early_stop(rule) == expected


@pytest.mark.parametrize("rule", ["skip", "skip:0", "stable:x", "loss:3", "skip:-1"])
def test_bad_early_stop_rules_are_named(rule):
    with pytest.raises(ConfigError, match="`early_stop` must be skip:N or stable:E"):
        config.parse_early_stop(rule)


def test_recurrent_fields_are_named():
    with pytest.raises(ConfigError, match="`nhid` must be positive. Received: 0"):
        config.check_rnn_config(config.RNNSearchConfig(nhid=0))
    with pytest.raises(ConfigError, match=r"`train_portion` must be in \(0, 1\). Received: 1.0"):
        config.check_rnn_config(config.RNNTrainConfig(train_portion=1.0))


def test_configs_import_no_tensorflow():
    code = "import sys, darts_tf.config; print('tensorflow' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"


def test_what_an_experiment_is_apart_from_how_it_runs():
    task, run = config.task_and_run_settings(config.SearchConfig())
    assert set(run) == {"run_dir", "strategy", "precision", "sync_batchnorm", "eval_batch_size", "shared_trace"}
    assert {"C", "layers", "unrolled", "learning_rate", "data_dir", "seed"} <= set(task)
    assert not set(task) & set(run)
    _, run = config.task_and_run_settings(config.TrainConfig())
    assert set(run) == {
        "run_dir",
        "strategy",
        "precision",
        "sync_batchnorm",
        "eval_batch_size",
        "export",
        "export_dir",
        "export_name",
    }


def test_the_recurrent_configs_share_one_base_with_each_runs_defaults():
    shared = {f.name for f in dataclasses.fields(config.LanguageModelSettings)}
    for config_class in (config.RNNSearchConfig, config.RNNTrainConfig):
        assert shared <= {f.name for f in dataclasses.fields(config_class)}
    search, train = config.RNNSearchConfig(), config.RNNTrainConfig()
    assert (search.nhid, search.batch_size, search.seed) == (300, 256, 3)  # the original's train_search.py
    assert (train.nhid, train.batch_size, train.seed, train.dropoute) == (850, 64, 1267, 0.1)  # its train.py
