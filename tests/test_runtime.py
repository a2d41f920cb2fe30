import subprocess
import sys

import pytest


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
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().endswith("ok")
