"""Exports of trained networks for serving: the SavedModel (`saved_model`: the `serving_default`
signature on uint8 images, its evaluation) and the formats made from it (`formats`: LiteRT float
and int8, ONNX, and `load_predictor`, which runs any of them).

    from darts_tf import export
    export.export_saved_model(network, "saved_models/darts_v2", mean, std, class_names)
    from darts_tf.export import formats
    formats.write_file(path, formats.tflite_float(version_dir))

The recurrent space's language-model SavedModel is `darts_tf.rnn.export`.
"""

from darts_tf.errors import ExportError
from darts_tf.export.saved_model import (
    SIGNATURE,
    accuracy_summary,
    evaluate_predictor,
    evaluate_saved_model,
    export_saved_model,
    load_serving_signature,
    next_version,
    saved_model_predictor,
    serving_function,
    topk_accuracy,
)

__all__ = [
    "SIGNATURE",
    "ExportError",
    "accuracy_summary",
    "evaluate_predictor",
    "evaluate_saved_model",
    "export_saved_model",
    "load_serving_signature",
    "next_version",
    "saved_model_predictor",
    "serving_function",
    "topk_accuracy",
]
