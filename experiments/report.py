"""The report of a comparison grid: paired-bootstrap intervals per regime, method and block size.

    python experiments/report.py                          # dvc exp show --json -> metrics/comparison/
    python experiments/report.py --rev 1a2b3c4            # experiments queued from another commit
    python experiments/report.py --json exp.json          # from a saved `dvc exp show --json`

Writes report.md (tables and verdicts), summary.json and two PNGs per regime (seed-mean curves,
intervals). Experiments without a learning curve (protocol.test_points: 0) are listed as left out.
"""

import argparse
import json
import sys
from pathlib import Path

from cropseg.compare.report import write_report
from cropseg.compare.results import ReportError, build_regimes, exp_show_json, read_experiments


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path, help="`dvc exp show --json` output (default: run it)")
    parser.add_argument("--rev", action="append", help="baseline commit(s) the experiments were queued from "
                                                       "(default: HEAD; `dvc exp show --rev`)")
    parser.add_argument("--out", type=Path, default=Path("metrics/comparison"))
    parser.add_argument("--replicates", type=int, default=10_000, help="bootstrap resamples of the seeds")
    args = parser.parse_args()
    try:
        show = json.loads(args.json.read_text()) if args.json else exp_show_json(revs=args.rev)
        experiments, skipped = read_experiments(show)
        if not experiments:
            raise ReportError("no experiment with a learning curve (queue a grid: experiments/grid.py)")
        regimes = build_regimes(experiments, replicates=args.replicates)
        command = "python experiments/report.py" + "".join(f" --rev {rev}" for rev in args.rev or [])
        files = write_report(regimes, skipped, args.out, command)
    except ReportError as error:
        print(f"report: {error}", file=sys.stderr)
        return 1
    print(f"report: {len(experiments)} experiments in {len(regimes)} regime(s), {len(skipped)} left out -> "
          f"{args.out}/ ({', '.join(files)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
