"""Deployment formats beyond the SavedModel: LiteRT (TFLite) float and full-integer int8, and ONNX.

- `tflite`: the SavedModel's `serving_default` converted by TensorFlow's stock LiteRT
  converter with built-in ops only: uint8 images in; `logits`, `probabilities` and
  `classes` out, as the SavedModel.
- `tflite-int8`: full-integer post-training quantisation (int8 weights and activations),
  calibrated on the run's own training images. Input: uint8 (the raw pixels: scale 1,
  zero point 0) or int8 (pixels - 128); outputs `logits` and `probabilities` in float32
  (one dequantisation at the end). No `classes` (strings are not quantisable): the names
  are in the version folder's `assets.extra/class_names.txt`.
- `onnx`: the same `serving_default` through tf2onnx (opset 17), checked with onnxruntime.

Every file is written atomically into the SavedModel's version folder (`model.tflite`,
`model_int8.tflite`, `model.onnx`). `load_predictor` runs any of the three formats (or a
SavedModel) on uint8 batches, for evaluation and benchmarks.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from collections.abc import Callable

import keras
import numpy as np
import tensorflow as tf

from darts_tf import data
from darts_tf.cnn.eval_model import float32_network, inference_model
from darts_tf.export.saved_model import (
    SIGNATURE,
    ExportError,
    evaluate_predictor,
    load_serving_signature,
    saved_model_predictor,
    serving_function,
)
from darts_tf.files import atomic_file

FORMATS = ("savedmodel", "tflite", "tflite-int8", "onnx")
FILE_NAMES = {"tflite": "model.tflite", "tflite-int8": "model_int8.tflite", "onnx": "model.onnx"}
ONNX_OPSET = 17
_INSTALL_HINT = "pip install 'darts_tf[deploy]'"


def _one_line(error: Exception) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return (lines[-1] if lines else type(error).__name__)[:300]


def tflite_float(saved_model_dir: str) -> bytes:
    """The SavedModel's `serving_default` as a float32 LiteRT model (built-in ops only)."""
    load_serving_signature(saved_model_dir)  # ExportError naming the path when there is none
    converter = tf.lite.TFLiteConverter.from_saved_model(saved_model_dir, signature_keys=[SIGNATURE])
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    try:
        return converter.convert()
    except Exception as error:  # ConverterError and MLIR failures: one line
        raise ExportError(f"LiteRT conversion of {saved_model_dir!r} failed: {_one_line(error)}") from None


def tflite_int8(model: keras.Model, mean, std, calibration_images: np.ndarray, input_type: str = "uint8") -> bytes:
    """Full-integer (int8) LiteRT model of `model`, calibrated on uint8 `calibration_images` [N, H, W, C].

    The converted function takes pixel values (0-255) and normalises inside, so the
    quantised uint8 input is the raw image; `input_type` "int8" takes pixels - 128.
    """
    if input_type not in ("uint8", "int8"):
        raise ExportError(f"int8 input type must be uint8 or int8. Received: {input_type!r}")
    calibration_images = np.asarray(calibration_images)
    if calibration_images.dtype != np.uint8 or calibration_images.ndim != 4 or not len(calibration_images):
        raise ExportError(
            f"int8 calibration expected uint8 images [N, H, W, C]. Received: "
            f"{calibration_images.dtype} {calibration_images.shape}"
        )
    network = inference_model(float32_network(model))
    shape = tuple(network.input.shape[1:])
    mean_np, std_np = np.asarray(mean, np.float32), np.asarray(std, np.float32)

    @tf.function(input_signature=[tf.TensorSpec([None, *shape], tf.float32, name="images")])
    def serve(images):
        x = (images / 255.0 - tf.constant(mean_np)) / tf.constant(std_np)
        logits = tf.cast(network(x, training=False), tf.float32)
        return {"logits": logits, "probabilities": tf.nn.softmax(logits)}

    # Through a temporary SavedModel: the converter freezes its variables (from_concrete_functions leaves
    # READ_VARIABLE ops that fail to run).
    archive = keras.export.ExportArchive()
    archive.track(network)
    archive.add_endpoint(SIGNATURE, serve)
    with tempfile.TemporaryDirectory(prefix="darts_tf_int8_") as folder:
        archive.write_out(folder, verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(folder, signature_keys=[SIGNATURE])
        return _quantize(converter, calibration_images, input_type)


def _quantize(converter, calibration_images: np.ndarray, input_type: str) -> bytes:
    def representative():
        for image in calibration_images:
            yield {"images": image[None].astype(np.float32)}

    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.uint8 if input_type == "uint8" else tf.int8
    converter.inference_output_type = tf.float32
    try:
        with warnings.catch_warnings():  # calibration runs TensorFlow's own (deprecated) interpreter
            warnings.filterwarnings("ignore", message=".*tf.lite.Interpreter is deprecated")
            return converter.convert()
    except Exception as error:
        raise ExportError(f"int8 LiteRT conversion failed: {_one_line(error)}") from None


def onnx_model(model: keras.Model, mean, std, class_names=None) -> bytes:
    """The `serving_default` function of `model` as an ONNX model (tf2onnx, opset 17)."""
    try:
        import tf2onnx
    except ImportError:
        raise ExportError(f"`format` onnx needs tf2onnx: {_INSTALL_HINT}") from None
    network, serve = serving_function(model, mean, std, class_names=class_names)
    spec = [tf.TensorSpec([None, *network.input.shape[1:]], tf.uint8, name="images")]
    try:
        proto, _ = tf2onnx.convert.from_function(serve, input_signature=spec, opset=ONNX_OPSET)
    except Exception as error:
        raise ExportError(f"ONNX conversion failed: {_one_line(error)}") from None
    return proto.SerializeToString()


def targets(version_dir: str, formats, overwrite: bool = False) -> dict:
    """{format: file path} in `version_dir` for the non-SavedModel `formats`; refuses existing files."""
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise ExportError(f"`format` {unknown[0]!r} is not one of {', '.join(FORMATS)}")
    paths = {f: os.path.join(version_dir, FILE_NAMES[f]) for f in formats if f in FILE_NAMES}
    for path in paths.values():
        if os.path.exists(path) and not overwrite:
            raise ExportError(f"{path!r} already exists; pass `overwrite` to replace it")
    return paths


def write_file(path: str, content: bytes) -> str:
    with atomic_file(path, "wb") as handle:
        handle.write(content)
    return path


def _interpreter_class():
    try:  # LiteRT's own package, the maintained interpreter
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:  # TensorFlow's copy (deprecated, same runtime)
        Interpreter = tf.lite.Interpreter
    return Interpreter


def tflite_runner(path: str, threads: int | None = None):
    """A LiteRT signature runner of `path` and its input's (dtype, scale, zero point)."""
    interpreter = _interpreter_class()(model_path=path, num_threads=threads)
    runner = interpreter.get_signature_runner()
    details = runner.get_input_details()["images"]
    scale, zero_point = details["quantization"]
    return runner, (details["dtype"], scale, zero_point)


def quantize_input(images: np.ndarray, dtype, scale: float, zero_point: int) -> np.ndarray:
    """uint8 pixels as the model's input: as they are (uint8, scale 1), pixels - 128 (int8), or float."""
    if dtype == np.float32:
        return images.astype(np.float32)
    if not scale or (dtype == np.uint8 and (scale, zero_point) == (1.0, 0)):
        return images.astype(dtype)
    info = np.iinfo(dtype)
    quantized = np.round(images.astype(np.float32) / scale + zero_point)
    return np.clip(quantized, info.min, info.max).astype(dtype)


def load_predictor(path: str, threads: int | None = None) -> Callable[[np.ndarray], np.ndarray]:
    """uint8 images [N, H, W, C] -> logits, for a SavedModel folder, a `.tflite` or an `.onnx` file."""
    if path.endswith(".tflite"):
        if not os.path.isfile(path):
            raise ExportError(f"No LiteRT model at {path!r}")
        runner, (dtype, scale, zero_point) = tflite_runner(path, threads)
        return lambda images: runner(images=quantize_input(images, dtype, scale, zero_point))["logits"]
    if path.endswith(".onnx"):
        if not os.path.isfile(path):
            raise ExportError(f"No ONNX model at {path!r}")
        try:
            import onnxruntime
        except ImportError:
            raise ExportError(f"running {path!r} needs onnxruntime: {_INSTALL_HINT}") from None
        options = onnxruntime.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        return lambda images: session.run(["logits"], {"images": images})[0]
    return saved_model_predictor(path)


def evaluate_model(
    path: str, images, labels: np.ndarray, batch_size: int = 256, augmentation: str = "cifar",
    skip_bad_images: bool = False,
) -> dict:  # fmt: skip
    """Top-1/top-5 of a SavedModel, `.tflite` or `.onnx` on uint8 images (arrays or `ImageFiles`)."""
    return evaluate_predictor(load_predictor(path), images, labels, batch_size, augmentation, skip_bad_images)


def calibration_images(source: data.ImageData, count: int = 300) -> np.ndarray:
    """The first `count` training images (the data's fixed order: every class) as uint8, for int8 calibration."""
    if count <= 0:
        raise ExportError(f"`calibration_images` must be positive. Received: {count}")
    n = min(count, len(source.train_labels))
    ds = data.test_dataset(source.train_images[:n], source.train_labels[:n])
    return np.stack([image for image, _ in ds.as_numpy_iterator()])
