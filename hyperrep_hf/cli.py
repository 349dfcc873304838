"""The ``hyperrep`` command line. Parsing lives here; the work is done by the library.

hyperrep zoo list
hyperrep zoo build RECIPE --out DIR [--num-models N] [--epochs E] [--subset K] [--device D] [--seed S]
"""

from __future__ import annotations

import argparse
import sys


def _zoo_list(arguments: argparse.Namespace) -> int:
    from .recipes import list_recipes, load_recipe

    for name in list_recipes():
        recipe = load_recipe(name)
        configs = recipe.networks(0)
        spec = recipe.network_spec()
        print(
            f"{name:<24} {len(configs):>5} networks × {recipe.epochs:>3} epochs  {recipe.dataset:<14} "
            f"{spec.name} ({spec.num_parameters} parameters)"
        )
    return 0


def _zoo_build(arguments: argparse.Namespace) -> int:
    from .recipes import BuildOptions, load_recipe
    from .zoo import build_zoo

    _set_threads(arguments.threads)
    options = BuildOptions(
        num_models=arguments.num_models,
        epochs=arguments.epochs,
        subset=arguments.subset,
        seed=arguments.seed,
        device=arguments.device,
        chunk_size=arguments.chunk_size,
    )
    recipe = load_recipe(arguments.recipe)
    build_zoo(
        recipe,
        arguments.out,
        options,
        data_dir=arguments.data_dir,
        overwrite=arguments.overwrite,
        progress=not arguments.quiet,
    )
    return 0


def _set_threads(threads: int | None) -> None:
    if threads is not None:
        if threads < 1:
            raise ValueError(f"--threads must be ≥ 1, got {threads}.")
        import torch

        torch.set_num_threads(threads)


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
    build.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, … (default: cpu)")
    build.add_argument("--seed", type=int, default=0, help="master seed: data, split, choice of networks")
    build.add_argument("--chunk-size", type=int, help="networks trained at once (memory); default: the recipe's")
    build.add_argument("--data-dir", help="folder with MNIST / Fashion-MNIST IDX files")
    build.add_argument("--overwrite", action="store_true", help="replace a different zoo of the same name")
    build.add_argument("--quiet", action="store_true", help="no progress bar or summary lines")
    build.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's choice)")
    build.set_defaults(handler=_zoo_build)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``hyperrep`` console script."""
    arguments = make_parser().parse_args(argv)
    try:
        return arguments.handler(arguments)
    except (ValueError, FileNotFoundError, FileExistsError) as error:
        print(f"hyperrep: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("hyperrep: interrupted; run the same command again to resume.", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
