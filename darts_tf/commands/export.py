"""Export a trained evaluation network: SavedModel (TF Serving layout NAME/VERSION/), LiteRT and ONNX; a recurrent
training run's best language model as a SavedModel.

darts-tf export --run-dir runs/eval                 # latest checkpoint of a training run: a new SavedModel version
darts-tf export --run-dir runs/eval --format savedmodel tflite tflite-int8 onnx
darts-tf export --run-dir runs/eval --format tflite --version 1   # add a .tflite to an existing version
darts-tf export --pytorch-weights weights.npz --arch DARTS_V2 --name darts_v2_pytorch
    # the original's weights (a state dict saved as .npz, see the README) for CIFAR-10
darts-tf export --run-dir runs/rnn_train            # a train-rnn run's best model (e.g. after --no-export)

The SavedModel's signature takes uint8 images [N, H, W, C] and returns logits, probabilities and
class names; model.tflite, model_int8.tflite and model.onnx are written into its version folder.
"""

from __future__ import annotations

import argparse
import os

from darts_tf.commands.common import add_data_arguments, data_arguments, fail
from darts_tf.errors import ConfigError, DartsError, ExportError

FORMATS = ("savedmodel", "tflite", "tflite-int8", "onnx")


def add_arguments(p: argparse.ArgumentParser) -> None:
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--run-dir", help="a training run folder (its latest checkpoint is exported)")
    source.add_argument("--pytorch-weights", help=".npz of the original's NetworkCIFAR state dict")
    p.add_argument("--arch", default="DARTS_V2", help="genotype for --pytorch-weights (name or JSON file)")
    p.add_argument("--C", type=int, default=36, help="initial channels for --pytorch-weights")
    p.add_argument("--layers", type=int, default=20, help="cells for --pytorch-weights")
    p.add_argument("--num-classes", type=int, default=10, help="classes for --pytorch-weights")
    p.add_argument("--export-dir", help="base folder of the exports (default: the run's, else saved_models)")
    p.add_argument("--name", help="model name under --export-dir (default: the run's export name)")
    p.add_argument("--version", type=int, help="version folder (default: the next free one; without savedmodel "
                   "in --format, the latest existing one)")  # fmt: skip
    p.add_argument(
        "--format", nargs="+", choices=FORMATS, default=["savedmodel"],
        help="savedmodel (default), tflite (LiteRT float), tflite-int8 (full-integer, calibrated on the run's "
        "training images), onnx; several at once",
    )  # fmt: skip
    p.add_argument("--int8-input", choices=["uint8", "int8"], default="uint8", help="tflite-int8 input type")
    p.add_argument("--calibration-images", type=int, default=300, help="training images calibrating tflite-int8")
    p.add_argument("--overwrite", action="store_true", help="replace an existing version folder or model file")
    add_data_arguments(p)


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    formats = list(dict.fromkeys(args.format))
    if args.run_dir:
        from darts_tf.rnn.train import is_language_run

        if is_language_run(args.run_dir):
            return _language_model(args, parser, formats)
    try:
        from darts_tf import data, export, runs
        from darts_tf.cnn.eval_model import NetworkCIFAR
        from darts_tf.cnn.genotypes import get_genotype
        from darts_tf.cnn.pytorch import load_pytorch_state_dict, read_npz_state_dict
        from darts_tf.cnn.train import export_name, load_trained_network
        from darts_tf.export import formats as export_formats

        augmentation, data_config = "cifar", None
        if args.run_dir:
            network, config, info = load_trained_network(args.run_dir)
            name = args.name or export_name(config)
            export_dir = args.export_dir or config.export_dir
            mean, std, class_names = info["mean"], info["std"], info.get("class_names")
            augmentation, data_config = config.augmentation, config
        else:
            if not os.path.isfile(args.pytorch_weights):
                raise ConfigError(f"`pytorch_weights` {args.pytorch_weights!r}: no such file")
            network = NetworkCIFAR(args.C, args.num_classes, args.layers, True, get_genotype(args.arch))
            load_pytorch_state_dict(network, read_npz_state_dict(args.pytorch_weights))
            name = args.name or "darts_pytorch"
            export_dir = args.export_dir or "saved_models"
            mean, std = data.CIFAR_MEAN, data.CIFAR_STD
            class_names = data.image_data.CIFAR10_CLASSES if args.num_classes == 10 else None
        if args.data_dir or args.dataset:  # other data for calibration and accuracy, at the network's shape
            data_config = data_arguments(args)
        base = os.path.join(export_dir, name)
        if "savedmodel" in formats:
            version = export.next_version(base) if args.version is None else args.version
        else:
            version = args.version if args.version is not None else export.next_version(base) - 1
            if version <= 0 or not os.path.isdir(os.path.join(base, str(version))):
                raise ExportError(
                    f"no SavedModel version {version} under {base!r} to convert; add savedmodel to `format`"
                )
        version_dir = os.path.join(base, str(version))
        if "savedmodel" in formats and os.path.exists(version_dir) and not args.overwrite:
            raise ExportError(f"{version_dir!r} already exists; choose another `version` or pass `overwrite`")
        files = export_formats.targets(version_dir, formats, overwrite=args.overwrite or "savedmodel" in formats)
        source = None
        if "tflite-int8" in formats:  # calibration data first: nothing is written when it is missing
            if data_config is None:
                raise ConfigError("`format` tflite-int8 needs calibration images: pass `data_dir` (or `dataset`)")
            source = _load(data_config, runs, data, network)
            calibration = export_formats.calibration_images(source, args.calibration_images)
        if "savedmodel" in formats:
            export.export_saved_model(
                network, base, mean, std, version=version, overwrite=args.overwrite, class_names=class_names
            )
            print(f"SavedModel: {version_dir}")
        for fmt, path in files.items():
            if fmt == "tflite":
                content = export_formats.tflite_float(version_dir)
            elif fmt == "tflite-int8":
                content = export_formats.tflite_int8(network, mean, std, calibration, args.int8_input)
            else:
                content = export_formats.onnx_model(network, mean, std, class_names)
            export_formats.write_file(path, content)
            print(f"{fmt}: {path} ({len(content) / 2**20:.2f} MiB)")
        if source is not None:  # the int8 model's accuracy beside the float one's, on the test set
            float_result = export_formats.evaluate_model(version_dir, source.test_images, source.test_labels,
                                                 augmentation=augmentation)  # fmt: skip
            int8_result = export_formats.evaluate_model(files["tflite-int8"], source.test_images, source.test_labels,
                                                augmentation=augmentation)  # fmt: skip
            print(f"test top-1 on {float_result['images']} images: float (SavedModel) {float_result['accuracy']:.4f}, "
                  f"int8 (LiteRT) {int8_result['accuracy']:.4f}")  # fmt: skip
    except DartsError as error:
        fail(parser, error)
    return 0


def _language_model(args: argparse.Namespace, parser: argparse.ArgumentParser, formats: list) -> int:
    if formats != ["savedmodel"]:
        parser.error(f"a recurrent language model exports as a SavedModel only. Received: --format {' '.join(formats)}")
    try:
        from darts_tf.rnn.train import export_language_run

        path = export_language_run(args.run_dir, args.export_dir, args.name, args.version, args.overwrite)
    except DartsError as error:
        fail(parser, error)
    print(f"SavedModel: {path}")
    return 0


def _load(data_config, runs, data, network):
    """The calibration/test data: a run's config (its own data) or the data flags, at the network's input shape."""
    height, _, channels = network.input.shape[1:]
    if isinstance(data_config, dict):
        source = data.load_data(**data_config)
    else:
        source = runs.load_run_data(data_config)
    return data.adapt(source, int(height), int(channels))
