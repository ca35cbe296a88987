"""The ``--executor dask`` side of ``experiments/grid.py``: points in, a summary and failed logs out."""

from __future__ import annotations

import argparse
import shlex
import tempfile
from collections.abc import Sequence
from pathlib import Path

from .cluster import dask_client
from .executor import SweepError, run_grid
from .points import Point, named
from .shared import read_pipeline, shared_steps


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The cluster options of ``--executor dask``."""
    group = parser.add_argument_group("--executor dask (one clone per experiment on a Dask cluster)")
    group.add_argument("--scheduler", help="address of a running Dask scheduler (default: $DASK_SCHEDULER_ADDRESS; "
                                           "its workers need --nthreads 1)")
    group.add_argument("--slurm", type=Path, help="start the workers as SLURM jobs from this dask-jobqueue config "
                                                  "(e.g. configs/cluster/slurm.yaml)")
    group.add_argument("--workers", type=int, help="workers of the LocalCluster started when neither is given "
                                                   "(default: the GPUs of this machine, else 1)")
    group.add_argument("--git-remote", default="origin", help="the git remote workers clone and push to "
                                                              "(default: %(default)s)")
    group.add_argument("--scratch", help="where workers clone (default: each worker's local directory)")
    group.add_argument("--keep-clones", action="store_true", help="leave the workers' clones (inspect a failure)")


def run(points: Sequence[Point], args: argparse.Namespace, prefix: str) -> int:
    """Run ``points`` on the cluster the options name; print progress, failures and where their logs are."""
    points = named(points, prefix)
    if args.dry_run:
        for point in points:
            print(f"{point.name}: dvc exp run --pull -n {point.name} {shlex.join(point.args())} "
                  f"{' '.join(point.targets)}")
        steps = shared_steps(read_pipeline(Path("dvc.yaml")), points)
        for step in steps:
            print(f"shared stages, run first once per group of points ({len(step.groups)} group(s); points agree on "
                  f"{', '.join(step.keys) or 'everything those stages read'}): {', '.join(step.stages)}")
        if not steps:
            print("shared stages: none (every point runs the whole pipeline itself)")
        return 0
    try:
        with dask_client(address=args.scheduler, slurm=args.slurm, workers=args.workers) as client:
            result = run_grid(points, client, remote=args.git_remote, prefix=prefix, scratch=args.scratch,
                              keep=args.keep_clones)
    except (SweepError, ValueError) as error:
        print(f"grid: {error}")
        return 1
    print(f"grid: {len(result.done)} run, {len(result.existing)} existed, {len(result.failed)} failed; "
          f"{len(result.pulled)} experiments pulled (dvc exp show, experiments/report.py)")
    if result.failed:
        logs = Path(tempfile.mkdtemp(prefix="cropseg-grid-logs-"))
        for outcome in result.failed:
            (logs / f"{outcome['name']}.log").write_text(outcome.get("log", ""))
            print(f"  FAILED {outcome['name']} {outcome.get('overrides', {})}: {outcome['error']}\n"
                  + "\n".join(f"    | {line}" for line in outcome.get("log", "").splitlines()[-15:]))
        print(f"grid: full logs in {logs}/; run the same command again to resubmit the failed experiments only")
        return 1
    return 0
