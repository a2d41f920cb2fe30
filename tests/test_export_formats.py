"""Deployment: LiteRT float and int8, ONNX, run where no darts_tf is installed; export/evaluate commands."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from darts_tf import runs
from darts_tf.cnn.train import TrainConfig, load_trained_network, run_training
from darts_tf.export import ExportError, evaluate_saved_model, formats

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny DARTS_V2 network trained for 3 epochs on an .npz whose 4 classes differ by colour (learnable)."""
    tmp = tmp_path_factory.mktemp("deploy")
    rng = np.random.default_rng(0)
    colours = np.array([[200, 60, 60], [60, 200, 60], [60, 60, 200], [150, 150, 150]])

    def draw(n):
        labels = rng.integers(0, 4, size=n)
        images = colours[labels][:, None, None, :] + rng.normal(0, 50, size=(n, 32, 32, 3))
        return np.clip(images, 0, 255).astype(np.uint8), labels

    (x_train, y_train), (x_test, y_test) = draw(384), draw(128)
    names = np.array(["red", "green", "blue", "grey"])
    np.savez(tmp / "colours.npz", x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test, class_names=names)
    config = TrainConfig(
        data_dir=str(tmp / "colours.npz"), epochs=3, batch_size=32, C=8, layers=3, cutout=0, auxiliary=False,
        run_dir=str(tmp / "run"), export_dir=str(tmp / "sm"), export_name="tiny", learning_rate=0.05,
    )  # fmt: skip
    result = run_training(config, verbose=0)
    return tmp, config, result["export_path"]


def _fresh(code: str, cwd) -> dict:
    """Runs `code` in a new Python process that must not import darts_tf or TensorFlow; its JSON output."""
    code += "\nassert 'darts_tf' not in sys.modules and 'tensorflow' not in sys.modules, 'imported TF'\n"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=cwd)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_litert_float_and_int8_run_without_tensorflow(trained):
    tmp, config, saved_model = trained
    network, _, info = load_trained_network(config.run_dir)
    source = runs.load_run_data(config)
    float_path = formats.write_file(os.path.join(saved_model, "model.tflite"), formats.tflite_float(saved_model))
    calibration = formats.calibration_images(source, 200)
    assert calibration.shape == (200, 32, 32, 3) and calibration.dtype == np.uint8
    int8 = formats.tflite_int8(network, info["mean"], info["std"], calibration)
    int8_path = formats.write_file(os.path.join(saved_model, "model_int8.tflite"), int8)
    images = source.test_images[:64]
    np.save(tmp / "images.npy", images)
    code = f"""
import json, sys
import numpy as np
from ai_edge_litert.interpreter import Interpreter
images = np.load({str(tmp / "images.npy")!r})
out = {{}}
for name, path in (("float", {float_path!r}), ("int8", {int8_path!r})):
    runner = Interpreter(model_path=path).get_signature_runner("serving_default")
    inputs = runner.get_input_details()["images"]
    outputs = runner.get_output_details()
    result = runner(images=images)
    out[name] = {{
        "input": [str(np.dtype(inputs["dtype"])), inputs["shape_signature"].tolist(), list(inputs["quantization"])],
        "outputs": {{k: str(np.dtype(v["dtype"])) for k, v in outputs.items()}},
        "probabilities": result["probabilities"].tolist(),
        "classes": [c.decode() for c in result["classes"]] if "classes" in result else None,
    }}
print(json.dumps(out))
"""
    out = _fresh(code, tmp)
    serve = tf.saved_model.load(saved_model).signatures["serving_default"](images=tf.constant(images))
    expected = serve["probabilities"].numpy()
    assert out["float"]["input"][:2] == ["uint8", [-1, 32, 32, 3]]
    assert out["float"]["outputs"] == {"classes": "|S0", "logits": "float32", "probabilities": "float32"}  # bytes
    np.testing.assert_allclose(out["float"]["probabilities"], expected, atol=1e-4)
    assert out["float"]["classes"] == [c.decode() for c in serve["classes"].numpy()]
    # int8: raw pixels in (uint8, scale 1, zero point 0), float32 probabilities out, top-1 as the float model.
    assert out["int8"]["input"] == ["uint8", [-1, 32, 32, 3], [1.0, 0]]
    assert out["int8"]["outputs"] == {"logits": "float32", "probabilities": "float32"}
    agreement = np.mean(np.argmax(out["int8"]["probabilities"], 1) == np.argmax(expected, 1))
    assert agreement >= 0.9, agreement
    assert os.path.getsize(int8_path) < os.path.getsize(float_path)  # ~4x smaller at real sizes, see docs
    # Accuracy through each runtime on the whole test set.
    float_result = evaluate_saved_model(saved_model, source.test_images, source.test_labels)
    assert float_result["accuracy"] > 0.5  # the colours were learned
    tflite_result = formats.evaluate_model(float_path, source.test_images, source.test_labels)
    assert tflite_result["accuracy"] == float_result["accuracy"]
    int8_result = formats.evaluate_model(int8_path, source.test_images, source.test_labels)
    assert abs(int8_result["accuracy"] - float_result["accuracy"]) <= 0.05


def test_int8_input_and_onnx(trained):
    tmp, config, saved_model = trained
    network, _, info = load_trained_network(config.run_dir)
    source = runs.load_run_data(config)
    images = source.test_images[:16]
    int8 = formats.tflite_int8(network, info["mean"], info["std"], formats.calibration_images(source, 50), "int8")
    path = formats.write_file(str(tmp / "int8_input.tflite"), int8)
    runner, (dtype, scale, zero_point) = formats.tflite_runner(path)
    assert (dtype, scale, zero_point) == (np.int8, 1.0, -128)
    np.testing.assert_array_equal(formats.quantize_input(images, dtype, scale, zero_point), images.astype(int) - 128)
    onnx_path = formats.write_file(
        str(tmp / "model.onnx"), formats.onnx_model(network, info["mean"], info["std"], info["class_names"])
    )
    code = f"""
import json, sys
import numpy as np, onnxruntime
images = np.load({str(tmp / "images16.npy")!r})
session = onnxruntime.InferenceSession({onnx_path!r}, providers=["CPUExecutionProvider"])
names = [o.name for o in session.get_outputs()]
out = dict(zip(names, session.run(None, {{"images": images}})))
print(json.dumps({{"names": sorted(names), "probabilities": out["probabilities"].tolist(),
                  "classes": [str(c) for c in out["classes"]]}}))
"""
    np.save(tmp / "images16.npy", images)
    out = _fresh(code, tmp)
    serve = tf.saved_model.load(saved_model).signatures["serving_default"](images=tf.constant(images))
    assert out["names"] == ["classes", "logits", "probabilities"]
    np.testing.assert_allclose(out["probabilities"], serve["probabilities"].numpy(), atol=1e-5)
    assert out["classes"] == [c.decode() for c in serve["classes"].numpy()]
    with pytest.raises(ExportError, match="calibration expected uint8 images"):
        formats.tflite_int8(network, info["mean"], info["std"], np.zeros((0, 32, 32, 3), np.uint8))
    with pytest.raises(ExportError, match="No LiteRT model at"):
        formats.load_predictor(str(tmp / "missing.tflite"))


def _darts_tf(*args, cwd):
    command = [sys.executable, "-m", "darts_tf.commands", *args]
    return subprocess.run(command, capture_output=True, text=True, cwd=cwd)


@pytest.mark.slow
def test_export_and_evaluate_commands_with_every_format(trained):
    tmp, config, _ = trained
    out = _darts_tf(
        "export", "--run-dir", config.run_dir, "--export-dir", str(tmp / "cli"), "--format", "savedmodel",
        "tflite", "tflite-int8", "onnx", "--calibration-images", "100", cwd=tmp,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    version = tmp / "cli" / "tiny" / "1"
    expected = {"saved_model.pb", "variables", "assets.extra", "model.tflite", "model_int8.tflite", "model.onnx"}
    assert expected <= set(os.listdir(version)) and not [f for f in os.listdir(version) if ".tmp-" in f]
    assert "test top-1 on 128 images: float (SavedModel)" in out.stdout and "int8 (LiteRT)" in out.stdout
    assert "tflite-int8: " in out.stdout and "MiB)" in out.stdout
    # The file exists now: refused without --overwrite, one line, nothing changed.
    before = os.path.getmtime(version / "model.tflite")
    again = _darts_tf("export", "--run-dir", config.run_dir, "--export-dir", str(tmp / "cli"), "--format", "tflite",
                      "--version", "1", cwd=tmp)  # fmt: skip
    assert again.returncode == 2 and "already exists; pass --overwrite" in again.stderr
    assert len(again.stderr.strip().splitlines()) == 1 and os.path.getmtime(version / "model.tflite") == before
    # Without --export-dir: the run's export folder (where its training exported), a new version there.
    default = _darts_tf("export", "--run-dir", config.run_dir, "--name", "tiny_again", cwd=tmp)
    assert default.returncode == 0, default.stderr[-3000:]
    assert os.path.isfile(os.path.join(config.export_dir, "tiny_again", "1", "saved_model.pb"))
    assert not os.path.exists(tmp / "saved_models")
    bad = _darts_tf("export", "--run-dir", config.run_dir, "--format", "coreml", cwd=tmp)
    assert bad.returncode == 2 and "invalid choice: 'coreml'" in bad.stderr
    no_data = _darts_tf("export", "--pytorch-weights", str(tmp / "none.npz"), "--format", "tflite-int8", cwd=tmp)
    assert no_data.returncode == 2 and "no such file" in no_data.stderr
    evaluated = _darts_tf("evaluate", "--model", str(version / "model_int8.tflite"), "--data-dir",
                          str(tmp / "colours.npz"), "--json", cwd=tmp)  # fmt: skip
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert json.loads(evaluated.stdout.strip().splitlines()[-1])["images"] == 128


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["DARTS_V1", "DARTS_V2", "NASNet", "AmoebaNet", "imagenet:DARTS_V2"])
def test_every_genotype_and_both_networks_convert_with_builtin_ops_only(tmp_path, arch):
    from darts_tf.cnn.eval_model import NetworkCIFAR, NetworkImageNet
    from darts_tf.cnn.genotypes import get_genotype
    from darts_tf.export import export_saved_model

    imagenet = arch.startswith("imagenet:")
    genotype = get_genotype(arch.split(":")[-1])
    size = 64 if imagenet else 32
    network_class = NetworkImageNet if imagenet else NetworkCIFAR
    network = network_class(8, 5, 3, False, genotype, input_shape=(size, size, 3))
    path = export_saved_model(network, str(tmp_path / "sm"), (0.5,) * 3, (0.25,) * 3, version=1)
    model = tf.lite.TFLiteConverter.from_saved_model(path)  # stock converter, default op set: built-ins only
    model.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    content = model.convert()
    assert b"FlexDelegate" not in content and b"Flex" not in content[:4096]
    tflite = formats.write_file(str(tmp_path / "model.tflite"), content)
    images = np.random.default_rng(0).integers(0, 256, size=(3, size, size, 3), dtype=np.uint8)
    expected = tf.saved_model.load(path).signatures["serving_default"](images=tf.constant(images))["logits"]
    np.testing.assert_allclose(formats.load_predictor(tflite)(images), expected.numpy(), atol=1e-4)
