"""The report of a comparison grid: per regime, every method against uniform and the best equal-information baseline.

    python experiments/report.py                          # dvc exp show --json -> metrics/comparison/
    python experiments/report.py --rev 1a2b3c4            # experiments queued from another commit
    python experiments/report.py --json exp.json          # from a saved `dvc exp show --json`
    python experiments/report.py --runs metrics/comparison/runs.csv   # recompute from the committed runs

Writes runs.csv (one row per run: params, costs, curve), report.md (a verdict table per regime),
summary.json and a curves PNG per regime. Experiments without a learning curve
(protocol.test_points: 0), failed or unfinished ones are listed as left out.
"""

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import yaml

from cropseg.compare.experiments import ReportError, exp_show_json, read_experiments
from cropseg.compare.report import RUNS_FILE, write_report
from cropseg.compare.runs import config_namers, read_runs, runs_table
from cropseg.compare.verdicts import build

REGIMES = Path(__file__).with_name("regimes.yaml")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--json", type=Path, help="`dvc exp show --json` output (default: run it)")
    source.add_argument("--runs", type=Path, help=f"a {RUNS_FILE} written by an earlier report (no DVC needed)")
    parser.add_argument("--rev", action="append", help="baseline commit(s) the experiments were queued from "
                                                       "(default: HEAD; `dvc exp show --rev`)")
    parser.add_argument("--out", type=Path, default=Path("metrics/comparison"))
    args = parser.parse_args()
    try:
        skipped: list[str] = []
        if args.runs:
            with tempfile.TemporaryDirectory() as tmp:  # --out may be the folder the runs are read from
                table = read_runs(Path(shutil.copy(args.runs, Path(tmp) / RUNS_FILE)))
            command = f"python experiments/report.py --runs {args.runs}"
        else:
            import json

            show = json.loads(args.json.read_text()) if args.json else exp_show_json(revs=args.rev)
            experiments, skipped = read_experiments(show)
            regime_name, method_name = config_namers(yaml.safe_load(REGIMES.read_text()))
            table = runs_table(experiments, regime_name=regime_name, method_name=method_name)
            command = "python experiments/report.py" + "".join(f" --rev {rev}" for rev in args.rev or [])
        regimes = build(table)
        files = write_report(table, regimes, skipped, args.out, command)
    except (ReportError, ValueError) as error:
        print(f"report: {error}", file=sys.stderr)
        return 1
    print(f"report: {len(table)} runs in {len(regimes)} regime(s), {len(skipped)} left out -> "
          f"{args.out}/ ({', '.join(files)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
