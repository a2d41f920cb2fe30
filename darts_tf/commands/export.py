"""Export a trained evaluation network as a SavedModel (TF Serving layout: NAME/VERSION/).

darts-tf export --run-dir runs/eval                 # latest checkpoint of a training run
darts-tf export --pytorch-weights weights.npz --arch DARTS_V2 --name darts_v2_pytorch
    # the original's weights (a state dict saved as .npz, see the README) for CIFAR-10

The served signature takes uint8 images [N, H, W, 3] and returns logits and probabilities.
"""

from __future__ import annotations

import argparse
import os

from darts_tf.commands.common import fail


def add_arguments(p: argparse.ArgumentParser) -> None:
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--run-dir", help="a training run folder (its latest checkpoint is exported)")
    source.add_argument("--pytorch-weights", help=".npz of the original's NetworkCIFAR state dict")
    p.add_argument("--arch", default="DARTS_V2", help="genotype for --pytorch-weights (name or JSON file)")
    p.add_argument("--C", type=int, default=36, help="initial channels for --pytorch-weights")
    p.add_argument("--layers", type=int, default=20, help="cells for --pytorch-weights")
    p.add_argument("--num-classes", type=int, default=10, help="classes for --pytorch-weights")
    p.add_argument("--export-dir", default="saved_models")
    p.add_argument("--name", help="model name under --export-dir (default: the run's export name)")
    p.add_argument("--version", type=int, help="version folder (default: the next free integer)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing version folder")


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    try:
        from darts_tf import data
        from darts_tf.convert import load_pytorch_state_dict, read_npz_state_dict
        from darts_tf.eval_model import NetworkCIFAR
        from darts_tf.export import export_saved_model
        from darts_tf.genotypes import get_genotype
        from darts_tf.trainer import export_name, load_trained_network

        if args.run_dir:
            network, config, info = load_trained_network(args.run_dir)
            name = args.name or export_name(config)
            mean, std, class_names = info["mean"], info["std"], info.get("class_names")
        else:
            if not os.path.isfile(args.pytorch_weights):
                raise ValueError(f"--pytorch-weights {args.pytorch_weights!r}: no such file")
            network = NetworkCIFAR(args.C, args.num_classes, args.layers, True, get_genotype(args.arch))
            load_pytorch_state_dict(network, read_npz_state_dict(args.pytorch_weights))
            name = args.name or "darts_pytorch"
            mean, std = data.CIFAR_MEAN, data.CIFAR_STD
            class_names = data.sources.CIFAR10_CLASSES if args.num_classes == 10 else None
        path = export_saved_model(
            network, os.path.join(args.export_dir, name), mean, std, version=args.version,
            overwrite=args.overwrite, class_names=class_names,
        )  # fmt: skip
    except ValueError as error:
        fail(parser, error)
    print(f"SavedModel: {path}")
    return 0
