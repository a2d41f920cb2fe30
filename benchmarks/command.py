"""Speed and memory of darts_tf against the original PyTorch DARTS: prints a table (and JSON with --json).

darts-tf benchmark                                   # every row (CPU)
darts-tf benchmark --search-batches 16 --orders first --skip-eval --skip-serve --skip-data --skip-folder   # one row
darts-tf benchmark --device gpu --json gpu.json
darts-tf benchmark --strategy mirrored --replicas 1 2 --C 8 --layers 5 --train-C 16 --train-layers 8  # scaling

Every configuration runs in a fresh process: its time to first step counts from that
process's start (Python and TensorFlow imports, model building, tracing, graph
optimisation and the first step), and its peak RSS is its own.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

from benchmarks.measure import (  # no TensorFlow import
    ORIGINAL_BY_CPU,
    ORIGINAL_HOSTS,
    cpu_kind,
    default_export_dir,
    dumps,
    run_worker,
)
from darts_tf.commands.common import fail
from darts_tf.config import PRECISIONS
from darts_tf.files import atomic_file
from darts_tf.runtime import default_pages_environment, huge_pages_environment

MARKER = "BENCHMARK_RESULT "


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--device", choices=["cpu", "gpu"], default="cpu",
        help="where our steps run (default cpu); gpu: the GPU rows in one command (search both orders at 64, "
        "PC-DARTS at 256, training at 96, serving at 256, float32 and mixed, 1 and 2 GPUs; JSON in "
        "runs/benchmark_gpu.json)",
    )  # fmt: skip
    p.add_argument(
        "--orders", nargs="+", choices=["first", "second"], default=["first", "second"],
        help="search orders to time (default both)",
    )  # fmt: skip
    p.add_argument(
        "--search-batches", nargs="+", type=int, default=[16, 32, 64], help="search-step batch sizes (16 32 64)"
    )
    p.add_argument(
        "--pcdarts-batches", nargs="+", type=int, default=[64, 256],
        help="batches of the PC-DARTS search rows (K=4, edge normalisation, first order; their batch: 256)",
    )  # fmt: skip
    p.add_argument(
        "--nb201-batches", nargs="+", type=int, default=[64],
        help="batches of the NAS-Bench-201 search rows (its network: C=16, 5 cells per stage; both --orders)",
    )  # fmt: skip
    p.add_argument("--skip-variants", action="store_true", help="skip the PC-DARTS and NAS-Bench-201 search rows")
    p.add_argument("--C", type=int, default=16, help="search network channels (paper: 16)")
    p.add_argument("--layers", type=int, default=8, help="search network cells (paper: 8)")
    p.add_argument(
        "--eval-batches", nargs="+", type=int, default=[32, 96], help="evaluation-network training batches (32 96)"
    )
    p.add_argument(
        "--serve-batches", nargs="+", type=int, default=[32, 96, 256], help="SavedModel serving batches (32 96 256)"
    )
    p.add_argument("--steps", type=int, default=5, help="timed steps per configuration (>= 5 for the table)")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps after the first")
    p.add_argument(
        "--threads",
        type=int,
        default=0,
        help="search and training rows: inter-op threads, intra-op 1 (0: the cores, as darts_tf.runtime chooses); "
        "other rows, and every row with --runtime default: intra- and inter-op threads (0: TensorFlow's)",
    )
    p.add_argument(
        "--runtime",
        choices=["search", "default"],
        default="search",
        help="search: darts_tf.runtime.configure_for_search / configure_for_training / configure_for_recurrent for "
        "the search / training / recurrent rows (as the commands); default: TensorFlow's settings",
    )
    p.add_argument(
        "--graph-optimization",
        choices=["reduced", "off"],
        default="reduced",
        help="grappler for the search rows (darts_tf.runtime.set_graph_optimization)",
    )
    p.add_argument(
        "--huge-pages",
        choices=["on", "off"],
        default="on",
        help="on: workers start with malloc on transparent huge pages, as the scripts do (darts_tf.runtime)",
    )
    p.add_argument(
        "--precisions", nargs="+", choices=list(PRECISIONS), default=["float32"],
        help="compute types of the search and training rows, recurrent ones included (default float32; "
        "darts_tf.precision)",
    )  # fmt: skip
    p.add_argument("--skip-search", action="store_true", help="no search-step rows")
    p.add_argument("--skip-flops", action="store_true", help="no FLOP counts")
    p.add_argument("--skip-eval", action="store_true", help="no evaluation-network training rows")
    p.add_argument("--skip-serve", action="store_true", help="no serving rows")
    p.add_argument("--skip-data", action="store_true", help="no input-pipeline rows")
    p.add_argument(
        "--skip-deploy", action="store_true",
        help="skip the LiteRT rows (float and int8 .tflite of DARTS_V2 beside the SavedModel, 1 and 2 threads)",
    )  # fmt: skip
    p.add_argument("--deploy-batches", nargs="+", type=int, default=[1, 32], help="batches of the LiteRT rows")
    p.add_argument(
        "--skip-folder", action="store_true",
        help="skip the image-folder pipeline rows (32 and 224 px JPEGs) and the ImageNet training step they feed",
    )  # fmt: skip
    p.add_argument("--imagenet-batch", type=int, default=16, help="batch of the ImageNet training-step row")
    p.add_argument(
        "--skip-rnn", action="store_true",
        help="skip the recurrent rows (search step at nhid 300, batch 256, both orders; DARTS_V2 training at 850, 64)",
    )  # fmt: skip
    p.add_argument(
        "--strategy", choices=["mirrored"],
        help="only the scaling rows: search (--orders) and training steps on each of --replicas devices "
        "(GPUs, or logical CPUs on --device cpu) at the same global batch",
    )  # fmt: skip
    p.add_argument("--replicas", nargs="+", type=int, default=[1, 2], help="replica counts of the scaling rows")
    p.add_argument(
        "--sync-batchnorm", nargs="+", choices=["on", "off"], default=["on"],
        help="the scaling rows' BatchNorm statistics under several replicas: the global batch's (on) and/or "
        "each replica's (off)",
    )  # fmt: skip
    p.add_argument("--scaling-batch", type=int, default=32, help="global batch of the scaling rows")
    p.add_argument("--scaling-size", type=int, default=32, help="image size of the scaling rows (32)")
    p.add_argument("--train-C", type=int, default=36, help="scaling rows' training network channels (DARTS_V2: 36)")
    p.add_argument("--train-layers", type=int, default=20, help="scaling rows' training network cells (20)")
    p.add_argument("--json", metavar="PATH", help="also write every measurement as JSON")
    p.add_argument("--worker", help=argparse.SUPPRESS)


def measure(spec: dict, huge_pages: bool = True) -> dict:
    """Runs `spec` in a fresh Python process; returns its result (or {"error": ...}).

    With `huge_pages` the process starts as the scripts restart themselves
    (`darts_tf.runtime.restart_with_huge_pages`), so its time to first step
    is what a user of the scripts waits; without, malloc keeps its defaults.
    """
    spec = {**spec, "t0": time.time()}
    command = [sys.executable, "-m", "darts_tf.commands", "benchmark", "--worker", json.dumps(spec), "--verbose"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    env = (huge_pages_environment(env) or env) if huge_pages else default_pages_environment(env)
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    for line in result.stdout.splitlines():
        if line.startswith(MARKER):
            return json.loads(line[len(MARKER) :])
    tail = (result.stderr.strip().splitlines() or ["no output"])[-1]
    return {"error": f"exit {result.returncode}: {tail}"}


def _fmt(value, spec="{:.2f}"):
    return "-" if value is None else spec.format(value)


def _row(cells, widths):
    return "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"


def table(rows: list[dict], cpu: str | None = None) -> str:
    """The rows as a Markdown table, beside the original's stored rows for this kind of CPU (`cpu_kind`)."""
    stored = ORIGINAL_BY_CPU.get(cpu or cpu_kind(), {})
    header = [
        "configuration",
        "batch",
        "median s/step",
        "min s/step",
        "images/s",
        "first step s",
        "peak RSS GiB",
        "GFLOP/s",
        "original (stored)",
        "vs stored",
    ]
    lines = [[*header]]
    for r in rows:
        if "error" in r:
            lines.append([r["name"], r["batch"], r["error"], "", "", "", "", "", "", ""])
            continue
        # The stored original rows: the paper's search network (C=16, 8 cells) on this kind of CPU; other
        # sizes and GPU rows have none.
        original = stored.get(r["key"], {}) if r.get("beside_original", True) else {}
        if "seconds" in original:
            ref = f"{original['seconds']:.2f} s/step"
            speedup = original["seconds"] / r["median_s"]
        elif "images_per_s" in original:
            ref = f"{original['images_per_s']:.0f} img/s"
            speedup = r["images_per_s"] / original["images_per_s"]
        else:
            ref, speedup = "-", None
        if original.get("rss_gib"):
            ref += f", {original['rss_gib']:.1f} GiB"
        lines.append(
            [
                r["name"],
                r["batch"],
                _fmt(r.get("median_s")),
                _fmt(r.get("min_s")),
                _fmt(r.get("images_per_s"), "{:.1f}"),
                _fmt(r.get("first_step_s"), "{:.0f}"),
                _fmt(r.get("peak_rss_gib")),
                _fmt(r.get("gflops"), "{:.1f}"),
                ref,
                _fmt(speedup, "{:.2f}x"),
            ]
        )
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(header))]
    out = [_row(lines[0], widths), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [_row(line, widths) for line in lines[1:]]
    return "\n".join(out)


def _original_line(kind: str | None) -> str:
    """Where the "original (stored)" column comes from, or that this kind of CPU has none."""
    if kind in ORIGINAL_HOSTS:
        return (f"original (stored): quark0/darts measured on {ORIGINAL_HOSTS[kind]}, as this CPU; its steps "
                "vary by up to 25 % between windows (docs/performance.md)")  # fmt: skip
    return "original (stored): none for this kind of CPU (no AVX2); run the original in the same window"


def _threads_line(args, env: dict) -> str:
    """The intra/inter-op threads each kind of row runs with."""
    default = f"{env.get('intra_op_threads')}/{env.get('inter_op_threads')}"
    if args.runtime != "search":
        return f"intra/inter-op threads {default}"
    return f"intra/inter-op threads: search and training 1/{args.threads or env.get('cpu_cores')}, serving {default}"


def _deploy_rows(args, common: dict, huge: bool, rows: list, env: dict) -> None:
    """SavedModel vs LiteRT float vs LiteRT int8 serving DARTS_V2 (CIFAR), in one process: side by side."""
    exported = measure({"kind": "export", "path": default_export_dir(), **common}, huge)
    result = exported if "error" in exported else measure(
        {"kind": "deploy", "path": exported["path"], "batches": args.deploy_batches, **common}, huge
    )  # fmt: skip
    if "error" in result:
        rows.append({"name": "deploy (LiteRT)", "batch": "-", "error": result["error"]})
        return
    for r in result["rows"]:
        r.update(name=f"serve DARTS_V2 ({r['runtime']})", key=("deploy", r["runtime"], r["batch"]))
        rows.append(r)
        print(table(rows[-1:]).splitlines()[-1], flush=True)
    single = [r for r in result["rows"] if r["batch"] == 1]
    if single:
        latency = ", ".join(f"{r['runtime']} {1000 * r['median_s']:.1f} ms" for r in single)
        print(f"single-image latency (median): {latency}", flush=True)
    sizes = ", ".join(f"{name} {size:.1f} MiB" for name, size in result["sizes_mib"].items())
    print(f"LiteRT model sizes: {sizes}", flush=True)
    env["litert_sizes_mib"] = result["sizes_mib"]


def _folder_rows(args, common: dict, huge: bool, rows: list, env: dict) -> None:
    """Streamed image-folder pipeline at 32 and 224 px beside the rate the steps it feeds consume."""
    r = measure({"kind": "imagenet_train", "batch": args.imagenet_batch, **common}, huge)
    r.update(name="eval DARTS_V2 ImageNet train step", batch=args.imagenet_batch, key=("imagenet_train", None, 0))
    rows.append(r)
    print(table(rows[-1:]).splitlines()[-1], flush=True)
    searched = [row.get("images_per_s") for row in rows if row.get("key", ("",))[0] == "search"]
    consumers = {32: (max(filter(None, searched), default=None), "the fastest search row"),
                 224: (r.get("images_per_s"), "the ImageNet training step")}  # fmt: skip
    for size in (32, 224):
        folder = measure({"kind": "folder", "size": size, "batch": 64 if size == 32 else args.imagenet_batch}, huge)
        rate, consumer = consumers[size]
        what = "crop, flip, cutout" if size == 32 else "random-resized crop, flip, colour jitter"
        needs = f"; {consumer} consumes {rate:.0f} images/s" if rate else ""
        print(f"input pipeline, image folder {size} px (JPEG decode, {what}, normalise): "
              f"{folder.get('images_per_s', 0):.0f} images/s{needs}", flush=True)  # fmt: skip
        env[f"folder_{size}_images_per_s"] = folder.get("images_per_s")
        env[f"folder_{size}_consumer_images_per_s"] = rate


# CIFAR-10's 50,000 training images, halved for the search (train_portion 0.5); the paper's 50 epochs.
SEARCH_IMAGES, SEARCH_EPOCHS = 25_000, 50


def _policy(precision: str) -> str:
    """A row name's precision suffix (none for float32, the rows the stored original's are beside)."""
    return "" if precision == "float32" else f" [{precision}]"


def _policy_key(precision: str) -> tuple:
    return () if precision == "float32" else (precision,)


def projected_search_hours(median_s: float, batch: int) -> float:
    """Wall time of a full CIFAR-10 search at this step time: 50 epochs of 25,000 // batch steps."""
    return median_s * (SEARCH_IMAGES // batch) * SEARCH_EPOCHS / 3600.0


def _print_projections(rows: list) -> None:
    for r in rows:
        if r.get("key", ("",))[0] == "search" and "median_s" in r:
            hours = projected_search_hours(r["median_s"], r["batch"])
            r["projected_search_h"] = hours
            print(f"projected 50-epoch CIFAR-10 search, {r['name']}, batch {r['batch']}: "
                  f"{hours:.1f} h ({SEARCH_IMAGES // r['batch']} steps per epoch)", flush=True)  # fmt: skip


def mixed_policy(compute_capability) -> str:
    """The GPU's mixed policy: bfloat16 from compute capability 8.0 (Ampere) on, else float16."""
    return "mixed_bfloat16" if tuple(compute_capability or (0,)) >= (8, 0) else "mixed_float16"


def gpu_plan(gpu_count: int, compute_capability=None) -> list[dict]:
    """The rows of `darts-tf benchmark --device gpu`: what a GPU user runs, at the paper's batches.

    Search first and second order at 64 (the paper's), PC-DARTS at 256 (theirs), DARTS_V2 training at
    96 and SavedModel serving at 256, each in float32 and the GPU's mixed policy (serving: the float32
    export, which every policy's export is); with two or more GPUs, first-order search and training
    on 1 and 2 replicas at the same global batch.
    """
    rows = []
    for precision in ("float32", mixed_policy(compute_capability)):
        for order in ("first", "second"):
            rows.append({"kind": "search", "order": order, "batch": 64, "precision": precision,
                         "name": f"search, {order} order{_policy(precision)}",
                         "key": ("search", order, 64) + _policy_key(precision)})  # fmt: skip
        rows.append({"kind": "search", "order": "first", "variant": "pcdarts", "batch": 256, "precision": precision,
                     "name": f"search, PC-DARTS K=4 (first order){_policy(precision)}",
                     "key": ("search", "pcdarts", 256) + _policy_key(precision)})  # fmt: skip
        rows.append({"kind": "eval_train", "batch": 96, "precision": precision,
                     "name": f"eval DARTS_V2 train step{_policy(precision)}",
                     "key": ("eval_train", None, 96) + _policy_key(precision)})  # fmt: skip
    rows.append({"kind": "serve", "batch": 256, "name": "serve DARTS_V2 (SavedModel)", "key": ("serve", None, 256)})
    if gpu_count >= 2:
        for what, C, layers, batch in (("search", 16, 8, 64), ("train", 36, 20, 96)):
            for replicas in (1, 2):
                rows.append({"kind": "distributed", "what": what, "order": "first", "replicas": replicas, "C": C,
                             "layers": layers, "batch": batch, "size": 32,
                             "name": f"{what} {'first order ' if what == 'search' else ''}on {replicas} GPU(s)",
                             "key": ("distributed", what, replicas)})  # fmt: skip
    return rows


def _gpu_rows(args, common: dict, huge: bool, env: dict) -> list:
    rows = []
    exported = None
    for row in gpu_plan(env.get("gpu_count", 1), env.get("compute_capability")):
        name, key = row.pop("name"), row.pop("key")
        spec = {"C": args.C, "layers": args.layers, **row, **common}
        if row["kind"] == "serve":
            exported = exported or measure({"kind": "export", "path": default_export_dir(), **common}, huge)
            if "error" in exported:
                rows.append({"name": name, "batch": row["batch"], "error": exported["error"]})
                continue
            spec["path"] = exported["path"]
        r = measure(spec, huge)
        r.update(name=name, batch=row["batch"], key=key, beside_original=False)  # the original ran on a CPU
        rows.append(r)
        print(table(rows[-1:]).splitlines()[-1], flush=True)
    return rows


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    for name in ("steps", "C", "layers"):
        if getattr(args, name) <= 0:
            parser.error(f"--{name} must be positive. Received: {getattr(args, name)}")
    if args.worker:
        result = run_worker(json.loads(args.worker))
        print(MARKER + dumps(result), flush=True)
        return 0
    common = {
        "device": args.device,
        "steps": args.steps,
        "warmup": args.warmup,
        "threads": args.threads,
        "runtime": args.runtime,
        "graph_optimization": args.graph_optimization,
    }
    huge = args.huge_pages == "on"
    env = measure({"kind": "environment", **common}, huge)
    if "error" in env:  # e.g. --device gpu without a GPU: one line
        fail(parser, ValueError(env["error"].split(": ", 1)[-1]))
    print(
        f"TensorFlow {env.get('tensorflow')}, Keras {env.get('keras')}, device {args.device} "
        f"({env.get('gpu') or env.get('cpu')}, {env.get('cpu_cores')} cores, "
        f"{_threads_line(args, env)}); "
        f"float32 matmul roof {env.get('matmul_gflops', 0):.0f} GFLOP/s; "
        f"search grappler: {args.graph_optimization}; malloc huge pages: "
        f"{'on' if env.get('malloc_huge_pages') else 'off'}; oneDNN: {'on' if env.get('onednn') else 'off'}",
        flush=True,
    )
    if args.device == "cpu" and not args.strategy:
        print(_original_line(env.get("cpu_kind")), flush=True)
    if args.device == "gpu" and not args.strategy:  # the GPU user's one command (see gpu_plan)
        rows = _gpu_rows(args, common, huge, env)
        _print_projections(rows)
        print()
        print(table(rows))
        args.json = args.json or os.path.join("runs", "benchmark_gpu.json")
        _write_json(args, parser, env, rows)
        print(f"measurements: {args.json}")
        return 0
    if args.strategy:
        rows = _scaling_rows(args, common, huge)
        print()
        print(scaling_table(rows))
        _write_json(args, parser, env, rows)
        return 0
    rows = []
    if not args.skip_search:
        for order in args.orders:
            flops = None
            if not args.skip_flops:
                counted = measure({"kind": "search_flops", "order": order, "C": args.C, "layers": args.layers}, huge)
                flops = counted.get("flops_per_image")
            for batch in args.search_batches:
                for precision in args.precisions:
                    spec = {"kind": "search", "order": order, "batch": batch, "C": args.C, "layers": args.layers}
                    r = measure({**spec, "precision": precision, **common}, huge)
                    r.update(name=f"search, {order} order{_policy(precision)}", batch=batch,
                             key=("search", order, batch) + _policy_key(precision),
                             beside_original=(args.C, args.layers) == (16, 8))  # fmt: skip
                    if flops and "median_s" in r:
                        r["flops_per_image"] = flops
                        r["gflops"] = flops * batch / r["median_s"] / 1e9
                    rows.append(r)
                    print(table(rows[-1:]).splitlines()[-1], flush=True)
        if not args.skip_variants:
            for batch in args.pcdarts_batches:
                spec = {"kind": "search", "order": "first", "variant": "pcdarts", "batch": batch, "C": args.C}
                r = measure({**spec, "layers": args.layers, **common}, huge)
                r.update(name="search, PC-DARTS K=4 (first order)", batch=batch, key=("search", "pcdarts", batch))
                rows.append(r)
                print(table(rows[-1:]).splitlines()[-1], flush=True)
            for batch in args.nb201_batches:
                for order in args.orders:
                    spec = {"kind": "search", "order": order, "variant": "nb201", "batch": batch, "C": 16, "layers": 5}
                    r = measure({**spec, **common}, huge)
                    r.update(name=f"search, NAS-Bench-201 C=16 N=5 ({order} order)", batch=batch,
                             key=("search", "nb201", order, batch))  # fmt: skip
                    rows.append(r)
                    print(table(rows[-1:]).splitlines()[-1], flush=True)
        _print_projections(rows)
    if not args.skip_eval:
        for batch in args.eval_batches:
            for precision in args.precisions:
                r = measure({"kind": "eval_train", "batch": batch, "precision": precision, **common}, huge)
                r.update(name=f"eval DARTS_V2 train step{_policy(precision)}", batch=batch,
                         key=("eval_train", None, batch) + _policy_key(precision))  # fmt: skip
                rows.append(r)
                print(table(rows[-1:]).splitlines()[-1], flush=True)
    if not args.skip_serve:
        exported = measure({"kind": "export", "path": default_export_dir(), **common}, huge)
        for batch in args.serve_batches:
            if "error" in exported:
                rows.append({"name": "serve (SavedModel)", "batch": batch, "error": exported["error"]})
                continue
            r = measure({"kind": "serve", "path": exported["path"], "batch": batch, **common}, huge)
            r.update(name="serve DARTS_V2 (SavedModel)", batch=batch, key=("serve", None, batch))
            rows.append(r)
            print(table(rows[-1:]).splitlines()[-1], flush=True)
    if not args.skip_deploy:
        _deploy_rows(args, common, huge, rows, env)
    if not args.skip_data:
        r = measure({"kind": "data", "batch": 96}, huge)
        print(f"input pipeline (crop, flip, cutout, normalise): {r.get('images_per_s', 0):.0f} images/s")
        env["input_pipeline_images_per_s"] = r.get("images_per_s")
    if not args.skip_folder:
        _folder_rows(args, common, huge, rows, env)
    if not args.skip_rnn:
        for kind, order, batch, name in (("rnn_search", "first", 256, "search RNN, first order"),
                                         ("rnn_search", "second", 256, "search RNN, second order"),
                                         ("rnn_train", None, 64, "train RNN DARTS_V2 (850)")):  # fmt: skip
            for precision in args.precisions:
                spec = {"kind": kind, "order": order, "batch": batch, "precision": precision, **common, "threads": 0}
                r = measure(spec, huge)
                key = (kind, order, batch) + _policy_key(precision)
                r.update(name=f"{name}{_policy(precision)}", batch=batch, key=key)
                if "tokens_per_s" in r:
                    r["images_per_s"] = r["tokens_per_s"]  # the table's rate column: tokens/s for these rows
                rows.append(r)
                print(table(rows[-1:]).splitlines()[-1], flush=True)
    print()
    print(table(rows))
    _write_json(args, parser, env, rows)
    return 0


def _write_json(args, parser, env: dict, rows: list) -> None:
    if not args.json:
        return
    report = {k: v for k, v in vars(args).items() if not k.startswith("_")}
    try:
        with atomic_file(args.json) as handle:
            json.dump({"environment": env, "rows": rows, "args": report}, handle, indent=2, default=str)
    except OSError as error:
        fail(parser, ValueError(f"--json {args.json!r}: {error.strerror or error}"))


def _scaling_rows(args, common: dict, huge: bool) -> list:
    """Search (each of --orders) and training steps at --scaling-batch on each of --replicas devices."""
    rows = []
    what = [("search", order, args.C, args.layers) for order in args.orders]
    what.append(("train", None, args.train_C, args.train_layers))
    for kind, order, C, layers in what:
        for replicas in args.replicas:
            for sync in args.sync_batchnorm if replicas > 1 else ["on"]:
                if args.scaling_batch % replicas:
                    rows.append({"name": kind, "replicas": replicas, "error": "batch not divisible by replicas"})
                    break
                spec = {"kind": "distributed", "what": kind, "order": order, "replicas": replicas, "C": C,
                        "layers": layers, "batch": args.scaling_batch, "size": args.scaling_size,
                        "sync_batchnorm": sync == "on", **common}  # fmt: skip
                r = measure(spec, huge)
                name = (
                    f"search, {order} order (C={C}, {layers} cells)"
                    if kind == "search"
                    else f"train DARTS_V2 (C={C}, {layers} cells)"
                )
                label = replicas if sync == "on" else f"{replicas}, per-replica BN"
                r.update(name=name, replicas=replicas, label=label, batch=args.scaling_batch)
                rows.append(r)
                print(scaling_table(rows[-1:], rows).splitlines()[-1], flush=True)
    return rows


def scaling_table(rows: list, all_rows: list | None = None) -> str:
    """replicas, s/step, images/s and the scaling efficiency: images/s over (replicas x one replica's images/s)."""
    all_rows = all_rows or rows
    header = ["configuration", "replicas", "global batch", "median s/step", "images/s", "first step s",
              "trace + first step s", "peak RSS GiB", "graph ops", "all-reduces / replica", "speed-up",
              "efficiency"]  # fmt: skip
    lines = [header]
    for r in rows:
        if "error" in r:
            lines.append([r["name"], r["replicas"], r.get("batch", "-"), r["error"]] + [""] * (len(header) - 4))
            continue
        base = next(
            (b for b in all_rows if b["name"] == r["name"] and b["replicas"] == 1 and "images_per_s" in b), None
        )
        speedup = r["images_per_s"] / base["images_per_s"] if base else None
        lines.append([
            r["name"], r.get("label", r["replicas"]), r["batch"], _fmt(r.get("median_s")),
            _fmt(r.get("images_per_s"), "{:.1f}"),
            _fmt(r.get("first_step_s"), "{:.0f}"), _fmt(r.get("trace_and_first_step_s"), "{:.0f}"),
            _fmt(r.get("peak_rss_gib")), _fmt(r.get("graph_ops"), "{:,}"),
            _fmt((r.get("collectives_per_replica") or {}).get("calls"), "{:,}"), _fmt(speedup, "{:.2f}x"),
            _fmt(speedup / r["replicas"] if speedup else None, "{:.0%}"),
        ])  # fmt: skip
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(header))]
    out = [_row(lines[0], widths), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    return "\n".join(out + [_row(line, widths) for line in lines[1:]])
