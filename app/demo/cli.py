"""Command line of ``prefbudget demo``: an active labelling campaign on MovieLens.

``prefbudget`` calls :func:`add_arguments` to build the sub-command's parser and
:func:`run` to execute it; ``python -m app.demo`` does the same on its own.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from dataclasses import replace
from pathlib import Path

import httpx

from app.demo.campaign import Budget
from app.demo.runner import QUICK, DemoConfig, run_demo

logger = logging.getLogger(__name__)

DESCRIPTION = (
    "Run Algorithm 2 studies on real MovieLens ratings through the prefbudget "
    "API (one per target user and seed), compare them with four baselines "
    "fitted on the same data, and report held-out pairwise accuracy, log-loss "
    "and policy regret."
)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a non-negative integer, got {text}")
    return value


def _rank(text: str) -> int | None:
    if text == "auto":
        return None
    return _positive_int(text)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``prefbudget demo`` to ``parser``."""
    defaults = DemoConfig()
    budget = defaults.budget
    parser.description = DESCRIPTION
    parser.add_argument(
        "--quick",
        action="store_true",
        help=(
            f"small run of under a minute: {QUICK['target_users']} target users, "
            f"{QUICK['source_users']} source users, {QUICK['seeds']} seed and a "
            f"budget of {QUICK['budget'].total} labels per study; options given "
            "explicitly still win"
        ),
    )

    service = parser.add_argument_group("service")
    service.add_argument(
        "--url",
        metavar="URL",
        default=None,
        help=(
            "base URL of a running prefbudget service to use, for example "
            "http://127.0.0.1:8000 (default: start one on 127.0.0.1 with a "
            "temporary SQLite database)"
        ),
    )
    service.add_argument(
        "--api-key",
        metavar="KEY",
        default=None,
        help=(
            "admin-scope API key for --url (default: the PREFBUDGET_API_KEY "
            "environment variable); not needed for the local service"
        ),
    )
    parser.add_argument(
        "--output",
        metavar="DIR",
        type=Path,
        default=None,
        help=(
            "directory for report.json, report.md, allocation.png and accuracy.png "
            "(default: print the table only)"
        ),
    )

    runs = parser.add_argument_group("runs and evaluation")
    runs.add_argument(
        "--seed",
        metavar="N",
        type=_non_negative_int,
        default=None,
        help=(
            f"seed of the choice of study users and of the first run (default "
            f"{defaults.seed}); further runs use seed + 1, seed + 2, ..."
        ),
    )
    runs.add_argument(
        "--seeds",
        metavar="N",
        type=_positive_int,
        default=None,
        help=f"runs per target user, each with its own seed (default {defaults.seeds})",
    )
    runs.add_argument(
        "--target-users",
        metavar="N",
        type=_positive_int,
        default=None,
        help=(
            f"number of target users, one study each per seed (default "
            f"{defaults.target_users})"
        ),
    )
    runs.add_argument(
        "--source-users",
        metavar="N",
        type=_positive_int,
        default=None,
        help=f"number of source users in every study (default {defaults.source_users})",
    )
    runs.add_argument(
        "--rank",
        metavar="K",
        type=_rank,
        default=argparse.SUPPRESS,
        help=(
            f"rank k of the shared representation, or 'auto' to let the solver "
            f"choose it from the source data (default {defaults.rank})"
        ),
    )

    budget_options = parser.add_argument_group("label budget of each study (in labels)")
    budget_options.add_argument(
        "--pilot-source-labels",
        metavar="LABELS",
        type=_non_negative_int,
        default=None,
        help=(
            f"pilot-phase labels summed over the source users (default "
            f"{budget.pilot_source})"
        ),
    )
    budget_options.add_argument(
        "--pilot-target-labels",
        metavar="LABELS",
        type=_non_negative_int,
        default=None,
        help=f"pilot-phase labels of the target user (default {budget.pilot_target})",
    )
    budget_options.add_argument(
        "--source-labels",
        metavar="LABELS",
        type=_non_negative_int,
        default=None,
        help=(
            f"main-phase labels summed over the source users (default {budget.source})"
        ),
    )
    budget_options.add_argument(
        "--target-labels",
        metavar="LABELS",
        type=_non_negative_int,
        default=None,
        help=f"main-phase labels of the target user (default {budget.target})",
    )
    budget_options.add_argument(
        "--batch",
        metavar="LABELS",
        type=_positive_int,
        default=None,
        help=f"labels requested per quota round (default {defaults.batch_size})",
    )
    runs.add_argument(
        "--contexts",
        metavar="N",
        type=_positive_int,
        default=None,
        help=(
            f"held-out candidate sets per run for the policy regret (default "
            f"{defaults.contexts})"
        ),
    )
    parser.add_argument(
        "--no-progress",
        action="store_true",
        help="hide the progress bar",
    )


def config_from_arguments(args: argparse.Namespace) -> DemoConfig:
    """Build the run's settings: defaults, then ``--quick``, then explicit options."""
    config = DemoConfig()
    if args.quick:
        config = replace(config, **QUICK)
    budget = config.budget
    budget = Budget(
        pilot_source=_pick(args.pilot_source_labels, budget.pilot_source),
        pilot_target=_pick(args.pilot_target_labels, budget.pilot_target),
        source=_pick(args.source_labels, budget.source),
        target=_pick(args.target_labels, budget.target),
    )
    return replace(
        config,
        budget=budget,
        seed=_pick(args.seed, config.seed),
        seeds=_pick(args.seeds, config.seeds),
        target_users=_pick(args.target_users, config.target_users),
        source_users=_pick(args.source_users, config.source_users),
        rank=getattr(args, "rank", config.rank),
        batch_size=_pick(args.batch, config.batch_size),
        contexts=_pick(args.contexts, config.contexts),
        url=args.url,
        api_key=args.api_key or os.environ.get("PREFBUDGET_API_KEY"),
        progress=not args.no_progress,
    )


def _pick(value: int | None, default: int) -> int:
    return default if value is None else value


def run(args: argparse.Namespace) -> int:
    """Run the demo with parsed arguments; return the process exit code."""
    config = config_from_arguments(args)
    try:
        run_demo(config, output=args.output, stream=sys.stdout)
    except (RuntimeError, ValueError, httpx.HTTPError) as error:
        logger.error("demo.failed error=%s", error)
        sys.stderr.write(f"prefbudget demo failed: {error}\n")
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` and run the demo; used by ``python -m app.demo``."""
    parser = argparse.ArgumentParser(prog="prefbudget demo")
    add_arguments(parser)
    logging.basicConfig(
        level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    return run(parser.parse_args(argv))
