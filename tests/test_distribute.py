"""tf.distribute: equivalence of 2 logical CPU replicas with one device, multi-worker runs, bad input."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

from darts_tf import distribute

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
HERE = os.path.dirname(os.path.abspath(__file__))


def _environment(**extra):
    environ = {**os.environ, "DARTS_TF_HUGE_PAGES": "0", "TF_CPP_MIN_LOG_LEVEL": "2", **extra}
    environ.pop("TF_CONFIG", None)
    environ.update(extra)
    return environ


def _equivalence(*arguments):
    # tests/replica_equivalence.py with `arguments` in a fresh process: its JSON line.
    out = subprocess.run(
        [sys.executable, os.path.join(HERE, "replica_equivalence.py"), *arguments],
        capture_output=True, text=True, cwd=ROOT, env=_environment(), timeout=900,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    "mode",
    ["first"]  # in the fast suite (CI): the mirrored path a multi-GPU user gets
    + [
        pytest.param(m, marks=pytest.mark.slow)
        for m in ("second", "exact", "train", "partial", "space", "nb201", "budget")
    ],
)
def test_two_replicas_compute_what_one_device_computes(mode):
    """3 steps at global batch 8 on 2 logical CPUs (4 images each) vs one device at batch 8: every weight,
    alpha, BatchNorm statistic and optimizer slot agrees to float32 round-off, and both replicas hold the same
    values bit for bit (first and second order, finite-difference and exact; the evaluation network with the
    auxiliary head and drop path at 0.3; PC-DARTS with edge normalisation; a space with ops of one's own;
    NAS-Bench-201's network; second order with a mult-adds budget). Exact, train and budget run in float64
    (see replica_equivalence.py)."""
    result = _equivalence(mode)
    assert result["replicas"] == 2 and result["variables"] > 20
    assert result["identical"], result
    assert result["worst"] < (1e-9 if mode in ("exact", "train", "budget") else 2e-5), result
    for name, (one, two) in result["metrics"].items():
        assert abs(one - two) < 1e-5, (name, one, two)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["float16", "train_float16"])
def test_two_replicas_under_float16_loss_scaling_skip_as_one_device(mode):
    """mixed_float16 with dynamic loss scaling, 3 steps (second-order search; training with the auxiliary
    head): the replicas decide their updates in the cross-replica context (`precision.apply_if`) and skip
    exactly the steps one device skips (the same loss scale after), since a replica scales its loss by
    1/replicas (else its backward pass carries twice one device's values: with per-replica scaling the
    2-replica training skipped a step one device took). Half-precision round-off differs between a
    batch of 8 and two of 4, so the weights agree to float16's scale, not float32's."""
    result = _equivalence(mode)
    assert result["identical"], result
    one, two = result["loss_scales"]
    assert one == two == 2.0**15, result
    assert result["worst_abs"] < 2e-2, result
    assert abs(result["metrics"]["loss"][0] - result["metrics"]["loss"][1]) < 5e-3, result


@pytest.mark.slow
def test_two_replicas_reduce_once_per_batchnorm_stage_not_per_batchnorm():
    """A 2-replica first-order search step of a 3-cell network with 4 nodes a cell (14 edges, ~120 BatchNorms
    each) traces 114 all-reduces per replica: per forward pass the stem, both preprocessing BatchNorms together
    and 2 stages per node a cell (28), as many backward, for the architecture and the weight step, and one
    gradient mean each. Synchronising every BatchNorm on its own traced 1,438 at this size. The edges' shared
    functions are traced once for both replicas: one trace per argument signature (a trace per replica
    otherwise: TensorFlow keys a function's traces by the replica's device under a strategy)."""
    result = _equivalence("collectives", "first")
    forward = 1 + result["cells"] * (1 + 2 * 4)
    assert result["calls"] == 2 * (2 * forward + 1), result
    assert result["traces"] == result["signatures"] > 0, result


@pytest.mark.slow
def test_two_replicas_train_with_one_collective_per_round_of_batchnorms_in_a_cell():
    """A 2-replica training step of DARTS_V2 (3 cells: normal, reduction, reduction; auxiliary head) traces 19
    all-reduces per replica: forward the stem, per cell the preprocessing and then one per round of the
    cell's ops advancing together (the normal cell's separable convolutions on the cell's inputs: 2 rounds,
    then the dilated convolution on node 0: 1; the reduction cells' pools and identities: none), the
    auxiliary head's 2 BatchNorms: 1 + 4 + 1 + 1 + 2; as many backward; one gradient mean. One per
    BatchNorm traced 41."""
    result = _equivalence("collectives", "train")
    assert result["cells"] == 3, result
    assert result["calls"] == 2 * (1 + 4 + 1 + 1 + 2) + 1, result


@pytest.mark.slow
@pytest.mark.parametrize("what", ["search", "train"])
def test_per_replica_batchnorm_reduces_only_gradients_and_averages_the_statistics(what):
    """`sync_batchnorm=False` on 2 replicas: a step traces only the gradients' all-reduces (2 a first-order
    search step, 1 a training step), the replicas' moving statistics drift apart, `average_statistics` and
    each epoch of `distribute.fit` make them equal again, the weights stay equal on both replicas, and the
    statistics differ from one device's (the documented change of result)."""
    result = _equivalence("local", what)
    assert result["calls"] == (2 if what == "search" else 1), result
    assert result["apart"] and result["equal_after_average"] and result["equal_after_fit"], result
    assert result["weights_equal"] and result["averaged"] > 10 and result["from_one_device"] > 1e-3, result


_LOGICAL_CPU_PROGRAM = """
import json, os
import tensorflow as tf
from tensorflow.python.ops import op_selector
from darts_tf import distribute, replicas
from darts_tf.cnn.search import SearchPlan
from darts_tf.cnn.train import TrainingPlan
from darts_tf.config import SearchConfig, TrainConfig
distribute.split_cpu(2, bfc_allocator=os.environ.get("BFC") != "no")
if os.environ.get("KIND") == "training":  # the strategy a run of the library makes when given none
    strategy = TrainingPlan(TrainConfig(strategy="mirrored")).strategy()
else:
    strategy = SearchPlan(SearchConfig(strategy="mirrored")).strategy()
walked = []  # the ops tf.custom_gradient walks back over for each all-reduce it wraps, at trace time
walk = op_selector.get_backward_walk_ops
op_selector.get_backward_walk_ops = lambda *args, **kwargs: walked.append(len(walk(*args, **kwargs))) or walk(
    *args, **kwargs)
with strategy.scope():
    w = tf.Variable(tf.ones([3]))
def replica():
    x = tf.cast(tf.distribute.get_replica_context().replica_id_in_sync_group, tf.float32) + 1.0
    with tf.GradientTape() as tape:
        h = x * w
        for _ in range(30):  # a chain each replica's graph holds before the mean
            h = tf.sin(h) * w + x * w
        (y,) = replicas.mean([x * w + 0.0 * h])
        loss = tf.reduce_sum(y)
    return replicas.mean([y[0], tape.gradient(loss, w)[0]])
step = tf.function(lambda: strategy.run(replica))
graph = step.get_concrete_function().graph.as_graph_def()
ops = [n.op for n in graph.node] + [n.op for f in graph.library.function for n in f.node_def]
print(json.dumps({"means": [[float(t) for t in v] for v in strategy.experimental_local_results(step())],
                  "collective_ops": sum(op.startswith("Collective") for op in ops), "walked": max(walked),
                  "bfc": os.environ.get("TF_CPU_ALLOCATOR_USE_BFC")}))
"""


@pytest.mark.parametrize("bfc", ["default", "no", "preset"])
def test_logical_cpus_reduce_by_copies_and_take_their_tensors_from_tensorflows_pool(bfc):
    """Logical CPUs (the strategy a search or a training run makes when given none): the all-reduce
    is the mean (1 + 2) / 2 on both replicas, its gradient too, without TensorFlow's collective ops
    (their executor's thread hand-offs cost a third of a 2-replica search step) and without walking
    the other replica's graph at trace time (`replicas.mean`); `split_cpu` selects TensorFlow's BFC
    CPU allocator unless asked not to or the variable is already set."""
    extra = {"BFC": "no", "KIND": "training"} if bfc == "no" else {}
    extra.update({"TF_CPU_ALLOCATOR_USE_BFC": "false"} if bfc == "preset" else {})
    environ = _environment(**extra)
    if bfc != "preset":
        environ.pop("TF_CPU_ALLOCATOR_USE_BFC", None)
    out = subprocess.run(
        [sys.executable, "-c", _LOGICAL_CPU_PROGRAM], capture_output=True, text=True, cwd=ROOT, env=environ, timeout=300
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["means"] == [[1.5, 1.5]] * 2, result  # the mean of x w and of its gradient x, (1 + 2) / 2
    assert result["collective_ops"] == 0, result
    assert result["walked"] < 10, result  # not the other replica's graph (> 90 ops) for every all-reduce
    assert result["bfc"] == {"default": "true", "no": None, "preset": "false"}[bfc], result


_GATHER_PROGRAM = """
import json
import tensorflow as tf
from darts_tf import distribute, replicas
distribute.split_cpu(2)
strategy = distribute.mirrored_strategy([d.name for d in tf.config.list_logical_devices("CPU")])
weights = tf.constant([[1.0, 2.0], [3.0, 4.0]])
def replica():
    x = tf.cast(replicas.index(), tf.float32) + 1.0
    v = tf.stack([x, 10.0 * x])
    with tf.GradientTape() as tape:
        tape.watch(v)
        gathered = replicas.gather(v)
        loss = tf.reduce_sum(gathered * weights)
    return gathered, tape.gradient(loss, v)
gathered, gradient = tf.function(lambda: strategy.run(replica))()
print(json.dumps({"gathered": [t.numpy().tolist() for t in strategy.experimental_local_results(gathered)],
                  "gradient": [t.numpy().tolist() for t in strategy.experimental_local_results(gradient)]}))
"""


def test_gather_stacks_every_replicas_vector_in_replica_order_and_differentiates():
    """`replicas.gather` on 2 logical CPUs: both replicas hold [[1, 10], [2, 20]] (each replica's vector, in
    replica order, exactly); the gradient of every replica's sum(gathered * W) reaches replica r's vector as
    the replicas' sum of their row-r weights, 2 * W[r] (what BatchNorm's global statistics need)."""
    command = [sys.executable, "-c", _GATHER_PROGRAM]
    out = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=_environment(), timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["gathered"] == [[[1.0, 10.0], [2.0, 20.0]]] * 2, result
    assert result["gradient"] == [[2.0, 4.0], [6.0, 8.0]], result


_TRACED_ONCE_PROGRAM = """
import json
import tensorflow as tf
from darts_tf import distribute, replicas
tf.debugging.set_log_device_placement(True)  # (before TensorFlow's context starts)
distribute.split_cpu(2)
strategy = distribute.mirrored_strategy([d.name for d in tf.config.list_logical_devices("CPU")])
function = tf.function(lambda x, scale: tf.math.lgamma(x) * scale, autograph=False,
                       experimental_attributes={"_noinline": True})
shared = replicas.TracedOnce(function)
def replica():
    x = tf.fill([2], tf.cast(replicas.index(), tf.float32) + 2.0)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = shared(x, 3.0)
    return y, tape.gradient(y, x)
outputs = tf.function(lambda: strategy.run(replica))()
with strategy.scope():
    variable = tf.Variable(2.0)
reading = replicas.TracedOnce(tf.function(lambda x: x * variable))  # each replica's own copy: not shareable
try:
    tf.function(lambda: strategy.run(lambda: reading(tf.ones([2]))))()
    error = None
except ValueError as e:
    error = str(e)
print(json.dumps({"traces": function.experimental_get_tracing_count(), "kept": len(shared._concrete),
                  "outputs": [[t.numpy().tolist() for t in strategy.experimental_local_results(o)] for o in outputs],
                  "error": error}))
"""


def test_a_function_traced_once_runs_on_every_replicas_device():
    """`replicas.TracedOnce` on 2 logical CPUs: one trace serves both replicas; each replica's call runs on its
    own device (TensorFlow's placement log) and computes its own values and gradient: 3 lgamma(2) = 0 and
    3 lgamma(3) = 3 ln 2, gradients 3 digamma(2) and 3 digamma(3). A function reading a variable (each
    replica its own copy) is refused in one line."""
    command = [sys.executable, "-c", _TRACED_ONCE_PROGRAM]
    environment = _environment(TF_CPP_MIN_LOG_LEVEL="0")  # the placement log
    out = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=environment, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["traces"] == result["kept"] == 1, result
    (y0, y1), (g0, g1) = result["outputs"]
    digamma2 = 1.0 - 0.5772156649
    np.testing.assert_allclose([y0, y1], [[0.0, 0.0], [3 * np.log(2.0)] * 2], atol=1e-6)
    np.testing.assert_allclose([g0, g1], [[3 * digamma2] * 2, [3 * (digamma2 + 0.5)] * 2], rtol=1e-5)
    placed = {line.rsplit("device:", 1)[-1] for line in (out.stdout + out.stderr).splitlines() if "Lgamma:" in line}
    assert placed == {"CPU:0", "CPU:1"}, placed
    assert "reads 1 tensor(s) or variable(s) from outside" in result["error"], result


def test_tf_config_errors_name_what_is_wrong():
    cases = {
        "{not json": "TF_CONFIG is not valid JSON",
        '{"task": {"type": "worker", "index": 0}}': 'TF_CONFIG needs a "cluster"',
        '{"cluster": {"worker": ["localhost"]}, "task": {"type": "worker", "index": 0}}': "must be a list of host:port",
        '{"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "ps", "index": 0}}': 'TF_CONFIG "task" needs',
        '{"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 2}}': "index must be in 0..1",
    }
    for text, message in cases.items():
        with pytest.raises(distribute.DistributeError, match=message):
            distribute.read_tf_config({"TF_CONFIG": text})
    good = '{"cluster": {"worker": ["127.0.0.1:1", "127.0.0.1:2"]}, "task": {"type": "worker", "index": 1}}'
    assert distribute.read_tf_config({"TF_CONFIG": good})["task"]["index"] == 1
    assert distribute.read_tf_config({}) is None
    with pytest.raises(distribute.DistributeError, match="multi_worker needs TF_CONFIG"):
        distribute.make_strategy("multi_worker", environ={})
    with pytest.raises(distribute.DistributeError, match="`strategy` must be one of auto, one, mirrored"):
        distribute.make_strategy("ring")


def test_mirrored_with_one_device_warns_and_runs_on_it(capsys):
    strategy = distribute.make_strategy("mirrored")  # this test process has one CPU device
    assert strategy is tf.distribute.get_strategy() and strategy.num_replicas_in_sync == 1
    assert "one device visible" in capsys.readouterr().err
    assert distribute.make_strategy("auto") is tf.distribute.get_strategy()
    assert distribute.is_chief(strategy) and not distribute.needs_own_loop(strategy)


def test_global_batch_must_split_evenly():
    class TwoReplicas:
        num_replicas_in_sync = 2

    distribute.check_global_batch(16, TwoReplicas())
    with pytest.raises(distribute.DistributeError, match="`batch_size` 15 is the global batch .* multiple of 2"):
        distribute.check_global_batch(15, TwoReplicas())


def test_evaluation_steps_are_traced_per_strategy():
    """A later evaluate() with another strategy runs under that strategy, not a step traced for the first."""

    class Counting(tf.distribute.OneDeviceStrategy):
        def __init__(self):
            super().__init__("/cpu:0")
            self.traced = 0

        def run(self, fn, args=(), kwargs=None, options=None):
            self.traced += 1
            return super().run(fn, args=args, kwargs=kwargs, options=options)

    model = tf.keras.Sequential([tf.keras.Input((3,)), tf.keras.layers.Dense(4)])
    images = np.random.default_rng(0).normal(size=(8, 3)).astype("float32")
    dataset = tf.data.Dataset.from_tensor_slices((images, np.arange(8) % 4)).batch(4)
    first, second = Counting(), Counting()
    a = distribute.evaluate(model, dataset, first)
    b = distribute.evaluate(model, dataset, second)
    distribute.evaluate(model, dataset, first)
    assert first.traced == 1 and second.traced == 1
    assert a == pytest.approx(b, rel=1e-6)


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _darts_tf(*args, env=None):
    return [sys.executable, "-m", "darts_tf.commands", *args]


def _workers(kind, run_dir, outs, epochs=1, resume=False):
    """Starts two TF_CONFIG workers of tests/worker_run.py on 127.0.0.1; their Popen objects."""
    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    processes = []
    for index, out in enumerate(outs):
        tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
        command = [sys.executable, os.path.join(HERE, "worker_run.py"), kind, "multi_worker", str(run_dir), str(out),
                   str(epochs)] + (["--resume"] if resume else [])  # fmt: skip
        processes.append(
            subprocess.Popen(
                command,
                cwd=ROOT,
                env=_environment(TF_CONFIG=tf_config),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )  # fmt: skip
        )
    return processes


def _finish(processes, before=None):
    """Waits for every process to succeed (`before()` runs first, meanwhile); none is left running."""
    try:
        if before:
            before()
        for process in processes:
            stdout, stderr = process.communicate(timeout=900)
            assert process.returncode == 0, stderr[-3000:]
    finally:
        for process in processes:
            process.kill()


def _single(kind, run_dir, out, epochs=1):  # one process on one device
    command = [sys.executable, os.path.join(HERE, "worker_run.py"), kind, "one", str(run_dir), str(out), str(epochs)]
    done = subprocess.run(command, cwd=ROOT, env=_environment(), capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]


def _arrays(path):
    with np.load(path) as saved:
        return [saved[name] for name in sorted(saved.files, key=lambda n: int(n.split("_")[1]))]


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["search", "train"])
def test_two_workers_on_localhost_match_one_process(tmp_path, kind):
    """Two MultiWorkerMirroredStrategy workers (TF_CONFIG, two ports, one CPU each) run a 1-epoch tiny
    search / training to the end at global batch 16: both hold the same variables bit for bit, only the
    chief (worker 0) writes the run folder, and its result is the single process's at batch 16."""
    outs = [tmp_path / f"worker{i}.npz" for i in range(2)]
    processes = _workers(kind, tmp_path / "run", outs)
    _finish(processes, before=lambda: _single(kind, tmp_path / "single", tmp_path / "single.npz"))
    first, second = _arrays(outs[0]), _arrays(outs[1])
    assert all(np.array_equal(a, b) for a, b in zip(first, second))
    # Training on these 24-pixel images is sensitive to float32 round-off: one device with the composite
    # BatchNorm formula (the one replicas use) instead of the fused kernel moves its weights by 1.8e-4 in 2 steps.
    tolerance = 1e-5 if kind == "search" else 5e-3
    for a, b in zip(first, _arrays(tmp_path / "single.npz")):
        assert np.allclose(a, b, rtol=1e-4, atol=tolerance), np.max(np.abs(a - b))
    assert sorted(os.listdir(tmp_path)) == ["run", "single", "single.npz", "worker0.npz", "worker1.npz"]
    assert (tmp_path / "run" / "checkpoint" / "state.json").exists()
    if kind == "search":
        chief = json.loads((tmp_path / "run" / "genotype.json").read_text())
        assert chief == json.loads((tmp_path / "single" / "genotype.json").read_text())


def _wait_for_epoch(run_dir, epoch, processes, timeout=600):
    """Waits until the run folder's checkpoint holds `epoch` (or a process ended); the epoch reached."""
    state = os.path.join(str(run_dir), "checkpoint", "state.json")
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with open(state, encoding="utf-8") as handle:
                reached = json.load(handle)["epoch"]
            if reached >= epoch:
                return reached
        except (OSError, ValueError):
            pass
        if any(p.poll() is not None for p in processes):
            return None
        time.sleep(0.05)
    return None


@pytest.mark.slow
def test_a_killed_mirrored_run_resumes_on_one_device(tmp_path):
    """SIGKILL a 2-replica search after its first epoch, then --resume it on one device (same global batch):
    it continues from the last checkpoint and ends where an uninterrupted one-device run ends."""
    command = [sys.executable, os.path.join(HERE, "worker_run.py"), "search", "mirrored", str(tmp_path / "run"),
               str(tmp_path / "resumed.npz"), "12"]  # fmt: skip
    process = subprocess.Popen(command, cwd=ROOT, env=_environment(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        reached = _wait_for_epoch(tmp_path / "run", 1, [process])
        process.send_signal(signal.SIGKILL)
        process.communicate(timeout=60)
    finally:
        process.kill()
    assert reached is not None and reached < 12, "the run ended before it could be killed"
    done = subprocess.run(command[:3] + ["one"] + command[4:] + ["--resume"], cwd=ROOT, env=_environment(),
                          capture_output=True, text=True, timeout=900)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    _single("search", tmp_path / "single", tmp_path / "single.npz", epochs=12)
    # 24 Adam steps from alphas of 1e-3: Adam's normalised step turns round-off in near-zero gradients into
    # steps of up to its learning rate (3e-4), so the two runs agree to a few such steps (6.7e-4 seen), not 1e-6.
    for a, b in zip(_arrays(tmp_path / "resumed.npz"), _arrays(tmp_path / "single.npz")):
        assert np.allclose(a, b, rtol=1e-3, atol=3e-3), np.max(np.abs(a - b))
    rows = (tmp_path / "run" / "metrics.csv").read_text().splitlines()[1:]
    assert [int(row.split(",")[0]) for row in rows] == list(range(1, 13))


@pytest.mark.slow
def test_a_killed_worker_fails_the_run_in_bounded_time_then_it_resumes(tmp_path):
    """Two workers; SIGKILL worker 1 after the first epoch: worker 0 (the chief) stops within 3 minutes with one
    line naming worker 1 (no hang), and the same two commands with --resume finish the search."""
    outs = [tmp_path / f"worker{i}.npz" for i in range(2)]
    processes = _workers("search", tmp_path / "run", outs, epochs=12)
    try:
        reached = _wait_for_epoch(tmp_path / "run", 1, processes)
        assert reached is not None and reached < 12, "the run ended before a worker could be killed"
        processes[1].send_signal(signal.SIGKILL)
        killed = time.time()
        stdout, stderr = processes[0].communicate(timeout=300)
        waited = time.time() - killed
    finally:
        for process in processes:
            process.kill()
    assert processes[0].returncode != 0 and waited < 180, (waited, stderr[-2000:])
    message = [line for line in stderr.splitlines() if "WorkerLostError" in line or "stopped answering" in line]
    assert message and "worker 1" in message[-1], stderr[-3000:]
    _finish(_workers("search", tmp_path / "run", outs, epochs=12, resume=True))
    assert json.loads((tmp_path / "run" / "checkpoint" / "state.json").read_text())["epoch"] == 12
    first, second = _arrays(outs[0]), _arrays(outs[1])
    assert all(np.array_equal(a, b) for a, b in zip(first, second))


def test_bad_distribution_flags_are_one_line_errors(tmp_path):
    """The commands: a malformed TF_CONFIG, and a global batch that 2 replicas cannot split; exit 2, one line,
    no run folder."""
    base = [sys.executable, "-m", "darts_tf.commands", "search", "--dataset", "synthetic", "--epochs", "1",
            "--run-dir", str(tmp_path / "run")]  # fmt: skip
    cases = [
        (["--strategy", "multi_worker"], {"TF_CONFIG": '{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker"'},
         "darts-tf search: error: TF_CONFIG is not valid JSON"),
        (["--strategy", "mirrored", "--logical-cpus", "2", "--batch-size", "15"], {},
         "darts-tf search: error: --batch-size 15 is the global batch and must split evenly over the 2 replicas"),
    ]  # fmt: skip
    for flags, extra, message in cases:
        done = subprocess.run(base + flags, cwd=ROOT, env=_environment(**extra), capture_output=True, text=True)
        assert done.returncode == 2, done.stderr[-2000:]
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(message), done.stderr
        assert not (tmp_path / "run").exists()


class _CountingModel(keras.Model):
    """Adds each batch to `total`; `step_variant` (the epoch's parity) keys its traced steps."""

    def __init__(self):
        super().__init__()
        self.total = tf.Variable(0.0)
        self.variant = False
        self.traces = []
        self.tracker = keras.metrics.Mean(name="loss")

    @property
    def metrics(self):
        return [self.tracker]

    @property
    def step_variant(self):
        return self.variant

    def train_step(self, batch):
        self.traces.append(self.variant)
        self.total.assign_add(tf.reduce_sum(batch) * (10.0 if self.variant else 1.0))
        self.tracker.update_state(tf.reduce_sum(batch))
        return {"loss": self.tracker.result()}


def test_fit_runs_epochs_of_different_lengths_from_a_function_of_the_epoch():
    model = _CountingModel()
    lengths = {1: 3, 2: 5, 3: 2}
    seen = []

    class Record(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            seen.append([self.params["steps"]])
            model.variant = epoch == 3

        def on_train_batch_end(self, batch, logs=None):
            seen[-1].append(batch)

    def batches(epoch):
        return tf.data.Dataset.from_tensor_slices(tf.fill([lengths[epoch]], float(epoch)))

    history = distribute.fit(model, batches, epochs=4, initial_epoch=1, steps_per_epoch=None, callbacks=[Record()],
                             verbose=0)  # fmt: skip
    assert seen == [[3, 0, 1, 2], [5, 0, 1, 2, 3, 4], [2, 0, 1]]
    assert model.total.numpy() == 3 * 1 + 5 * 2 + 10 * 2 * 3
    assert history.history["loss"] == [1.0, 2.0, 3.0]  # each epoch's mean, its metrics reset
    assert model.traces == [False, True]  # one trace per step variant
