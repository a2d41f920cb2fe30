import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

from darts_tf.cnn.eval_model import NetworkCIFAR, inference_model
from darts_tf.cnn.genotypes import DARTS_V1
from darts_tf.data import CIFAR_MEAN, CIFAR_STD
from darts_tf.export import ExportError, evaluate_saved_model, export_saved_model, next_version

# The served graph runs the same float32 ops as the Keras model, but grappler may
# fuse or reorder them: agreement to float32 rounding (logits are O(1) here).
TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    base = tmp_path_factory.mktemp("saved_models") / "darts_v1"
    model = NetworkCIFAR(4, 10, 3, True, DARTS_V1)
    rng = np.random.default_rng(0)
    for v in model.non_trainable_variables:  # non-trivial BN statistics
        if v.path.endswith("moving_mean"):
            v.assign(rng.normal(scale=0.1, size=v.shape).astype("float32"))
        elif v.path.endswith("moving_variance"):
            v.assign(rng.uniform(0.5, 2.0, size=v.shape).astype("float32"))
    path = export_saved_model(model, str(base), CIFAR_MEAN, CIFAR_STD)
    images = rng.integers(0, 256, size=(5, 32, 32, 3), dtype=np.uint8)
    x = (images / 255.0 - np.array(CIFAR_MEAN)) / np.array(CIFAR_STD)
    expected = inference_model(model)(tf.constant(x, tf.float32), training=False).numpy()
    return {"model": model, "base": base, "path": path, "images": images, "expected": expected}


def test_layout_and_versions(exported):
    assert exported["path"] == str(exported["base"] / "1")
    assert os.path.exists(os.path.join(exported["path"], "saved_model.pb"))
    assert next_version(str(exported["base"])) == 2
    with pytest.raises(ExportError, match="already exists"):
        export_saved_model(exported["model"], str(exported["base"]), CIFAR_MEAN, CIFAR_STD, version=1)
    assert sorted(os.listdir(exported["base"])) == ["1"]  # nothing half-written left behind


def test_fresh_process_without_darts_tf(exported, tmp_path):
    np.save(tmp_path / "images.npy", exported["images"])
    script = textwrap.dedent(
        f"""
        import sys
        import numpy as np
        import tensorflow as tf
        serve = tf.saved_model.load({exported["path"]!r}).signatures["serving_default"]
        out = serve(images=tf.constant(np.load({str(tmp_path / "images.npy")!r})))
        np.save({str(tmp_path / "logits.npy")!r}, out["logits"].numpy())
        np.save({str(tmp_path / "probabilities.npy")!r}, out["probabilities"].numpy())
        assert not any(name.startswith("darts_tf") for name in sys.modules)
        """
    )
    env = {**os.environ, "PYTHONPATH": ""}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    logits = np.load(tmp_path / "logits.npy")
    np.testing.assert_allclose(logits, exported["expected"], atol=TOLERANCE, rtol=0)
    probabilities = np.load(tmp_path / "probabilities.npy")
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(probabilities, tf.nn.softmax(logits).numpy(), atol=1e-6)


def test_batch_size_free_and_bad_inputs_rejected(exported):
    serve = tf.saved_model.load(exported["path"]).signatures["serving_default"]
    assert serve(images=tf.zeros([1, 32, 32, 3], tf.uint8))["logits"].shape == (1, 10)
    assert serve(images=tf.zeros([7, 32, 32, 3], tf.uint8))["probabilities"].shape == (7, 10)
    with pytest.raises(tf.errors.InvalidArgumentError, match="not compatible with expected shape"):
        serve(images=tf.zeros([2, 28, 28, 3], tf.uint8))
    with pytest.raises(tf.errors.InvalidArgumentError, match="uint8"):
        serve(images=tf.zeros([2, 32, 32, 3], tf.float32))


def test_saved_model_cli_lists_the_signature(exported):
    cli = [sys.executable, "-m", "tensorflow.python.tools.saved_model_cli"]
    result = subprocess.run([*cli, "show", "--all", "--dir", exported["path"]], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    out = result.stdout
    assert "signature_def['serving_default']" in out
    assert "inputs['images']" in out and "DT_UINT8" in out and "(-1, 32, 32, 3)" in out
    assert "outputs['logits']" in out and "outputs['probabilities']" in out


def test_evaluate_saved_model(exported):
    labels = np.argsort(-exported["expected"], axis=1)[:, 0].astype(np.int32)
    result = evaluate_saved_model(exported["path"], exported["images"], labels, batch_size=2)
    assert result == {"accuracy": 1.0, "top5": 1.0, "images": 5}
    with pytest.raises(ExportError, match="No SavedModel"):
        evaluate_saved_model(str(exported["base"]), exported["images"], labels)
