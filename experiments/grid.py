"""Queue a comparison grid through DVC: one experiment per regime x method x replicate.

    python experiments/grid.py realistic              # 7 methods x 8 replicates (experiments/regimes.yaml)
    python experiments/grid.py all                    # every regime but tiny (161 experiments, ~2 h 30 min on 2 cores)
    python experiments/grid.py realistic --dry-run    # print the `dvc exp run --queue` commands only
    dvc queue start -j 2 && dvc queue status          # run them (2 workers), then:
    python experiments/report.py                      # -> metrics/comparison/
    python experiments/grid.py realistic --executor dask --slurm configs/cluster/slurm.yaml
                                                      # the same grid on a cluster: one clone per experiment

A regime (experiments/regimes.yaml) is the params every point of it shares (noise, holdout); the
file's ``base`` params are shared by every regime. A replicate ``r`` sets every seed to ``r``
(:data:`REPLICATE_SEEDS`): the synthetic data, the split, the noise, the holdout model and the
target model's initialisation and order all change together, so replicates are independent draws
of the whole experiment and the unit of the paired statistics. Every point is an ordinary DVC
experiment: `dvc exp show` lists it, `dvc exp apply` restores it.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from pathlib import Path

import yaml

REGIMES = Path(__file__).with_name("regimes.yaml")
#: The params a replicate sets, all to the replicate number.
REPLICATE_SEEDS = ("data.synthetic.seed", "split.seed", "protocol.noise_seed", "holdout.seed", "train.seed")


def load_regimes(path: Path = REGIMES) -> dict:
    """regimes.yaml: ``base``, ``regimes``, ``methods`` and the CI regime ``tiny``."""
    return yaml.safe_load(path.read_text())


def regime_names(config: dict) -> list[str]:
    return [*config["regimes"], "tiny"]


def points(regime: str, config: dict | None = None, *, replicates: int | None = None,
           methods: list[str] | None = None) -> list[dict[str, str]]:
    """Every experiment of a regime: one ordered mapping of ``-S`` overrides per method x replicate.

    ``tiny`` (CI) uses its own params and no ``base``; the others are ``base`` + the regime's params +
    the method's + the replicate's seeds. Values are written as YAML scalars (``null``, ``true``)."""
    config = config or load_regimes()
    if regime == "tiny":
        spec, base = config["tiny"], {}
    elif regime in config["regimes"]:
        spec, base = config["regimes"][regime], config["base"]
    else:
        raise KeyError(f"unknown regime {regime!r}; {REGIMES.name} has {', '.join(regime_names(config))}")
    chosen = methods or spec.get("methods") or list(config["methods"])
    unknown = [m for m in chosen if m not in config["methods"]]
    if unknown:
        raise KeyError(f"unknown method(s) {', '.join(unknown)}; {REGIMES.name} has {', '.join(config['methods'])}")
    out = []
    for r in range(replicates if replicates is not None else spec["replicates"]):
        for method in chosen:
            point = {**base, **spec["params"], **config["methods"][method], **{key: r for key in REPLICATE_SEEDS}}
            out.append({key: _yaml(value) for key, value in point.items()})
    return out


def interleave(per_regime: list[list[dict[str, str]]]) -> list[dict[str, str]]:
    """Replicate-major order: replicate 0 of every regime, then replicate 1, ... (a regime with fewer
    replicates drops out when it has none left)."""
    def replicate(point: dict[str, str]) -> int:
        return int(point["train.seed"])

    return sorted((p for regime in per_regime for p in regime), key=replicate)  # stable: regime order kept


def queue_command(point: dict[str, str], target: str = "evaluate") -> list[str]:
    """``dvc exp run --queue [target] -S key=value ...`` for one point."""
    return ["dvc", "exp", "run", "--queue", *([target] if target else []),
            *[arg for key, value in point.items() for arg in ("-S", f"{key}={value}")]]


def _yaml(value) -> str:
    return "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    config = load_regimes()
    parser.add_argument("regimes", nargs="+", help=f"regimes of {REGIMES.name} ({', '.join(regime_names(config))}) "
                                                   "or all (every regime but tiny)")
    parser.add_argument("--methods", nargs="+", help=f"methods of {REGIMES.name} (default: the regime's, else all)")
    parser.add_argument("--replicates", type=int, help="replicates 0..N-1 (default: the regime's)")
    parser.add_argument("--target", default="evaluate",
                        help="last stage each experiment runs (default: %(default)s; the crop maps of predict "
                             "are not needed to compare; '' for the whole pipeline)")
    parser.add_argument("--interleave", action="store_true",
                        help="queue replicate 0 of every regime, then replicate 1, ...: a grid stopped early still "
                             "covers every regime (default: regime by regime)")
    parser.add_argument("--dry-run", action="store_true", help="print the commands, queue nothing")
    parser.add_argument("--executor", choices=["queue", "dask"], default="queue",
                        help="queue: `dvc exp run --queue` here (default); dask: every experiment a task on a Dask "
                             "cluster, then `dvc exp pull` (cropseg.sweep)")
    from cropseg.sweep import cli as sweep_cli
    sweep_cli.add_arguments(parser)
    args = parser.parse_args()
    names = list(config["regimes"]) if args.regimes == ["all"] else args.regimes
    try:
        per_regime = [points(name, config, replicates=args.replicates, methods=args.methods) for name in names]
    except KeyError as error:
        parser.error(error.args[0])
    grid = interleave(per_regime) if args.interleave else [point for regime in per_regime for point in regime]
    if args.executor == "dask":
        from cropseg.sweep.points import from_overrides, named

        # experiment names <regime>-<content hash>, whatever else is on the command line: `grid.py all` after
        # `grid.py realistic` finds the realistic experiments that exist
        regime_of = {id(point): name for name, regime in zip(names, per_regime) for point in regime}
        targets = [args.target] if args.target else []
        return sweep_cli.run([named(from_overrides([p], targets), regime_of[id(p)])[0] for p in grid], args,
                             prefix="grid")
    for point in grid:
        command = queue_command(point, args.target)
        print(shlex.join(command), flush=True)
        if not args.dry_run:
            subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    print(f"grid: {len(grid)} experiment(s) {'listed' if args.dry_run else 'queued'} "
          f"({', '.join(names)}); run them with `dvc queue start -j 2`", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
