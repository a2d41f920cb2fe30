"""A per-op latency table of an evaluation network, measured with LiteRT here or imported from a device.

darts-tf latency-table --C 36 --layers 20 --out table.json          # the paper's network, 1 thread
darts-tf latency-table --C 16 --layers 8 --threads 2 --out table.json
darts-tf latency-table --check table.json --networks 20             # predicted vs measured, random cells
darts-tf latency-table --C 36 --layers 20 --emit-models units/      # unit models for a phone's benchmark_model
darts-tf latency-table --import-logs units/ --out phone.json        # ... and its logs as a table

Every candidate op at each edge shape of the network (stride 1 and 2) and its fixed parts (stem, cell
preprocessing, node sums and concatenation, head) are converted on their own as LiteRT models through the
export's path and timed at batch 1 (median of --repeats loops). `darts-tf search --latency-table FILE
--latency-budget MS` then searches for a cell under the budget (docs/hardware-aware.md).
"""

from __future__ import annotations

import argparse
import json
import sys

from darts_tf.commands.common import add_ops_module_argument, fail
from darts_tf.errors import DartsError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", metavar="FILE", help="where to write the table (JSON)")
    p.add_argument("--space", choices=["darts", "nb201"], default="darts", help="the cell space (darts)")
    p.add_argument("--C", type=int, help="the evaluation network's initial channels (36; nb201: 16)")
    p.add_argument("--layers", type=int, help="its cells (20; nb201: cells per stage, 5)")
    p.add_argument("--image-size", type=int, default=32, help="input height and width (32)")
    p.add_argument("--channels", type=int, default=3, help="input channels (3)")
    p.add_argument("--num-classes", type=int, default=10, help="classes (10)")
    p.add_argument(
        "--primitives", nargs="+", metavar="OP", help="the candidate ops (default: the space's; ops of yours too)"
    )
    add_ops_module_argument(p)
    p.add_argument("--threads", type=int, help="LiteRT interpreter threads (1; --check: the table's)")
    p.add_argument("--repeats", type=int, default=15, help="timed loops per unit; the median is kept (15)")
    task = p.add_mutually_exclusive_group()
    task.add_argument("--check", metavar="TABLE", help="compare TABLE's predictions with measured random networks")
    task.add_argument("--emit-models", metavar="DIR", help="write the unit models and run_on_device.sh to DIR")
    task.add_argument("--import-logs", metavar="DIR", help="a table from DIR's benchmark_model logs")
    p.add_argument("--networks", type=int, default=20, help="--check: random derived networks (20)")
    p.add_argument("--seed", type=int, default=0, help="--check: seed of the random cells (0)")
    p.add_argument("--device", default="", help="--import-logs: the device's name, recorded in the table")
    p.add_argument("--json", action="store_true", help="--check: print the result as JSON")


def _cost_model(args, parser):
    from darts_tf.cnn.cost import CostModel
    from darts_tf.cnn.space import search_space
    from darts_tf.config import import_ops_module

    import_ops_module(args.ops_module)
    if args.space == "nb201":
        from darts_tf.nb201.genotypes import NB201_SPACE

        if args.primitives:
            parser.error("--primitives: NAS-Bench-201's ops are fixed")
        space, C, layers = NB201_SPACE, args.C or 16, args.layers or 5
    else:
        space, C, layers = search_space(args.primitives), args.C or 36, args.layers or 20
    shape = (args.image_size, args.image_size, args.channels)
    return CostModel(space, C, layers, shape, args.num_classes)


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    for name in ("C", "layers", "image_size", "channels", "num_classes", "threads", "repeats", "networks"):
        value = getattr(args, name)
        if value is not None and value <= 0:
            parser.error(f"--{name.replace('_', '-')} must be positive. Received: {value}")
    if not (args.out or args.check or args.emit_models):
        parser.error("--out FILE is required (or --check TABLE, or --emit-models DIR)")
    try:
        from darts_tf.cnn.cost import CostModel, LatencyTable
        from darts_tf.export import latency

        if args.check:
            from darts_tf.config import import_ops_module

            import_ops_module(args.ops_module)
            table = LatencyTable.load(args.check)
            network = table.network
            from darts_tf.cnn.space import SearchSpace

            space = SearchSpace.from_dict(network["space"])
            model = CostModel(space, network["C"], network["layers"], network["image_shape"], network["num_classes"],
                              table)  # fmt: skip
            stream = sys.stderr if args.json else sys.stdout  # --json: stdout holds the result alone
            progress = lambda line: print(line, file=stream, flush=True)  # noqa: E731
            result = latency.check_table(
                model, args.networks, args.seed, args.threads, args.repeats, progress, args.ops_module
            )
            if args.json:
                print(json.dumps(result))
            else:
                print(
                    f"{args.networks} random networks: Spearman {result['spearman']:.3f}, mean absolute error "
                    f"{100 * result['mean_abs_error']:.1f} % (mean error {100 * result['mean_error']:+.1f} %)"
                )
            return 0
        if args.import_logs:
            table = latency.import_benchmark_logs(args.import_logs, args.device)
            table.save(args.out)
            print(f"{len(table.entries)} units from {args.import_logs} -> {args.out}")
            return 0
        model = _cost_model(args, parser)
        if args.emit_models:
            latency.write_unit_models(model, args.emit_models, args.threads or 1)
            print(f"{len(model.units())} unit models, manifest.json and run_on_device.sh in {args.emit_models}")
            return 0
        table = latency.measure_table(model, args.threads or 1, args.repeats, lambda line: print(line, flush=True))
        table.save(args.out)
    except DartsError as error:
        fail(parser, error)
    print(f"{len(table.entries)} units, {table.device}, {table.threads} thread(s), {table.litert} -> {args.out}")
    return 0
