"""The ``hyperrep`` command line. Parsing lives here; the work is done by the library.

hyperrep zoo list
hyperrep zoo build RECIPE --out DIR [--num-models N] [--epochs E] [--subset K] [--data-version V] [--device D]
    [--seed S]
hyperrep push DIR REPO_ID [--private] [--revision R] [--include-checkpoints]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from importlib import resources
from pathlib import Path


def _zoo_list(arguments: argparse.Namespace) -> int:
    from .zoo.recipes import list_recipes, load_recipe

    names = list_recipes()
    width = max((len(name) for name in names), default=0)
    for name in names:
        recipe = load_recipe(name)
        configs = recipe.networks(0)
        spec = recipe.network_spec()
        print(
            f"{name:<{width}} {len(configs):>5} networks × {recipe.epochs:>3} epochs  {recipe.dataset:<14} "
            f"{spec.name} ({spec.num_parameters} parameters)"
        )
    return 0


def _zoo_build(arguments: argparse.Namespace) -> int:
    from .checks import check_output_folder
    from .zoo.folder import build_zoo
    from .zoo.recipes import BuildOptions, list_recipes, load_recipe

    _set_threads(arguments.threads)
    check_output_folder(arguments.out)
    options = BuildOptions(
        num_models=arguments.num_models,
        epochs=arguments.epochs,
        subset=arguments.subset,
        seed=arguments.seed,
        device=arguments.device,
        chunk_size=arguments.chunk_size,
    )
    recipe = load_recipe(arguments.recipe)
    if arguments.data_version is not None:  # recorded in the zoo's recipe (zoo_info.json, card)
        try:
            recipe = dataclasses.replace(recipe, data_version=arguments.data_version)
        except ValueError as error:  # e.g. tetris_seed's v2 data options under --data-version 1
            versioned = f"{arguments.recipe}_v{arguments.data_version}"
            if versioned in list_recipes():
                message = f"{error} Build the recipe {versioned!r} for data version {arguments.data_version}."
                raise ValueError(message) from None
            raise
    build_zoo(
        recipe,
        arguments.out,
        options,
        data_dir=arguments.data_dir,
        overwrite=arguments.overwrite,
        progress=not arguments.quiet,
    )
    return 0


def _zoo_import(arguments: argparse.Namespace) -> int:
    from .zoo.importers import import_model_zoos, import_small_cnn_zoo

    options = {"seed": arguments.seed, "overwrite": arguments.overwrite, "progress": not arguments.quiet}
    if arguments.format == "small-cnn-zoo":
        import_small_cnn_zoo(
            arguments.source, arguments.out, arguments.config, input_size=arguments.input_size, **options
        )
    else:
        import_model_zoos(
            arguments.source,
            arguments.out,
            arguments.config,
            network=arguments.network,
            result_offset=arguments.result_offset,
            **options,
        )
    return 0


def _train(arguments: argparse.Namespace, extra: list[str]) -> int:
    from .training.trainer import main as train_main

    argv = list(extra)
    if argv and not argv[0].startswith("-"):
        try:
            argv[0] = str(resolve_train_config(argv[0]))
        except FileNotFoundError as error:
            print(f"hyperrep train: error: {error}", file=sys.stderr)
            return 2
    return train_main(argv)


def resolve_train_config(name_or_path: str) -> Path:
    """A training preset by path, or by name among the shipped ones (``training/configs/<name>.yaml``)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    shipped = Path(str(resources.files("hyperrep_hf.train_configs")))
    candidate = shipped / f"{name_or_path}.yaml"
    if candidate.is_file():
        return candidate
    names = sorted(p.stem for p in shipped.glob("*.yaml"))
    raise FileNotFoundError(f"Training config {name_or_path!r} is neither a file nor a shipped preset ({names}).")


def _evaluate(arguments: argparse.Namespace) -> int:
    _set_threads(arguments.threads)
    if arguments.protocol:
        if arguments.group_weights:
            raise ValueError("--group-weights applies to the linear probes of the full evaluation, not to --protocol.")
        return _evaluate_protocol(arguments)
    from .checks import resolve_device
    from .probing.evaluation import check_evaluation, check_evaluation_options, evaluate_model
    from .probing.ood import evaluate_ood
    from .zoo.folder import check_one_architecture

    check_evaluation_options(arguments.baselines, arguments.max_rows, arguments.seed, arguments.ridge_alphas)
    device = resolve_device(arguments.device)
    options = {"max_rows": arguments.max_rows, "seed": arguments.seed, "progress": not arguments.quiet}
    options["ridge_alphas"] = arguments.ridge_alphas
    options["append_weight_statistics"] = arguments.append_weight_statistics
    if arguments.weight_statistics is not None:
        if arguments.append_weight_statistics is False:
            raise ValueError(
                "--weight-statistics chooses what is appended to z; it cannot go with --no-append-weight-statistics."
            )
        options["append_weight_statistics"] = True
    options["group_weights"] = arguments.group_weights
    check_one_architecture(arguments.zoo)  # zoos of several architectures: named, before anything is written
    outs = _zoo_outs(arguments)
    for zoo, out in outs:  # every zoo checked before the first is evaluated
        check_evaluation(arguments.model_dir, zoo, out, overwrite=arguments.overwrite)
    for zoo, out in outs:
        evaluate_model(
            arguments.model_dir,
            zoo,
            out,
            baselines=arguments.baselines,
            validation_fallback=arguments.validation_fallback,
            overwrite=arguments.overwrite,
            device=device,
            batch_size=arguments.batch_size,
            weight_statistics=arguments.weight_statistics,
            **options,
        )
    if len(arguments.zoo) > 1:
        evaluate_ood(arguments.model_dir, arguments.zoo, arguments.out, device=device, **options)
    return 0


def _evaluate_protocol(arguments: argparse.Namespace) -> int:
    from .probing.protocols import evaluate_protocol

    for zoo, out in _zoo_outs(arguments):
        evaluate_protocol(
            arguments.model_dir,
            zoo,
            out,
            protocol=arguments.protocol,
            split_file=arguments.split_file,
            seed=arguments.seed,
            progress=not arguments.quiet,
            append_weight_statistics=arguments.append_weight_statistics,
        )
    return 0


def _zoo_outs(arguments: argparse.Namespace) -> list[tuple[str, Path]]:
    """(zoo, results folder) of each ``--zoo``: ``--out`` itself for one zoo, ``--out/<label>`` for several."""
    if len(arguments.zoo) == 1:
        return [(arguments.zoo[0], Path(arguments.out))]
    return [(zoo, Path(arguments.out) / _zoo_label(zoo, arguments.zoo)) for zoo in arguments.zoo]


def _zoo_label(zoo: str, zoos: list[str]) -> str:
    """One zoo's results sub-folder: its config name, with its folder's name when zoos share it (two seeds)."""
    from .zoo.folder import parse_zoo_argument

    def plain(z: str) -> str:
        folder, config = parse_zoo_argument(z)
        return config or Path(folder).name

    def full(z: str) -> str:
        folder, config = parse_zoo_argument(z)
        return "-".join(part for part in (Path(folder).name, config) if part)

    if [plain(z) for z in zoos].count(plain(zoo)) == 1:
        return plain(zoo)
    return full(zoo) if [full(z) for z in zoos].count(full(zoo)) == 1 else f"{zoos.index(zoo) + 1}-{full(zoo)}"


def _predict(arguments: argparse.Namespace) -> int:
    _set_threads(arguments.threads)
    import time

    from .checks import resolve_device
    from .hub.publish import check_model_source
    from .models.hyperrep.pipelines import check_network_files, make_prediction_pipeline, predict_files

    device = resolve_device(arguments.device)
    if arguments.batch_size < 1:
        raise ValueError(f"--batch-size must be a positive integer, got {arguments.batch_size}.")
    check_network_files(arguments.networks)
    check_model_source(arguments.model)  # another library's repo, a newer format, offline without a cache: say so
    predictor = make_prediction_pipeline(arguments.model, arguments.zoo, device, arguments.batch_size)
    started = time.perf_counter()
    predictions = predict_files(predictor, arguments.networks, activation=arguments.activation)
    seconds = max(time.perf_counter() - started, 1e-9)
    print(json.dumps(predictions, indent=2, allow_nan=False))  # strict JSON: predictions are never NaN
    samples = predictor.transforms.num_samples
    copies = "canonical views" if predictor.feature_extractor.canonical else f"{samples} copies"
    print(  # on stderr: stdout stays one JSON document
        f"predicted {len(predictions)} networks in {seconds:.2f} s ({len(predictions) / seconds:,.1f} networks/s on "
        f"{predictor.device}; {copies} each, up to {arguments.batch_size} encoder rows per pass)",
        file=sys.stderr,
    )
    return 0


def _push(arguments: argparse.Namespace) -> int:
    from .hub.publish import push

    result = push(
        arguments.folder,
        arguments.repo_id,
        private=arguments.private,
        revision=arguments.revision,
        include_checkpoints=arguments.include_checkpoints,
        progress=not arguments.quiet,
    )
    print(f"pushed {len(result.files)} files to {result.repo_type} repo {result.repo_id}@{result.revision}")
    print(result.commit_url)
    return 0


def _demo(arguments: argparse.Namespace) -> int:
    from .checks import check_output_folder
    from .demo import run_demo

    check_output_folder(arguments.out)
    run_demo(arguments.out, quick=arguments.quick, zoo=arguments.zoo)
    return 0


def _set_threads(threads: int | None) -> None:
    if threads is not None:
        if threads < 1:
            raise ValueError(f"--threads must be ≥ 1, got {threads}.")
        import torch

        torch.set_num_threads(threads)


DEVICE_HELP = "where the encoder runs: cpu, cuda, cuda:N, or auto (a CUDA GPU when there is one); default cpu"
BATCH_HELP = (
    "encoder rows per forward pass (default 2048): each network's symmetric copies (or canonical views) go through "
    "the encoder together with those of many others, this many rows at a time"
)


def make_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``hyperrep`` command."""
    parser = argparse.ArgumentParser(prog="hyperrep", description="Hyper-representations of model zoos.")
    commands = parser.add_subparsers(dest="command", required=True)

    zoo = commands.add_parser("zoo", help="build and list model zoos")
    zoo_commands = zoo.add_subparsers(dest="zoo_command", required=True)
    zoo_commands.add_parser("list", help="the shipped zoo recipes").set_defaults(handler=_zoo_list)
    build = zoo_commands.add_parser("build", help="train a zoo's population and write it as a dataset folder")
    build.add_argument("recipe", help="a shipped recipe name (see `hyperrep zoo list`) or a recipe .yaml path")
    build.add_argument("--out", required=True, help="zoo folder (a Hub dataset repo); may hold other zoos")
    build.add_argument("--num-models", type=int, help="keep this many networks (mini variants)")
    build.add_argument("--epochs", type=int, help="train this many epochs instead of the recipe's")
    build.add_argument("--subset", type=int, help="keep at most this many images of each data split")
    build.add_argument("--data-version", type=int, help="data version instead of the recipe's (tetris: 1 or 2)")
    build.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, … (default: cpu)")
    build.add_argument("--seed", type=int, default=0, help="master seed: data, split, choice of networks")
    build.add_argument("--chunk-size", type=int, help="networks trained at once (memory); default: the recipe's")
    build.add_argument("--data-dir", help="folder with MNIST / Fashion-MNIST IDX files")
    build.add_argument("--overwrite", action="store_true", help="replace a different zoo of the same name")
    build.add_argument("--quiet", action="store_true", help="no progress bar or summary lines")
    build.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's choice)")
    build.set_defaults(handler=_zoo_build)
    importer = zoo_commands.add_parser("import", help="import an external zoo (Small CNN Zoo, Model Zoos)")
    importer.add_argument("format", choices=["small-cnn-zoo", "model-zoos"])
    importer.add_argument("source", help="small-cnn-zoo: folder with weights.npy, metrics.csv[.gz], layout.csv; "
                          "model-zoos: folder of model folders (result.json, checkpoint_*/checkpoints)")  # fmt: skip
    importer.add_argument("--out", required=True, help="zoo folder (a Hub dataset repo); may hold other zoos")
    importer.add_argument("--config", help="the zoo's name in the folder (default: from the data set / source)")
    importer.add_argument("--seed", type=int, default=0, help="seed of the 70/15/15 split by model")
    importer.add_argument("--input-size", type=int, help="small-cnn-zoo: image side (default from config.dataset)")
    importer.add_argument("--network", help="model-zoos: a known network name (default: matched by shapes)")
    importer.add_argument("--result-offset", type=int, default=1, help="model-zoos: training_iteration of epoch 0")
    importer.add_argument("--overwrite", action="store_true", help="replace an existing zoo of that name")
    importer.add_argument("--quiet", action="store_true")
    importer.set_defaults(handler=_zoo_import)

    commands.add_parser(
        "train", help="self-supervised training (same as accelerate launch training/train.py)", add_help=False
    )

    evaluate = commands.add_parser("evaluate", help="probes + baselines on zoos; saves probe heads into the model")
    evaluate.add_argument("model_dir", help="a trained model folder (encoder + processor)")
    evaluate.add_argument(
        "--zoo",
        action="append",
        required=True,
        help="ZOO_DIR[:CONFIG] or REPO[:CONFIG]; repeat for several zoos (adds the OOD matrix)",
    )
    evaluate.add_argument("--out", required=True, help="folder for results.json, results.md and the plots")
    evaluate.add_argument(
        "--baselines",
        nargs="*",
        help="subset of W s(W) s(W)_unterthiner linear_map probe_outputs pca_linear pca_cosine pca_rbf umap "
        "(default: all but s(W)_unterthiner, linear_map and probe_outputs)",
    )
    evaluate.add_argument("--max-rows", type=int, help="at most this many rows per split (whole models, seeded)")
    evaluate.add_argument(
        "--validation-fallback",
        choices=["train"],
        help="select α on train if a zoo has no validation split (the report says so)",
    )
    evaluate.add_argument("--seed", type=int, default=0)
    evaluate.add_argument(
        "--ridge-alphas",
        type=float,
        nargs="+",
        metavar="ALPHA",
        help="the ridge probes' α grid, for every method (default: the paper's, 1e3 … 1e-5; results.md counts the "
        "probes whose α is the grid's strongest: they may want a wider one, e.g. --ridge-alphas 1e5 1e4 1e3 …)",
    )
    evaluate.add_argument(
        "--group-weights",
        action="store_true",
        help="with z̄ ⊕ s(W): the hyperrep probes choose on validation a weight for z̄ and for s(W) (full, shrunk or "
        "left out) with their α or C, instead of one α for every column; results.md counts the choices",
    )
    evaluate.add_argument(
        "--overwrite", action="store_true", help="replace probes the model already has for this zoo (same key)"
    )
    evaluate.add_argument(
        "--protocol",
        choices=["small-cnn-zoo"],
        help="the peers' protocol instead: final checkpoints, 50 %% test split, Kendall τ of test accuracy "
        "(s(W)+MLP, s(W)+linear, hyperrep+linear, hyperrep+MLP) → protocol_results.json/.md",
    )
    evaluate.add_argument("--split-file", help="with --protocol: the peers' split file (row indices, no header)")
    evaluate.add_argument(
        "--append-weight-statistics",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="the hyper-representation is z ⊕ s(W) (per-layer weight statistics appended; --no-…: z alone); "
        "written into the model's config.json with the probe heads, no retraining (default: the config's setting)",
    )
    evaluate.add_argument(
        "--weight-statistics",
        choices=["s(W)", "s(W)+shape"],
        help="what is appended to z: s(W), or s(W) followed by 5 per-layer shape statistics (kurtosis, mean |w-m|/σ, "
        "ln σ, share of positive weights, max |w|/σ); implies --append-weight-statistics and is written into "
        "config.json the same way (default: the config's)",
    )
    evaluate.add_argument("--device", default="cpu", help=DEVICE_HELP)
    evaluate.add_argument("--batch-size", type=int, default=2048, help=BATCH_HELP)
    evaluate.add_argument("--threads", type=int)
    evaluate.add_argument("--quiet", action="store_true")
    evaluate.set_defaults(handler=_evaluate)

    predict = commands.add_parser("predict", help="predict the properties of networks from their weights (JSON)")
    predict.add_argument("model", help="a model folder or Hub repo with probe heads (run `hyperrep evaluate` first)")
    predict.add_argument("networks", nargs="+", help=".safetensors state_dicts of networks of the encoder's family")
    predict.add_argument("--zoo", help="which zoo's probes: key or config name (default: the last evaluated)")
    predict.add_argument(
        "--activation", help="the networks' activation (tanh, relu, …): warns when the encoder was not trained on it"
    )
    predict.add_argument("--device", default="cpu", help=DEVICE_HELP)
    predict.add_argument("--batch-size", type=int, default=2048, help=BATCH_HELP)
    predict.add_argument("--threads", type=int)
    predict.set_defaults(handler=_predict)

    push = commands.add_parser("push", help="publish a model folder or a zoo folder to the Hub (one commit)")
    push.add_argument("folder", help="a model folder (after `hyperrep evaluate`) or a zoo folder")
    push.add_argument("repo_id", help="org/name (a model repo for a model, a dataset repo for zoos)")
    push.add_argument("--private", action="store_true", help="create the repo private")
    push.add_argument("--revision", help="branch to commit to (created from main when missing)")
    push.add_argument(
        "--include-checkpoints", action="store_true", help="also publish checkpoints/ and training state"
    )
    push.add_argument("--quiet", action="store_true")
    push.set_defaults(handler=_push)

    demo = commands.add_parser("demo", help="the main job on TETRIS-SEED: build, train, evaluate, predict")
    demo.add_argument("--out", default="demo_output", help="folder for the zoo, the model and the evaluation")
    demo.add_argument("--quick", action="store_true", help="a mini zoo and a short training (about a minute)")
    demo.add_argument(
        "--zoo",
        choices=("tetris_seed", "mnist_hyp"),
        default="tetris_seed",
        help="tetris_seed (the main job) or mnist_hyp (the CNN main job on the MNIST-HYP mini zoo)",
    )
    demo.set_defaults(handler=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``hyperrep`` console script."""
    argv = sys.argv[1:] if argv is None else list(argv)
    from .hub.publish import PushError

    try:
        if argv[:1] == ["train"]:  # every training field is an option: parsed by hyperrep_hf.training.trainer
            return _train(argparse.Namespace(), argv[1:])
        arguments = make_parser().parse_args(argv)
        return arguments.handler(arguments)
    except (ValueError, FileNotFoundError, FileExistsError, PushError) as error:
        print(f"hyperrep: error: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # permissions, a full disk, a path below a file: name the file, no traceback
        if isinstance(error, BrokenPipeError):  # `hyperrep … | head`: the reader left; not an error of ours
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
            return 1
        where = f" ({error.filename})" if error.filename else ""
        print(f"hyperrep: error: {error.strerror or error}{where}.", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("hyperrep: interrupted; run the same command again to resume.", file=sys.stderr)
        return 130
    except RuntimeError as error:  # torch.OutOfMemoryError (not imported here): its message says what to pass
        if type(error).__name__ != "OutOfMemoryError":
            raise
        print(f"hyperrep: error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
