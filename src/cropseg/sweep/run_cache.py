"""Push everything DVC's run cache needs to restore the shared stages on another machine.

``dvc push --run-cache`` (DVC 3.x) sends the run-cache entries and the workspace's cached
outputs, but not the objects the entries reference for ``cache: false`` outputs (DVC commits those
to its cache for the run cache, treeverse/dvc #3778): the DVCLive folders of ``train_holdout``
(``metrics/holdout/plots``, ...). A clone that restores the stage then misses them and trains the
IL model again. This command, run in the clone that computed the shared stages (after ``dvc push
--run-cache``), pushes every object of the newest run-cache entry of each target stage, exactly
what ``dvc exp run --pull`` asks for when it restores that stage:

    PYTHONPATH=src python -m cropseg.sweep.run_cache fetch_s4a medians split train_holdout

It uses DVC's stage-cache internals (``_load``, ``_create_stage``): the end-to-end test of the
Dask executor fails if a DVC upgrade changes them (the points would train the IL model again).
"""

from __future__ import annotations

import argparse
import sys


def push_run_cache_objects(targets: list[str], remote: str | None = None) -> int:
    """Push the objects of the run-cache entries of ``targets`` to ``remote``; the number transferred."""
    from dvc.repo import Repo

    with Repo(".") as repo:
        objs = set()
        for target in targets:
            for stage in repo.stage.collect(target):
                entry = repo.stage_cache._load(stage)
                if not entry:
                    raise ValueError(f"stage {stage.addressing}: no run-cache entry for its current deps and params "
                                     "(run it first: dvc exp run / dvc repro)")
                cached = repo.stage_cache._create_stage(entry, wdir=stage.wdir)
                for ids in cached.get_used_objs().values():
                    objs |= set(ids)
        result = repo.cloud.push(objs, remote=remote)
        if result.failed:
            raise RuntimeError(f"{len(result.failed)} object(s) of the run cache failed to push")
        return len(result.transferred)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("targets", nargs="+", help="stages whose run-cache entries to make restorable")
    parser.add_argument("-r", "--remote", help="DVC remote (default: the default remote)")
    args = parser.parse_args(argv)
    try:
        count = push_run_cache_objects(args.targets, args.remote)
    except (ValueError, RuntimeError) as error:
        print(f"run_cache: {error}", file=sys.stderr)
        return 1
    print(f"run_cache: {count} object(s) of the run cache of {', '.join(args.targets)} pushed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
