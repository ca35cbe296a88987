"""Queue a comparison grid through DVC: one experiment per regime x method x block size x seed.

    python experiments/grid.py noise40                  # uniform + {random, loss, rho_loss} x {2, 4}, seeds 0..4
    python experiments/grid.py noise40 --dry-run        # print the two `dvc exp run --queue` commands only
    dvc queue start -j 2 && dvc queue status            # run them (2 workers; one per GPU on a GPU box), then:
    python experiments/report.py                        # -> metrics/comparison/
    python experiments/grid.py noise40 --executor dask --slurm configs/cluster/slurm.yaml
                                                        # the same grid on a cluster: one clone per experiment

A regime (experiments/regimes.yaml) is the set of params every point shares (noise, budget, LR
schedule, snapshots); uniform ignores the block size, so it is queued once per seed. Every point is
an ordinary DVC experiment: `dvc exp show` lists it, `dvc exp apply` restores it.
"""

import argparse
import shlex
import subprocess
import sys
from pathlib import Path

import yaml

REGIMES = Path(__file__).with_name("regimes.yaml")


def commands(regime: dict, methods: list[str], blocks: list[int], seeds: int,
             target: str = "evaluate") -> list[list[str]]:
    """The `dvc exp run --queue` commands of a grid (Hydra sweep syntax: `a,b` and `range(0,n)`)."""
    run = ["dvc", "exp", "run", "--queue", *([target] if target else [])]
    shared = [arg for key, value in regime.items() for arg in ("-S", f"{key}={_yaml(value)}")]
    seed = ["-S", f"train.seed=range(0,{seeds})"]
    queued = [[*run, *shared, "-S", "selection.method=uniform", "-S", "selection.block_size=1", *seed]]
    others = [m for m in methods if m != "uniform"]
    if others:
        queued.append([*run, *shared, "-S", f"selection.method={','.join(others)}",
                       "-S", f"selection.block_size={','.join(map(str, blocks))}", *seed])
    return queued


def _yaml(value) -> str:
    return "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("regime", help=f"a regime of {REGIMES.name}")
    parser.add_argument("--methods", nargs="+", default=["random", "loss", "rho_loss"],
                        help="compared with uniform (always queued)")
    parser.add_argument("--blocks", nargs="+", type=int, default=[2, 4], help="block sizes of the methods")
    parser.add_argument("--seeds", type=int, default=5, help="train.seed 0..N-1 (the pairing unit)")
    parser.add_argument("--target", default="evaluate",
                        help="last stage each experiment runs (default: %(default)s; the crop maps of predict "
                             "are not needed to compare; '' for the whole pipeline)")
    parser.add_argument("--dry-run", action="store_true", help="print the commands, queue nothing")
    parser.add_argument("--executor", choices=["queue", "dask"], default="queue",
                        help="queue: `dvc exp run --queue` here (default); dask: every experiment a task on a Dask "
                             "cluster, then `dvc exp pull` (cropseg.sweep)")
    from cropseg.sweep import cli as sweep_cli
    sweep_cli.add_arguments(parser)
    args = parser.parse_args()
    regimes = yaml.safe_load(REGIMES.read_text())
    if args.regime not in regimes:
        parser.error(f"unknown regime {args.regime!r}; {REGIMES} has {sorted(regimes)}")
    queued = commands(regimes[args.regime], args.methods, args.blocks, args.seeds, args.target)
    if args.executor == "dask":
        from cropseg.sweep.points import expand_commands
        return sweep_cli.run(expand_commands(queued), args, prefix=args.regime)
    for command in queued:
        print(shlex.join(command))
        if not args.dry_run:
            subprocess.run(command, check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
