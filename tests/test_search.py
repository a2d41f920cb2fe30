import csv
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from darts_tf import architect, data, runs
from darts_tf.cnn.genotypes import Genotype
from darts_tf.cnn.search import SearchConfig, _network, build_search, run_search
from darts_tf.optimizers import learning_rate_schedule
from darts_tf.runtime import set_graph_optimization

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def tiny_config(run_dir, **overrides):
    values = dict(epochs=1, batch_size=16, C=4, layers=3, steps=2, multiplier=2, subset=128, eval_batch_size=64)
    values["run_dir"] = str(run_dir)
    values.update(overrides)
    return SearchConfig(**values)


@pytest.mark.slow
@pytest.mark.parametrize("unrolled", [False, True])
def test_one_epoch_search_on_real_images(cifar_sample, tmp_path, unrolled):
    config = tiny_config(tmp_path / "run", data_dir=cifar_sample, unrolled=unrolled)
    result = run_search(config, verbose=0)
    run = tmp_path / "run"
    for name in ("config.json", "genotype.json", "genotype_epoch_001.json", "alphas_epoch_001.npz", "metrics.csv"):
        assert (run / name).exists(), name
    assert (run / "checkpoint" / "state.json").exists() and os.listdir(run / "tensorboard")
    genotype = Genotype.load(run / "genotype.json")
    assert genotype == result["genotype"]
    source = data.load_cifar10_python(cifar_sample)
    initial = _network(config, source)  # same seed: the alphas the search started from
    with np.load(run / "alphas_epoch_001.npz") as saved:
        moved = np.abs(saved["alphas_normal"] - initial.alphas_normal.numpy()).max()
    assert moved > 1e-4  # 4 Adam steps of lr 3e-4
    assert 0.0 <= result["history"]["val_accuracy"][0] <= 1.0
    assert runs.read_state(str(run))["finished"] is True


def _numpy_adam_step(alpha, g, lr=3e-4, b1=0.5, b2=0.999, eps=1e-8, wd=1e-3):
    g = g + wd * alpha
    m, v = (1 - b1) * g, (1 - b2) * g * g
    return alpha - lr / (1 - b1) * m / (np.sqrt(v) / np.sqrt(1 - b2) + eps)


@pytest.mark.slow
@pytest.mark.parametrize("unrolled", [False, True])
def test_train_step_equals_core_functions_by_hand(unrolled):
    source = data.make_synthetic(num_train=32, num_test=8, image_size=8)
    config = SearchConfig(C=4, layers=3, steps=2, multiplier=2, unrolled=unrolled, epochs=10)
    search = build_search(config, source, learning_rate_schedule(config, 4))
    by_hand = _network(config, source)  # same seed, same initial weights and alphas
    for a, b in zip(search.network.variables, by_hand.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    x = tf.constant(((source.train_images[:16] / 255.0) - 0.5).astype("float32"))
    y = tf.constant(source.train_labels[:16])
    train, val = (x[:8], y[:8]), (x[8:], y[8:])

    search.train_step((train, val))

    lr = 0.025  # epoch 0 of the cosine schedule
    if unrolled:
        grads, _ = architect.second_order_arch_gradients(by_hand, train, val, xi=lr, momentum=0.9, weight_decay=3e-4)
    else:
        grads, _ = architect.first_order_arch_gradients(by_hand, val)
    new_alphas = [_numpy_adam_step(a.numpy(), g.numpy()) for a, g in zip(by_hand.arch_variables, grads)]
    for a, value in zip(by_hand.arch_variables, new_alphas):
        a.assign(value)
    weights = by_hand.weight_variables
    with tf.GradientTape() as tape:
        loss = architect.cross_entropy(train[1], by_hand(train[0], training=True))
    g = tape.gradient(loss, weights)
    norm = np.sqrt(sum(float(np.sum(gi.numpy() ** 2)) for gi in g))
    scale = min(1.0, 5.0 / (norm + 1e-6))
    for w, gi in zip(weights, g):  # first PyTorch SGD step: buf = g + wd * w
        w.assign(w.numpy() - lr * (scale * gi.numpy() + 3e-4 * w.numpy()))
    for a, b in zip(search.network.arch_variables, by_hand.arch_variables):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-7)
    for a, b in zip(search.network.variables, by_hand.variables):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-6, err_msg=a.path)


@pytest.mark.slow
def test_train_function_runs_one_step_per_call_and_stops_at_the_end_of_data():
    source = data.make_synthetic(num_train=24, num_test=8, image_size=8)
    config = SearchConfig(C=4, layers=3, steps=2, multiplier=2)
    search = build_search(config, source, learning_rate_schedule(config, 3))
    x = tf.constant(((source.train_images / 255.0) - 0.5).astype("float32"))
    y = tf.constant(source.train_labels)
    pairs = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)  # 3 batches
    history = search.fit(tf.data.Dataset.zip((pairs, pairs)), epochs=2, verbose=0)
    assert int(search.w_optimizer.iterations.numpy()) == 6
    assert int(search.alpha_optimizer.iterations.numpy()) == 6
    assert sorted(history.history) == ["accuracy", "arch_loss", "loss"]
    iterator = iter(tf.data.Dataset.zip((pairs, pairs)))
    search.make_train_function()
    for _ in range(3):
        logs = search.train_function(iterator)
    assert set(logs) == {"loss", "accuracy", "arch_loss"}
    with pytest.raises(tf.errors.OutOfRangeError):
        search.train_function(iterator)
    before = int(search.w_optimizer.iterations.numpy())
    logs = search.train_function(iter([((x[:8], y[:8]), (x[8:16], y[8:16]))]))  # batches not from tf.data
    assert np.isfinite(float(logs["loss"])) and int(search.w_optimizer.iterations.numpy()) == before + 1


class _Interrupt(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        if epoch == 0:
            raise KeyboardInterrupt


@pytest.mark.slow
def test_resume_gives_the_same_search(cifar_sample, tmp_path):
    kwargs = dict(data_dir=cifar_sample, epochs=2, subset=96)
    straight = run_search(tiny_config(tmp_path / "a", **kwargs), verbose=0)
    with pytest.raises(KeyboardInterrupt):
        run_search(tiny_config(tmp_path / "b", **kwargs), verbose=0, callbacks=[_Interrupt()])
    assert runs.read_state(str(tmp_path / "b"))["epoch"] == 1
    # A config.json written before runtime settings left the config still resumes.
    saved = json.loads((tmp_path / "b" / "config.json").read_text())
    (tmp_path / "b" / "config.json").write_text(json.dumps({**saved, "graph_optimization": "reduced"}))
    before = tf.config.optimizer.get_experimental_options()
    try:  # resumed with grappler off (the caller's runtime choice): the same search
        set_graph_optimization("off")
        resumed = run_search(tiny_config(tmp_path / "b"), resume=True, verbose=0)
    finally:
        tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": False, **before})
    assert resumed["genotype"] == straight["genotype"]
    for name in ("alphas_normal", "alphas_reduce"):
        with (
            np.load(tmp_path / "a" / "alphas_epoch_002.npz") as a,
            np.load(tmp_path / "b" / "alphas_epoch_002.npz") as b,
        ):
            # Grappler off rounds differently (no fusions); Adam's normalised steps (lr 3e-4) carry that
            # to ~1e-5 on alphas of ~1e-3. Resumed under the same settings they match to 1e-7 (test_data_sources).
            np.testing.assert_allclose(a[name], b[name], rtol=0, atol=3e-5)
    rows = (tmp_path / "b" / "metrics.csv").read_text().strip().splitlines()
    assert len(rows) == 3  # header + one row per epoch across the resume
    with pytest.raises(runs.RunDirError, match="already finished"):
        run_search(tiny_config(tmp_path / "b"), resume=True, verbose=0)


def test_refuses_bad_input(cifar_sample, tmp_path):
    run_search(tiny_config(tmp_path / "done", data_dir=cifar_sample, subset=64), verbose=0)
    with pytest.raises(runs.RunDirError, match="already holds a run"):
        run_search(tiny_config(tmp_path / "done", data_dir=cifar_sample), verbose=0)
    with pytest.raises(data.DataError, match="`batch_size` 64 is larger than the search split"):
        run_search(tiny_config(tmp_path / "big", data_dir=cifar_sample, subset=64, batch_size=64), verbose=0)
    assert not (tmp_path / "big" / "checkpoint").exists()


def test_script_exits_2_with_one_line(tmp_path):
    cmd = [sys.executable, os.path.join(ROOT, "scripts", "search.py"), "--data-dir", str(tmp_path / "missing"),
           "--run-dir", str(tmp_path / "run"), "--quiet"]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert out.returncode == 2
    last = out.stderr.strip().splitlines()[-1]
    assert "error: --data-dir" in last and "missing" in last
    bad = subprocess.run(cmd[:2] + ["--epochs", "0"], capture_output=True, text=True)
    assert bad.returncode == 2 and "--epochs must be positive" in bad.stderr


def test_early_stop_rules_read_the_run_folder(tmp_path):
    from darts_tf.cnn.genotypes import DARTS_V1, DARTS_V2
    from darts_tf.cnn.search import early_stop_reason

    for epoch, genotype in enumerate([DARTS_V2, DARTS_V2, DARTS_V1, DARTS_V1, DARTS_V1]):
        genotype.save(tmp_path / f"genotype_epoch_{epoch:03d}.json")
    config = SearchConfig(early_stop="skip:3")  # DARTS_V1's normal cell holds 3 skip connections, DARTS_V2's 2
    assert early_stop_reason(str(tmp_path), 1, config) is None
    assert early_stop_reason(str(tmp_path), 2, config)[1] == 1  # keeps the genotype of the epoch before
    assert early_stop_reason(str(tmp_path), 3, SearchConfig(early_stop="stable:2")) is None  # 3 == 2 only
    stop = early_stop_reason(str(tmp_path), 4, SearchConfig(early_stop="stable:2"))  # 4 == 3 == 2
    assert stop[1] == 4 and "not changed for 2 epochs" in stop[0]
    assert early_stop_reason(str(tmp_path), 4, SearchConfig(early_stop="stable:3")) is None
    assert early_stop_reason(str(tmp_path), 1, SearchConfig(early_stop="stable:1"))[1] == 1  # epoch 1 == epoch 0
    with pytest.raises(ValueError, match="`early_stop` must be skip:N or stable:E"):
        run_search(SearchConfig(early_stop="skip", run_dir=str(tmp_path / "x")), verbose=0)


def test_a_stable_genotype_stops_the_search_and_is_recorded(tmp_path):
    config = tiny_config(tmp_path / "run", dataset="synthetic", epochs=3, arch_learning_rate=0.0, early_stop="stable:1")
    result = run_search(config, verbose=0)
    state = runs.read_state(str(tmp_path / "run"))
    assert state["epoch"] == 1 and state["finished"] and state["early_stop"]["rule"] == "stable:1"
    assert len(result["history"]["loss"]) == 1
    assert result["genotype"].to_dict() == state["genotype"]
    with pytest.raises(runs.RunDirError, match="already finished"):
        run_search(config, resume=True, verbose=0)


def test_beta_decay_adds_its_weighted_gradient_to_the_architecture_gradient():
    from darts_tf.cnn.search import ArchitectureSearch, BetaDecaySchedule
    from helpers import random_batch, tiny_search_network

    network = tiny_search_network()
    batch = random_batch()
    plain, loss = ArchitectureSearch(network).arch_gradients(batch, batch)
    search = ArchitectureSearch(network, beta_decay=50.0)
    schedule = BetaDecaySchedule(search)
    schedule.on_epoch_begin(4)
    assert float(search.beta_decay_weight.numpy()) == pytest.approx(2.0)  # 50 * 4 / 100
    regularised, loss_again = search.arch_gradients(batch, batch)
    assert float(loss_again) == pytest.approx(float(loss))
    rows = sum(a.shape[0] for a in network.arch_variables)
    for g, p, a in zip(regularised, plain, network.arch_variables, strict=True):
        softmax = tf.nn.softmax(a, axis=-1).numpy()
        np.testing.assert_allclose(g.numpy(), p.numpy() + 2.0 * softmax / rows, rtol=1e-5, atol=1e-8)


@pytest.mark.slow
def test_pc_darts_search_warms_up_records_betas_and_resumes_exactly(tmp_path):
    """--partial-channels, --edge-normalization, --arch-warmup: recorded, honoured by --resume."""
    from darts_tf.cnn.genotypes import derive_genotype

    options = dict(dataset="synthetic", epochs=3, C=8, partial_channels=4, edge_normalization=True, arch_warmup=1)
    straight = run_search(tiny_config(tmp_path / "a", **options), verbose=0)
    run = tmp_path / "a"
    assert json.loads((run / "config.json").read_text())["partial_channels"] == 4
    epochs = [dict(np.load(run / f"alphas_epoch_{e:03d}.npz")) for e in range(4)]
    assert set(epochs[0]) == {"alphas_normal", "alphas_reduce", "betas_normal", "betas_reduce"}
    for name in epochs[0]:  # the warm-up epoch trains the weights only
        np.testing.assert_array_equal(epochs[1][name], epochs[0][name])
        assert np.abs(epochs[2][name] - epochs[1][name]).max() > 1e-5, name  # then alphas and betas move
    with open(run / "metrics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["arch_loss"] == "" for row in rows] == [True, False, False]  # none computed in the warm-up
    assert all(float(row["arch_loss"]) > 0 for row in rows[1:])
    kept = derive_genotype(**epochs[3], steps=2, multiplier=2)
    assert straight["genotype"] == kept == Genotype.load(run / "genotype_epoch_003.json")
    with pytest.raises(KeyboardInterrupt):
        run_search(tiny_config(tmp_path / "b", **options), verbose=0, callbacks=[_Interrupt()])
    resumed = run_search(tiny_config(tmp_path / "b"), resume=True, verbose=0)
    assert resumed["genotype"] == straight["genotype"]
    with np.load(run / "alphas_epoch_003.npz") as a, np.load(tmp_path / "b" / "alphas_epoch_003.npz") as b:
        for name in a:
            np.testing.assert_allclose(a[name], b[name], rtol=0, atol=1e-7, err_msg=name)


def test_beta_decay_regularises_the_alphas_and_leaves_the_betas_alone():
    from darts_tf.cnn.search import ArchitectureSearch
    from helpers import random_batch, tiny_search_network

    network = tiny_search_network(C=8, partial_channels=2, edge_normalization=True)
    batch = random_batch()
    plain, _ = ArchitectureSearch(network).arch_gradients(batch, batch)
    search = ArchitectureSearch(network, beta_decay=50.0)
    search.beta_decay_weight.assign(1.0)
    regularised, _ = search.arch_gradients(batch, batch)
    assert len(regularised) == 4
    for g, p in zip(regularised[2:], plain[2:]):
        np.testing.assert_array_equal(g.numpy(), p.numpy())
    softmax = tf.nn.softmax(network.alphas_normal, axis=-1).numpy()
    np.testing.assert_allclose(regularised[0].numpy(), plain[0].numpy() + softmax / 28, rtol=1e-5, atol=1e-8)


def test_pc_darts_preset_and_flags(tmp_path):
    from darts_tf.config import SEARCH_PRESETS, check_choices

    preset = SearchConfig(**SEARCH_PRESETS["pcdarts"])
    assert (preset.partial_channels, preset.edge_normalization, preset.batch_size) == (4, True, 256)
    assert (preset.learning_rate, preset.learning_rate_min, preset.arch_learning_rate, preset.arch_warmup) == (
        0.1, 0.0, 6e-4, 15,
    )  # fmt: skip
    assert not preset.unrolled and SearchConfig().partial_channels == 1 and not SearchConfig().edge_normalization
    with pytest.raises(ValueError, match="`partial_channels` must be a positive divisor of `C` 16. Received: 3"):
        check_choices(SearchConfig(partial_channels=3))
    with pytest.raises(ValueError, match="`arch_warmup` must be 0 or more"):
        check_choices(SearchConfig(arch_warmup=-1))
    cmd = [sys.executable, os.path.join(ROOT, "scripts", "search.py"), "--dataset", "synthetic", "--preset", "pcdarts",
           "--partial-channels", "5", "--run-dir", str(tmp_path / "run"), "--quiet"]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True)
    assert out.returncode == 2 and out.stderr.strip().splitlines()[-1].endswith(
        "error: --partial-channels must be a positive divisor of --C 16. Received: 5"
    )
    assert not (tmp_path / "run").exists()


class _InterruptAfterSecond(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        if epoch == 1:
            raise KeyboardInterrupt


@pytest.mark.slow
def test_a_damaged_checkpoint_is_named_and_the_previous_epochs_resumes_exactly(tmp_path, capfd):
    options = dict(dataset="synthetic", epochs=3, subset=64)
    straight = run_search(tiny_config(tmp_path / "a", **options), verbose=0)
    with pytest.raises(KeyboardInterrupt):
        run_search(tiny_config(tmp_path / "b", **options), verbose=0, callbacks=[_InterruptAfterSecond()])
    run = tmp_path / "b"
    assert runs.read_state(str(run))["epoch"] == 2 and runs.read_json(str(run / runs.PREVIOUS_DIR / "state.json"))[
        "epoch"
    ] == 1  # fmt: skip
    data_file = next(p for p in (run / "checkpoint").iterdir() if ".data-" in p.name)
    data_file.write_bytes(data_file.read_bytes()[:100])  # truncated, as by a full disk or a killed copy
    resumed = run_search(tiny_config(run), resume=True, verbose=0)
    warning = capfd.readouterr().err
    assert "warning: " in warning and data_file.name in warning and "epoch 1)" in warning
    assert resumed["first_epoch"] == 1 and resumed["genotype"] == straight["genotype"]
    with np.load(tmp_path / "a" / "alphas_epoch_003.npz") as a, np.load(run / "alphas_epoch_003.npz") as b:
        np.testing.assert_allclose(a["alphas_normal"], b["alphas_normal"], rtol=0, atol=1e-7)
    assert len((run / "metrics.csv").read_text().strip().splitlines()) == 4  # epoch 2's row once, not twice
    # Both damaged: one line naming the file, nothing resumed.
    for folder in ("checkpoint", runs.PREVIOUS_DIR):
        (run / folder / "state.json").write_text("{")
    config = tiny_config(run, **options)
    with pytest.raises(runs.RunDirError, match="cannot read the checkpoint of .*state.json: JSONDecodeError"):
        runs.load_checkpoint(str(run), _network(config, data.make_synthetic(num_train=64, num_test=8, image_size=32)))


def test_a_loss_that_becomes_nan_stops_the_search_at_once(tmp_path):
    config = tiny_config(tmp_path / "run", dataset="synthetic", epochs=2, subset=64, learning_rate=1e38)
    with pytest.raises(
        runs.DivergedError, match=r"the loss became (nan|inf) at epoch 1, step \d; lower `learning_rate`"
    ):
        run_search(config, verbose=0)
    assert not (tmp_path / "run" / "checkpoint").exists()  # nothing of the diverged epoch was recorded


def test_a_multi_replica_strategy_is_refused_not_silently_dropped():
    """Under MirroredStrategy on 2 logical CPUs the models build, but Keras's fit (their one-device loop,
    which would run the steps outside the strategy) is refused in one line: darts_tf.distribute.fit runs them."""
    code = (
        "import tensorflow as tf; cpu = tf.config.list_physical_devices('CPU')[0]\n"
        "tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)\n"
        "from darts_tf import data\nfrom darts_tf.cnn import train as trainer\n"
        "from darts_tf.config import SearchConfig, TrainConfig\n"
        "from darts_tf.optimizers import learning_rate_schedule\nfrom darts_tf.cnn.search import build_search\n"
        "source = data.make_synthetic(num_train=16, num_test=8, image_size=8)\n"
        "strategy = tf.distribute.MirroredStrategy(['/cpu:0', '/cpu:1'])\n"
        "from darts_tf.cnn.eval_model import NetworkCIFAR\nfrom darts_tf.cnn.genotypes import DARTS_V2\n"
        "search_config, train_config = SearchConfig(C=4, layers=3, steps=2, multiplier=2), TrainConfig(C=4, layers=3)\n"
        "builds = [lambda: build_search(search_config, source, learning_rate_schedule(search_config, 2))]\n"
        "network = lambda: NetworkCIFAR(4, 10, 3, False, DARTS_V2, input_shape=(8, 8, 3))\n"
        "schedule = learning_rate_schedule(train_config, 2)\n"
        "builds.append(lambda: trainer.build_trainer(train_config, network(), schedule))\n"
        "for build in builds:\n"
        "    with strategy.scope():\n"
        "        try:\n"
        "            build().make_train_function()\n"
        "        except ValueError as error:\n"
        "            print('refused:', error)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    lines = [line for line in out.stdout.splitlines() if line.startswith("refused:")]
    assert out.returncode == 0 and len(lines) == 2, out.stderr[-2000:]
    assert (
        "ArchitectureSearch.fit runs on one device: under MirroredStrategy with 2 replicas use darts_tf.d" in lines[0]
    )
    assert "EvalTrainer.fit runs on one device" in lines[1]


def test_compile_refuses_what_the_search_step_cannot_run():
    from darts_tf.cnn.search import ArchitectureSearch
    from darts_tf.cnn.search_model import SearchNetwork
    from darts_tf.optimizers import SGD, Adam
    from helpers import tiny_search_network

    with pytest.raises(ValueError, match="expected a built network .* Received: unbuilt"):
        ArchitectureSearch(SearchNetwork(4, 3, 3)).compile(SGD(0.1), Adam(3e-4))
    network = tiny_search_network()
    with pytest.raises(ValueError, match="unrolled=True.* darts_tf.optimizers.SGD.* Received: w_optimizer=SGD"):
        ArchitectureSearch(network, unrolled=True).compile(keras.optimizers.SGD(0.1), Adam(3e-4))
    ArchitectureSearch(network, unrolled=False).compile(keras.optimizers.SGD(0.1), Adam(3e-4))  # first order: any
    ArchitectureSearch(network, unrolled=True).compile(SGD(0.1, momentum=0.9), Adam(3e-4))
