import subprocess
import sys

import pytest

# A call traced after the settings: does the configuration it carries to grappler skip the TFG pipeline and
# the memory optimiser?
_TFG_OFF = (
    "inner = tf.function(lambda: tf.constant(1.0)); "
    "ops = tf.function(lambda: inner()).get_concrete_function().graph.get_operations(); "
    "(call,) = [op for op in ops if 'PartitionedCall' in op.type]; "
    "config = tf.compat.v1.ConfigProto.FromString(call.get_attr('config_proto')); "
    "rewrite = config.graph_options.rewrite_options; "
    "assert gpu or rewrite.disable_tfg_optimizer and rewrite.memory_optimization == rewrite.NO_MEM_OPT, config; "
)


def _run_in_fresh_process(code: str) -> None:
    """Runs `code` (asserts, then print('ok')) in a new Python: the settings are process-wide."""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().endswith("ok")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt")
def test_configure_for_search_in_a_fresh_process():
    code = (
        "from darts_tf.runtime import configure_for_search; import tensorflow as tf; "
        "applied = configure_for_search(2); "
        "assert applied['malloc_arenas'] == 1, applied; "
        "assert applied['intra_op_threads'] == 1 and applied['inter_op_threads'] == 2, applied; "
        "assert tf.config.threading.get_intra_op_parallelism_threads() == 1; "
        "assert tf.config.optimizer.get_experimental_options()['layout_optimizer'] is False; "
        "gpu = False; " + _TFG_OFF + "print('ok')"
    )
    _run_in_fresh_process(code)


def test_the_commands_thread_settings_hold_with_logical_cpus():
    """`--logical-cpus N` splits the CPU after the runtime settings (splitting starts TensorFlow's
    runtime, which fixes the thread pools): the replicas run with the measured threads too."""
    code = (
        "import argparse; from darts_tf.commands.common import start_strategy; "
        "from darts_tf.config import SearchConfig; import tensorflow as tf; "
        "args = argparse.Namespace(logical_cpus=2, graph_optimization='reduced', quiet=True); "
        "strategy = start_strategy(argparse.ArgumentParser(), args, SearchConfig(strategy='mirrored'), 'search'); "
        "assert strategy.num_replicas_in_sync == 2; "
        "assert tf.config.threading.get_intra_op_parallelism_threads() == 1; "
        "print('ok')"
    )
    _run_in_fresh_process(code)


def test_graph_optimization_off_in_a_fresh_process():
    code = (
        "from darts_tf.runtime import configure_for_search; import tensorflow as tf; "
        "applied = configure_for_search(2, graph_optimization='off'); "
        "assert applied['grappler'] == 'off', applied; "
        "assert tf.config.optimizer.get_experimental_options()['disable_meta_optimizer'] is True; "
        "f = tf.function(lambda x: tf.nn.relu(x) * 2.0); "
        "assert float(f(tf.constant(-1.0))) == 0.0 and float(f(tf.constant(2.0))) == 4.0; "
        "print('ok')"
    )
    _run_in_fresh_process(code)


def test_unknown_graph_optimization_is_refused():
    from darts_tf.runtime import set_graph_optimization

    with pytest.raises(ValueError, match="`graph_optimization` must be one of"):
        set_graph_optimization("fast")


def test_huge_pages_environment_adds_the_tunable_only_where_it_applies():
    from darts_tf.runtime import HUGE_PAGES_TUNABLE, huge_pages_active, huge_pages_environment

    glibc, mode = ("glibc", "2.36"), "madvise"
    env = huge_pages_environment({"PATH": "/bin"}, glibc, mode)
    assert env == {"PATH": "/bin", "GLIBC_TUNABLES": HUGE_PAGES_TUNABLE} and huge_pages_active(env)
    env = huge_pages_environment({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}, glibc, "always")
    assert env["GLIBC_TUNABLES"] == "glibc.malloc.arena_max=2:" + HUGE_PAGES_TUNABLE
    assert huge_pages_environment({}, ("glibc", "2.31"), mode) is None  # ignores the tunable
    assert huge_pages_environment({}, ("", ""), mode) is None  # not glibc (musl, macOS)
    assert huge_pages_environment({}, glibc, "never") is None
    assert huge_pages_environment({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}, glibc, mode) is None
    assert huge_pages_environment({"DARTS_TF_HUGE_PAGES": "0"}, glibc, mode) is None
    assert not huge_pages_active({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"})


def test_restart_with_huge_pages_keeps_the_command_line(tmp_path):
    import os

    from darts_tf.runtime import HUGE_PAGES_TUNABLE, huge_pages_environment

    script = tmp_path / "restart.py"
    script.write_text(
        "import os, sys\n"
        "from darts_tf.runtime import restart_with_huge_pages\n"
        "print('start', flush=True)\n"
        "restart_with_huge_pages()\n"
        "print(sys.argv[1:], os.environ.get('GLIBC_TUNABLES'))\n"
    )
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
    env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "DARTS_TF_HUGE_PAGES")}
    env["PYTHONPATH"] = root
    out = subprocess.run([sys.executable, "-u", str(script), "a b", "--c"], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.splitlines()
    if huge_pages_environment(env) is None:  # this machine: nothing to do, no restart
        assert lines == ["start", "['a b', '--c'] None"]
    else:  # restarted once, same arguments, then it goes on
        assert lines == ["start", "start", f"['a b', '--c'] {HUGE_PAGES_TUNABLE}"]
    env["DARTS_TF_HUGE_PAGES"] = "0"
    out = subprocess.run([sys.executable, "-u", str(script), "x"], capture_output=True, text=True, env=env)
    assert out.stdout.splitlines() == ["start", "['x'] None"]


def test_transparent_huge_pages_mode_is_read_from_the_bracketed_choice(tmp_path):
    from darts_tf.runtime import _transparent_huge_pages_mode

    path = tmp_path / "enabled"
    path.write_text("always [madvise] never\n")
    assert _transparent_huge_pages_mode(str(path)) == "madvise"
    assert _transparent_huge_pages_mode(str(tmp_path / "absent")) is None


def test_configure_for_training_in_a_fresh_process():
    code = (
        "import sys; from darts_tf.runtime import configure_for_training; "
        "assert 'tensorflow' not in sys.modules; "
        "applied = configure_for_training(2); import tensorflow as tf; "
        "gpu = bool(tf.config.list_physical_devices('GPU')); "  # on a GPU machine: memory growth only
        "expected = {'remapping': False, 'disable_tfg_optimizer': True, 'memory_optimization': 'NO_MEM_OPT'}; "
        "assert gpu or applied['grappler'] == expected, applied; "
        "assert gpu or applied['intra_op_threads'] == 1 and applied['inter_op_threads'] == 2, applied; "
        "assert gpu or tf.config.threading.get_intra_op_parallelism_threads() == 1; "
        "assert gpu or tf.config.threading.get_inter_op_parallelism_threads() == 2; "
        "assert tf.config.optimizer.get_experimental_options()['remapping'] is False; "
        "f = tf.function(lambda x: tf.nn.relu(x) * 2.0); "
        "assert float(f(tf.constant(-1.0))) == 0.0 and float(f(tf.constant(2.0))) == 4.0; " + _TFG_OFF + "print('ok')"
    )
    _run_in_fresh_process(code)


def test_configure_recurrent_in_a_fresh_process_sets_grappler_only():
    """The recurrent commands' settings: no TFG pipeline or memory optimiser, every other grappler pass,
    TensorFlow's threads and malloc as they were."""
    code = (
        "import sys; from darts_tf.runtime import configure; "
        "assert 'tensorflow' not in sys.modules; "
        "applied = configure('recurrent'); import tensorflow as tf; "
        "gpu = bool(tf.config.list_physical_devices('GPU')); "
        "expected = {'disable_tfg_optimizer': True, 'memory_optimization': 'NO_MEM_OPT'}; "
        "assert gpu or applied == {'grappler': expected}, applied; "
        "assert tf.config.threading.get_intra_op_parallelism_threads() == 0; "
        "assert tf.config.threading.get_inter_op_parallelism_threads() == 0; "
        "options = tf.config.optimizer.get_experimental_options(); "
        "assert 'remapping' not in options and 'layout_optimizer' not in options, options; "
        "f = tf.function(lambda x: tf.nn.relu(x) * 2.0); "
        "assert float(f(tf.constant(-1.0))) == 0.0 and float(f(tf.constant(2.0))) == 4.0; " + _TFG_OFF + "print('ok')"
    )
    _run_in_fresh_process(code)


def test_configure_for_training_after_tensorflow_started_leaves_the_threads():
    code = (
        "import tensorflow as tf; from darts_tf.runtime import configure_for_training; "
        "float(tf.reduce_sum(tf.ones([3]))); "  # TensorFlow's thread pools now exist
        "applied = configure_for_training(); "
        "assert tf.config.list_physical_devices('GPU') or applied['threads'] == 'unchanged', applied; "
        "assert tf.config.optimizer.get_experimental_options()['remapping'] is False; "
        "print('ok')"
    )
    _run_in_fresh_process(code)


def test_default_pages_environment_removes_only_the_huge_page_tunable():
    from darts_tf.runtime import HUGE_PAGES_OPT_OUT, default_pages_environment, huge_pages_active

    environ = {"GLIBC_TUNABLES": "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1", "HOME": "/x"}
    result = default_pages_environment(environ)
    assert result == {"GLIBC_TUNABLES": "glibc.malloc.arena_max=2", HUGE_PAGES_OPT_OUT: "0", "HOME": "/x"}
    assert not huge_pages_active(result)
    assert environ["GLIBC_TUNABLES"].endswith("hugetlb=1")  # the argument is left as it was


def test_on_a_gpu_machine_only_memory_growth_is_set(monkeypatch):
    """Mocked GPUs: every workload leaves threads, grappler and malloc as TensorFlow has them and turns
    memory growth on for every GPU; no huge-page restart either."""
    import tensorflow as tf

    from darts_tf import runtime

    gpus = [tf.config.PhysicalDevice(name=f"/physical_device:GPU:{i}", device_type="GPU") for i in range(2)]
    real = tf.config.list_physical_devices
    monkeypatch.setattr(tf.config, "list_physical_devices", lambda kind=None: gpus if kind == "GPU" else real(kind))
    grown, touched = [], []
    monkeypatch.setattr(tf.config.experimental, "set_memory_growth", lambda gpu, on: grown.append((gpu.name, on)))
    for name in ("set_intra_op_parallelism_threads", "set_inter_op_parallelism_threads"):
        monkeypatch.setattr(tf.config.threading, name, lambda *a, name=name: touched.append(name))
    monkeypatch.setattr(tf.config.optimizer, "set_experimental_options", lambda *a: touched.append("grappler"))
    monkeypatch.setattr(runtime, "limit_malloc_arenas", lambda *a: touched.append("malloc") or True)
    names = [gpu.name for gpu in gpus]
    assert runtime.configure("search") == {"memory_growth": names}
    assert runtime.configure("training") == {"memory_growth": names}
    assert runtime.configure("recurrent") == {"memory_growth": names}
    assert grown == [(name, True) for name in names] * 3 and touched == []
    assert runtime.gpu_machine({}, ["/dev/nvidia0", "/dev/nvidiactl"])
    assert not runtime.gpu_machine({"CUDA_VISIBLE_DEVICES": ""}, ["/dev/nvidia0"])
    assert not runtime.gpu_machine({}, ["/dev/nvidiactl"]) and not runtime.gpu_machine({}, [])


def test_onednn_environment_sets_the_variable_only_where_it_changes_something():
    from darts_tf.runtime import onednn_environment

    x86 = {"gpu": False, "machine": "x86_64"}
    assert onednn_environment({"PATH": "/bin"}, **x86) == {"PATH": "/bin", "TF_ENABLE_ONEDNN_OPTS": "1"}
    assert onednn_environment({"TF_ENABLE_ONEDNN_OPTS": "0"}, **x86) is None  # the user's choice stays
    assert onednn_environment({"TF_ENABLE_ONEDNN_OPTS": "1"}, **x86) is None
    assert onednn_environment({}, gpu=True) is None  # TensorFlow's defaults on a GPU machine
    assert onednn_environment({}, gpu=False, machine="aarch64") is None  # and on other CPUs
    assert onednn_environment({}, gpu=False, machine="AMD64") == {"TF_ENABLE_ONEDNN_OPTS": "1"}


def test_the_commands_run_with_onednn_unless_the_user_turned_it_off():
    """`darts-tf` sets TF_ENABLE_ONEDNN_OPTS=1 before TensorFlow starts (TensorFlow leaves oneDNN off on
    CPUs without AVX-512 VNNI/BF16/AMX, where its own kernels ran the search step 2.2-2.9x slower); the
    benchmark's environment row, run by the command's worker, reports what TensorFlow runs."""
    import json
    import os

    from darts_tf.runtime import onednn_environment

    spec = json.dumps({"kind": "environment", "device": "cpu", "t0": 0.0})
    command = [sys.executable, "-m", "darts_tf.commands", "benchmark", "--worker", spec]
    env = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    results = {}
    for value in (None, "0"):
        run_env = env if value is None else {**env, "TF_ENABLE_ONEDNN_OPTS": value}
        out = subprocess.run(command, capture_output=True, text=True, env=run_env, timeout=300)
        assert out.returncode == 0, out.stderr[-2000:]
        (line,) = [line for line in out.stdout.splitlines() if line.startswith("BENCHMARK_RESULT")]
        results[value] = json.loads(line[len("BENCHMARK_RESULT") :])["onednn"]
    assert results[None] is True or onednn_environment(env) is None  # (a GPU machine, aarch64)
    assert results["0"] is False
    # Too late once TensorFlow is imported (it has read the environment): enable_onednn says so and sets nothing.
    code = (
        "import os, tensorflow; from darts_tf.runtime import enable_onednn; "
        "assert not enable_onednn() and 'TF_ENABLE_ONEDNN_OPTS' not in os.environ; print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-2000:]
