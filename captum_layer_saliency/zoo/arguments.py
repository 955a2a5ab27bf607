"""The ``build-defaults`` options, shared by the CLI and ``python -m ...zoo.build``.

Nothing here imports torch: the command line's parser (and ``--help``) uses it.
"""

from __future__ import annotations

import argparse
from typing import Any

from captum_layer_saliency._options import CACHE_ENV, DEFAULT_CACHE_DIR, DEFAULT_MODELS

__all__ = ["add_build_arguments", "build_options"]


def add_build_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the build options (the same for every build command) to ``parser``.

    Args:
        parser: the ``build-defaults`` sub-command, or ``zoo.build``'s own parser.
    """
    parser.add_argument("--fast", action="store_true", help="tiny build for tests (useless models)")
    parser.add_argument("--force", action="store_true", help="rebuild even valid artifacts")
    parser.add_argument(
        "--tasks",
        nargs="+",
        default=None,
        choices=DEFAULT_MODELS,
        help="the classifiers to build (default: every task of the backbone)",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default 1)")
    parser.add_argument(
        "--backbone",
        default="minilm",
        choices=("minilm", "smollm2"),
        help="minilm (default) or smollm2: LoRA on SmolLM2-135M (sst2, ag_news; extra smollm2)",
    )
    parser.add_argument(
        "--cache-dir",
        default=None,
        help=f"output directory (default ${CACHE_ENV} or {DEFAULT_CACHE_DIR})",
    )


def build_options(args: argparse.Namespace) -> dict[str, Any]:
    """The keyword arguments of :func:`~captum_layer_saliency.zoo.build.build_defaults`.

    Args:
        args: parsed by a parser given :func:`add_build_arguments`.

    Returns:
        ``tasks``, ``force``, ``fast``, ``cache_dir``, ``num_threads`` and ``backbone``.
    """
    backbone = getattr(args, "backbone", "minilm")
    if args.tasks is not None:
        tasks = list(args.tasks)
    elif backbone == "smollm2":
        tasks = ["sst2", "ag_news"]
    else:
        tasks = list(DEFAULT_MODELS)
    return {
        "tasks": tasks,
        "force": args.force,
        "fast": args.fast,
        "cache_dir": args.cache_dir,
        "num_threads": args.threads,
        "backbone": backbone,
    }
