import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from darts_tf.runtime import enable_onednn  # noqa: E402

enable_onednn()  # the kernels the commands run (TensorFlow leaves oneDNN off on AVX2-only CPUs)

import numpy as np  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture(scope="session")
def cifar_sample():
    """The real CIFAR-10 sample; required (never skipped) when DARTS_TF_REQUIRE_SAMPLE=1, as in CI."""
    here = os.path.dirname(os.path.abspath(__file__))
    default = os.path.join(here, "..", "..", "shared", "data", "cifar10-sample")
    path = os.environ.get("DARTS_TF_CIFAR_SAMPLE", default)
    if not os.path.exists(os.path.join(path, "data_batch_1")):
        if os.environ.get("DARTS_TF_REQUIRE_SAMPLE") == "1":
            pytest.fail(f"CIFAR-10 sample not found at {path} (DARTS_TF_CIFAR_SAMPLE)")
        pytest.skip(f"CIFAR-10 sample not found at {path}; set DARTS_TF_CIFAR_SAMPLE")
    return path
