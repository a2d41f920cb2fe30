import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from darts_tf import data, runs
from darts_tf.architect import cross_entropy
from darts_tf.cnn.genotypes import DARTS_V2, Genotype
from darts_tf.cnn.train import (
    DropPathSchedule,
    TrainConfig,
    build_network,
    build_trainer,
    drop_path_variables,
    evaluate_run,
    load_trained_network,
    run_training,
)
from darts_tf.export import evaluate_saved_model
from darts_tf.optimizers import learning_rate_schedule

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def tiny_config(tmp_path, **overrides):
    values = dict(epochs=2, batch_size=32, C=4, layers=3, subset=256, eval_batch_size=128, cutout=8)
    values.update(run_dir=str(tmp_path / "run"), export_dir=str(tmp_path / "saved_models"))
    values.update(overrides)
    return TrainConfig(**values)


def test_train_step_equals_the_original_update_by_hand():
    config = TrainConfig(C=4, layers=3, epochs=10, drop_path_prob=0.0)
    trainer = build_trainer(config, build_network(config, DARTS_V2, 10, (32, 32, 3)), learning_rate_schedule(config, 5))
    by_hand = build_network(config, DARTS_V2, 10, (32, 32, 3))  # same seed: same initial weights
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=(8, 32, 32, 3)).astype("float32"))
    y = tf.constant(rng.integers(0, 10, size=8).astype("int32"))

    trainer.train_step((x, y))

    weights = by_hand.trainable_variables
    with tf.GradientTape() as tape:
        out = by_hand(x, training=True)
        loss = cross_entropy(y, out["logits"]) + 0.4 * cross_entropy(y, out["aux_logits"])
    g = [gi.numpy() for gi in tape.gradient(loss, weights)]
    norm = np.sqrt(sum(float(np.sum(gi**2)) for gi in g))
    scale = min(1.0, 5.0 / (norm + 1e-6))
    lr = 0.025  # epoch 0 of the cosine schedule
    for a, w, gi in zip(trainer.network.trainable_variables, weights, g):
        expected = w.numpy() - lr * (scale * gi + 3e-4 * w.numpy())  # first PyTorch SGD step, coupled L2
        np.testing.assert_allclose(a.numpy(), expected, rtol=1e-5, atol=1e-6, err_msg=a.path)
    assert any(np.abs(a.numpy() - w.numpy()).max() > 1e-4 for a, w in zip(trainer.network.trainable_variables, weights))
    # BatchNorm running statistics moved as PyTorch's (momentum 0.1) in both.
    for a, b in zip(trainer.network.non_trainable_variables, by_hand.non_trainable_variables):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6, err_msg=a.path)


def test_drop_path_ramps_linearly_over_epochs():
    config = TrainConfig(C=4, layers=3)
    network = build_network(config, DARTS_V2, 10, (32, 32, 3))
    schedule = DropPathSchedule(network, 0.2, 600)
    assert len(drop_path_variables(network)) == 3
    for epoch, expected in [(0, 0.0), (300, 0.1), (599, 0.2 * 599 / 600)]:
        schedule.on_epoch_begin(epoch)
        for v in drop_path_variables(network):
            assert float(v.numpy()) == pytest.approx(expected)


def test_train_export_evaluate_and_resume_on_real_images(cifar_sample, tmp_path):
    config = tiny_config(tmp_path, data_dir=cifar_sample)
    result = run_training(config, verbose=0)
    run = tmp_path / "run"
    for name in ("config.json", "genotype.json", "data.json", "metrics.csv"):
        assert (run / name).exists(), name
    assert Genotype.load(run / "genotype.json") == DARTS_V2
    assert runs.read_state(str(run)) | {"epoch": 2, "finished": True} == runs.read_state(str(run))
    with open(run / "metrics.csv", encoding="utf-8") as handle:
        rows = handle.read().splitlines()
    assert len(rows) == 3 and "val_accuracy" in rows[0] and "drop_path_prob" in rows[0]
    assert result["export_path"] == str(tmp_path / "saved_models" / "darts_v2" / "1")
    assert not [n for n in os.listdir(tmp_path / "saved_models" / "darts_v2") if n != "1"]  # no temp folders left

    # The checkpoint, the export and fit's own last evaluation agree.
    source = data.load_cifar10_python(cifar_sample)
    from_checkpoint = evaluate_run(str(run), data_dir=cifar_sample)
    served = evaluate_saved_model(result["export_path"], source.test_images, source.test_labels)
    assert from_checkpoint["images"] == served["images"] == len(source.test_labels)
    assert abs(from_checkpoint["accuracy"] - served["accuracy"]) <= 1 / len(source.test_labels)
    assert from_checkpoint["accuracy"] == pytest.approx(result["history"]["val_accuracy"][-1], abs=1.5e-3)

    # Interrupted after epoch 1 and resumed: the same weights as the straight run.
    interrupted = tiny_config(
        tmp_path, data_dir=cifar_sample, epochs=2, run_dir=str(tmp_path / "resumed"), export=False
    )

    class Stop(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            self.model.stop_training = True

    run_training(interrupted, verbose=0, callbacks=[Stop()])
    assert runs.read_state(interrupted.run_dir)["epoch"] == 1
    resumed = run_training(interrupted, resume=True, verbose=0)
    assert resumed["first_epoch"] == 1
    for a, b in zip(result["network"].variables, resumed["network"].variables):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-5, err_msg=a.path)
    with pytest.raises(runs.RunDirError, match="already finished"):
        run_training(interrupted, resume=True, verbose=0)


def test_refuses_bad_input(tmp_path):
    with pytest.raises(ValueError, match="Unknown genotype 'DARTS_V9'"):
        run_training(tiny_config(tmp_path, dataset="synthetic", arch="DARTS_V9"), verbose=0)
    bad = tmp_path / "bad.json"
    bad.write_text('{"normal": [["sep_conv_3x3", 0]]}')
    with pytest.raises(ValueError, match="bad.json"):
        run_training(tiny_config(tmp_path, dataset="synthetic", arch=str(bad), run_dir=str(tmp_path / "r2")), verbose=0)
    with pytest.raises(data.DataError, match="`batch_size` 512"):
        run_training(
            tiny_config(tmp_path, dataset="synthetic", batch_size=512, run_dir=str(tmp_path / "r3")), verbose=0
        )


def _script(*args):
    return subprocess.run(
        [sys.executable, os.path.join(ROOT, "scripts", "train_eval.py"), *args], capture_output=True, text=True
    )


def test_script_errors_are_one_line(tmp_path):
    missing = _script("--data-dir", str(tmp_path / "nowhere"), "--run-dir", str(tmp_path / "r"))
    assert missing.returncode == 2
    last = missing.stderr.strip().splitlines()[-1]
    assert last.startswith("darts-tf train: error:") and "nowhere" in last
    bad = tmp_path / "g.json"
    bad.write_text("{not json")
    result = _script("--dataset", "synthetic", "--genotype", str(bad), "--run-dir", str(tmp_path / "r2"))
    assert result.returncode == 2 and "g.json" in result.stderr.strip().splitlines()[-1]
    assert _script("--epochs", "0").returncode == 2


def test_config_json_round_trips(tmp_path):
    config = tiny_config(tmp_path)
    from dataclasses import asdict

    assert TrainConfig(**json.loads(json.dumps(asdict(config)))) == config


def _run_script(name, *args):
    return subprocess.run(
        [sys.executable, os.path.join(ROOT, "scripts", name), *args], capture_output=True, text=True, cwd=ROOT
    )


@pytest.mark.slow
def test_export_and_evaluate_scripts(tmp_path):
    config = tiny_config(tmp_path, dataset="synthetic", epochs=1, subset=64, export=False)
    run_training(config, verbose=0)
    exported = _run_script(
        "export.py",
        "--run-dir",
        config.run_dir,
        "--export-dir",
        str(tmp_path / "sm"),
        "--name",
        "tiny",
        "--version",
        "3",
    )
    assert exported.returncode == 0, exported.stderr[-2000:]
    path = tmp_path / "sm" / "tiny" / "3"
    assert exported.stdout.strip().endswith(str(path)) and (path / "saved_model.pb").exists()
    results = []
    for flags in (["--saved-model", str(path), "--dataset", "synthetic"], ["--run-dir", config.run_dir]):
        result = _run_script("evaluate.py", *flags, "--json")
        assert result.returncode == 0, result.stderr[-2000:]
        results.append(json.loads(result.stdout.strip().splitlines()[-1]))
    assert results[0]["images"] == results[1]["images"] > 0
    assert abs(results[0]["accuracy"] - results[1]["accuracy"]) <= 1 / results[0]["images"]
    again = _run_script(
        "export.py",
        "--run-dir",
        config.run_dir,
        "--export-dir",
        str(tmp_path / "sm"),
        "--name",
        "tiny",
        "--version",
        "3",
    )
    assert again.returncode == 2 and "already exists" in again.stderr.strip().splitlines()[-1]


def test_export_script_serves_pytorch_weights(tmp_path):
    from darts_tf.cnn.eval_model import NetworkCIFAR, inference_model
    from darts_tf.cnn.pytorch import to_pytorch_state_dict

    model = NetworkCIFAR(4, 10, 3, True, DARTS_V2)
    np.savez(tmp_path / "weights.npz", **to_pytorch_state_dict(model))
    result = _run_script(
        "export.py", "--pytorch-weights", str(tmp_path / "weights.npz"), "--C", "4", "--layers", "3",
        "--export-dir", str(tmp_path / "sm"), "--name", "from_torch",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    images = np.random.default_rng(0).integers(0, 256, size=(3, 32, 32, 3), dtype=np.uint8)
    served = tf.saved_model.load(str(tmp_path / "sm" / "from_torch" / "1")).signatures["serving_default"]
    logits = served(images=tf.constant(images))["logits"].numpy()
    x = (images / 255.0 - np.array(data.CIFAR_MEAN)) / np.array(data.CIFAR_STD)
    expected = inference_model(model)(tf.constant(x, tf.float32)).numpy()
    np.testing.assert_allclose(logits, expected, atol=1e-5)
    missing = _run_script("export.py", "--pytorch-weights", str(tmp_path / "nope.npz"))
    assert missing.returncode == 2 and "nope.npz" in missing.stderr.strip().splitlines()[-1]


def test_failed_start_leaves_no_run_folder(tmp_path):
    with pytest.raises(ValueError, match="genotype file 'nope.json' does not exist"):
        run_training(tiny_config(tmp_path, dataset="synthetic", arch="nope.json"), verbose=0)
    assert not (tmp_path / "run").exists()


def test_label_smoothing_is_the_originals_cross_entropy_label_smooth():
    from darts_tf.cnn.train import smoothed_cross_entropy

    rng = np.random.default_rng(0)
    logits, labels = rng.normal(size=(6, 5)), rng.integers(0, 5, size=6)
    log_probs = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    targets = 0.9 * np.eye(5)[labels] + 0.1 / 5  # CrossEntropyLabelSmooth(num_classes=5, epsilon=0.1)
    expected = (-targets * log_probs).mean(0).sum()
    np.testing.assert_allclose(float(smoothed_cross_entropy(labels, tf.constant(logits, tf.float32), 0.1)), expected,
                               rtol=1e-5)  # fmt: skip
    plain = smoothed_cross_entropy(labels, tf.constant(logits, tf.float32), 0.0)
    np.testing.assert_allclose(float(plain), -log_probs[np.arange(6), labels].mean(), rtol=1e-5)


def test_imagenet_recipe_trains_network_imagenet_on_streamed_files(tmp_path):
    from darts_tf.cnn.eval_model import NetworkImageNet
    from darts_tf.config import TRAIN_PRESETS

    rng = np.random.default_rng(0)
    for split, count in (("train", 6), ("val", 2)):
        for label, name in enumerate(["n01", "n02"]):
            os.makedirs(tmp_path / "imagenet" / split / name)
            for i in range(count):
                image = np.clip(rng.normal(80 + 80 * label, 40, size=(70 + 5 * i, 90, 3)), 0, 255).astype(np.uint8)
                tf.io.write_file(str(tmp_path / "imagenet" / split / name / f"{i}.jpg"), tf.io.encode_jpeg(image))
    preset = TRAIN_PRESETS["imagenet"]
    assert (preset["learning_rate"], preset["weight_decay"], preset["label_smoothing"], preset["lr_decay"]) == (
        0.1, 3e-5, 0.1, 0.97,
    )  # fmt: skip
    config = TrainConfig(
        **{**preset, "image_size": 64, "C": 8, "layers": 3, "auxiliary": False, "epochs": 2, "batch_size": 4},
        data_dir=str(tmp_path / "imagenet"), stream=True, run_dir=str(tmp_path / "run"),
        export_dir=str(tmp_path / "sm"), eval_batch_size=3,
    )  # fmt: skip
    result = run_training(config, verbose=0)
    assert isinstance(result["network"], NetworkImageNet) and result["network"].input_shape == (None, 64, 64, 3)
    with open(tmp_path / "run" / "metrics.csv") as handle:
        rows = handle.read().splitlines()
    lr = [float(row.split(",")[rows[0].split(",").index("lr")]) for row in rows[1:]]
    np.testing.assert_allclose(lr, [0.1, 0.097])
    summary = evaluate_run(str(tmp_path / "run"))
    served = evaluate_saved_model(result["export_path"], *_streamed_test(config), augmentation="imagenet")
    assert summary["images"] == served["images"] == 4
    assert summary["accuracy"] == pytest.approx(served["accuracy"])


def _streamed_test(config):
    source = runs.load_run_data(config)
    assert data.is_streamed(source.test_images) and source.test_split == "val"
    return source.test_images, source.test_labels


def test_the_same_seed_gives_the_same_run(cifar_sample, tmp_path):
    """Two trainings of one config on real images (augmentation, cutout, drop path): every number equal."""
    runs_ = []
    for name in ("a", "b"):
        config = tiny_config(
            tmp_path / name, data_dir=cifar_sample, subset=128, epochs=2, drop_path_prob=0.3, export=False
        )
        run_training(config, verbose=0)
        network, _, _ = load_trained_network(config.run_dir)
        runs_.append(((tmp_path / name / "run" / "metrics.csv").read_text(), [w.numpy() for w in network.weights]))
    (metrics_a, weights_a), (metrics_b, weights_b) = runs_
    assert metrics_a == metrics_b and metrics_a.count("\n") == 3
    assert all(np.array_equal(a, b) for a, b in zip(weights_a, weights_b, strict=True))
