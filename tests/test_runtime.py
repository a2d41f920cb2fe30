import subprocess
import sys

import pytest


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

    with pytest.raises(ValueError, match="graph_optimization must be one of"):
        set_graph_optimization("fast")
