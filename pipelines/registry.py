"""The model registry for a person: list runs, show one, promote a run to production, roll back.

    python -m pipelines.registry list                      # every finished run; * marks production
    python -m pipelines.registry show [RUN]                # one run (default: production) and its blessing
    python -m pipelines.registry promote RUN [--force]     # serve RUN by default (--force: even unblessed)
    python -m pipelines.registry rollback                  # back to the run the production one replaced
    python -m pipelines.registry --registry gs://bucket/training_outputs list

`serve`, `predict` and batch prediction use the production run unless given
`--run`; a running service picks a new production run up within seconds.
Errors are one line, exit 2. See docs/training.md ("Model lifecycle").
"""

from __future__ import annotations

import argparse
import sys

from pipelines.cli import DefaultsHelpFormatter, OneLineErrorParser, report_usage_error
from taxifare_core import contract, storage
from taxifare_core.training import registry

PROG = "python -m pipelines.registry"


def _money(value) -> str:
    return f"${value:.3f}" if isinstance(value, (int, float)) else "-"


def _metrics(root: str, name: str) -> dict:
    """A run's metrics.json ({} when unreadable: list and show still work)."""
    try:
        metrics = registry.read_json(storage.join(root, name, registry.METRICS_FILE))
    except (OSError, ValueError, UnicodeDecodeError):
        return {}
    return metrics if isinstance(metrics, dict) else {}


def _blessed_text(metrics: dict) -> str:
    blessed = metrics.get("blessed")
    return "yes" if blessed is True else "no" if blessed is False else "-"


def cmd_list(args: argparse.Namespace) -> int:
    """Every finished run, oldest first, with its MAE, the baseline's and whether it was blessed."""
    root = registry.check_root(args.registry)
    names = registry.run_names(root)
    production = registry.production_run(root)
    if not names:
        print(f"no finished run in {root}: run `make train` first")
        return 0
    print(f"{'':2}{'run':<32}{'val MAE':>10}{'baseline':>10}  blessed  rows")
    for name in names:
        metrics = _metrics(root, name)
        rows = metrics.get("rows")
        print(
            f"{'*' if name == production else '':2}{name:<32}{_money(metrics.get('val_mae')):>10}"
            f"{_money(metrics.get('baseline_mae')):>10}  {_blessed_text(metrics):<7}  "
            f"{f'{rows:,}' if isinstance(rows, int) else '-'}"
        )
    unfinished = registry.unfinished_runs(root)
    print(
        f"production: {production or f'none (`{registry.PROMOTE_HINT}`)'}"
        + (f"; interrupted runs (`make train ARGS=--resume`): {', '.join(unfinished)}" if unfinished else "")
    )
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    """One run (default: production): metrics, blessing reasons, feature contract; production history."""
    root = registry.check_root(args.registry)
    run_dir = registry.run_path(args.run, root)
    name = registry.run_name(run_dir)
    metrics = _metrics(root, name)
    record = registry.read_production(root)
    try:
        params = registry.read_json(storage.join(run_dir, registry.PARAMS_FILE))
    except (OSError, ValueError, UnicodeDecodeError):
        params = {}
    params = params if isinstance(params, dict) else {}
    recorded = params.get(registry.FEATURE_CONTRACT_KEY)
    ours = registry.feature_contract_hash()
    contract_text = (
        "none recorded (saved before hashes)"
        if recorded is None
        else f"{recorded} (matches this code)"
        if recorded == ours
        else f"{recorded} (this code's is {ours}: cannot be served)"
    )
    print(f"run          {name}{'  [production]' if record and record['run'] == name else ''}")
    print(f"folder       {run_dir}")
    print(
        f"val MAE      {_money(metrics.get('val_mae'))}  (baseline {_money(metrics.get('baseline_mae'))}, "
        f"{metrics.get('val_rows', '-')} val rows, {metrics.get('rows', '-')} train rows)"
    )
    print(
        f"blessed      {_blessed_text(metrics)}"
        + (
            f"  (compared to {metrics['compared_to']}: {_money(metrics.get('production_mae_same_rows'))} "
            "on the same rows)"
            if metrics.get("compared_to")
            else ""
        )
    )
    for reason in metrics.get("reasons") or []:
        print(f"  - {reason}")
    print(f"features     {contract_text}")
    print(f"data         {metrics.get('train_data', '-')}")
    if record:
        print(f"production history of {root} (oldest first):")
        for entry in record["history"]:
            replaced = f" replacing {entry['replaced']}" if entry.get("replaced") else ""
            print(
                f"  {entry.get('at', '?')}  {entry.get('action', '?'):<8} {entry.get('run', '?')}{replaced}"
                f"  val MAE {_money(entry.get('val_mae'))}  by {entry.get('by', '?')}"
            )
    return 0


def cmd_promote(args: argparse.Namespace) -> int:
    """Make RUN the production run."""
    before = registry.production_run(args.registry)
    record = registry.promote(args.run, args.registry, force=args.force)
    if before == args.run:
        print(f"run {args.run} already is the production run of {registry.registry_root(args.registry)}")
    else:
        replaced = f", replacing run {before}" if before else ""
        print(f"promoted run {record['run']} to production{replaced} (val MAE {_money(record.get('val_mae'))})")
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    """Give production back to the run the current one replaced."""
    before = registry.production_run(args.registry)
    record = registry.rollback(args.registry)
    print(
        f"rolled back: production is run {record['run']} again (was {before}; val MAE {_money(record.get('val_mae'))})"
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The CLI: one subcommand per action, each with its own --help."""
    parser = OneLineErrorParser(
        prog=PROG,
        formatter_class=DefaultsHelpFormatter,
        description="List the registry's runs, show one, promote a run to production, roll production back.",
    )
    parser.add_argument(
        "--registry", default=str(contract.local_registry_path()), help="model registry folder (local or gs://)"
    )
    commands = parser.add_subparsers(
        dest="command", metavar="{list,show,promote,rollback}", parser_class=OneLineErrorParser
    )
    commands.required = True
    listing = commands.add_parser(
        "list",
        help="every finished run; * marks the production run",
        description="Every finished run, oldest first: val MAE, baseline MAE, blessed, "
        "rows; * marks the production run.",
    )
    listing.set_defaults(handler=cmd_list)
    show = commands.add_parser(
        "show",
        help="one run (default: production) and the production history",
        description="One run: metrics, why it was or was not blessed, its feature "
        "contract, and the production history.",
    )
    show.add_argument("run", nargs="?", default=None, help="run name (default: the production run)")
    show.set_defaults(handler=cmd_show)
    promote = commands.add_parser(
        "promote",
        help="make RUN the production run",
        description="Make RUN the production run: serve, predict and batch prediction "
        "use it by default, a running service loads it within seconds.",
    )
    promote.add_argument("run", help="run name (see `list`)")
    promote.add_argument("--force", action="store_true", help="promote a run even though it was not blessed")
    promote.set_defaults(handler=cmd_promote)
    rollback = commands.add_parser(
        "rollback",
        help="production back to the run the current one replaced",
        description="Give production back to the run the current production run replaced (repeat to go further back).",
    )
    rollback.set_defaults(handler=cmd_rollback)
    for command in (listing, show, promote, rollback):  # also accepted after the subcommand
        command.add_argument(
            "--registry",
            default=argparse.SUPPRESS,
            help="model registry folder (local or gs://; default: as before the subcommand)",
        )
    return parser


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; one-line errors, exit 2."""
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except (registry.NoModelError, registry.ProductionChangedError, storage.StorageError) as error:
        return report_usage_error(PROG, error)


if __name__ == "__main__":
    sys.exit(main())
