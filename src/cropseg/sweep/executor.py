"""Run a grid's points on a Dask cluster, one clone per experiment, and pull the experiments back.

The steps, each DVC's own:

1. **Check the source** (:func:`check_source`): the points run the commit ``HEAD`` of a clean
   workspace, which must be on the git remote the workers clone (``origin``), with a default DVC
   remote in the committed ``.dvc/config``. A queued experiment could carry uncommitted changes; a
   clone on another machine cannot, so they are an error, not silently left out.
2. **Shared stages first** (:mod:`cropseg.sweep.shared`): one task per group of points runs the
   stages those points share (the whole grid, or each replicate's data stages when the grid varies
   the data seed) and pushes them with their run cache (``dvc push --run-cache``); every point's
   ``dvc exp run --pull`` then restores them from the remote instead of computing them again.
3. **One task per point** (:func:`cropseg.sweep.task.run_experiment`): clone, ``dvc exp run
   --pull -n NAME -S ...``, ``dvc exp push origin NAME``. Points whose experiment already exists
   (here or on the git remote) are not submitted again, so running the same grid again resubmits
   exactly the failed ones.
4. **Pull**: ``dvc exp pull --no-cache origin NAMES``: the experiments' git refs, which carry
   their params and metrics, are all ``dvc exp show`` and ``experiments/report.py`` read. Nothing
   else is written into the workspace (``dvc exp apply NAME && dvc pull`` fetches a model later).
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import task as task_module
from .points import Point, named
from .shared import SharedStep, common_overrides, read_pipeline, shared_steps


class SweepError(RuntimeError):
    """The grid cannot be submitted (workspace, remotes) or its shared stages failed."""


@dataclass(frozen=True)
class Source:
    """What every worker clones and where it pushes."""

    repo: Path
    remote: str
    url: str
    rev: str


@dataclass
class GridResult:
    """How a grid went: finished, failed (with their logs) and already existing experiments."""

    rev: str
    done: list[dict] = field(default_factory=list)
    failed: list[dict] = field(default_factory=list)
    existing: list[str] = field(default_factory=list)
    shared: list[dict] = field(default_factory=list)
    pulled: list[str] = field(default_factory=list)


def _git(repo: Path, *args: str, check: bool = True) -> str:
    done = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True)
    if check and done.returncode:
        raise SweepError(f"`git {' '.join(args)}` failed in {repo}: {done.stderr.strip()}")
    return done.stdout.strip()


def _dvc(repo: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dvc", *args], cwd=repo, capture_output=True, text=True)


def check_source(repo: Path, remote: str = "origin") -> Source:
    """The revision and git URL the workers clone, after checking that they can (see the module doc)."""
    dirty = _git(repo, "diff", "--name-only", "HEAD")
    if dirty:
        files = ", ".join(dirty.splitlines()[:5])
        raise SweepError(f"uncommitted changes to tracked files ({files}): a worker clones the git remote, so commit "
                         "them (and push) first; `dvc queue` is the executor that runs uncommitted work")
    rev = _git(repo, "rev-parse", "HEAD")
    url = _git(repo, "remote", "get-url", remote, check=False)
    if not url:
        raise SweepError(f"no git remote {remote!r} in {repo}: the workers clone it (`git remote add {remote} URL`)")
    # branches and tags only: what `git clone` fetches (pushed experiment refs are not cloned)
    tips = [line.split()[0] for line in _git(repo, "ls-remote", "--heads", "--tags", remote).splitlines()
            if line.strip()]
    if rev not in tips and not _reachable(repo, rev, tips):
        raise SweepError(f"HEAD {rev[:10]} is not on git remote {remote!r} ({url}), so no worker can clone it: "
                         f"`git push {remote} HEAD` first")
    default = _dvc(repo, "config", "--project", "core.remote")
    if default.returncode or not default.stdout.strip():
        raise SweepError("no default DVC remote in the committed .dvc/config: the workers pull and push through it "
                         "(`dvc remote add -d NAME URL`, commit .dvc/config, push)")
    return Source(repo, remote, url, rev)


def _reachable(repo: Path, rev: str, tips: list[str]) -> bool:
    """Whether ``rev`` is an ancestor of one of ``tips``, in one git call: ``rev --not TIPS`` lists ``rev``
    itself unless a tip's history holds it (tips this clone lacks are ignored)."""
    if not tips:
        return False
    done = subprocess.run(["git", "rev-list", "--ignore-missing", "--max-count=1", rev, "--not", *tips],
                          cwd=repo, capture_output=True, text=True)
    return done.returncode == 0 and not done.stdout.strip()


def existing_experiments(source: Source) -> set[str]:
    """Names of the experiments of ``source.rev`` already here or on the git remote."""
    prefix = f"refs/exps/{source.rev[:2]}/{source.rev[2:]}/"
    local = _git(source.repo, "for-each-ref", "--format=%(refname)", prefix).splitlines()
    remote = [line.split()[-1] for line in _git(source.repo, "ls-remote", source.remote, prefix + "*").splitlines()
              if line.strip()]
    return {ref[len(prefix):] for ref in [*local, *remote] if ref.startswith(prefix)}


def _job(source: Source, point: Point, push: str, scratch: str | None, keep: bool) -> dict:
    return {"url": source.url, "rev": source.rev, "name": point.name, "args": point.args(),
            "targets": list(point.targets), "push": push, "scratch": scratch, "keep": keep}


def _register_task_by_value() -> None:
    """Send the task's code with it: workers then need git, DVC and Dask, not this package."""
    import cloudpickle

    cloudpickle.register_pickle_by_value(task_module)


def run_grid(points: Sequence[Point], client: Any, *, repo: Path = Path("."), remote: str = "origin",
             prefix: str = "grid", scratch: str | None = None, keep: bool = False, retries: int = 0,
             log: Callable[[str], None] = print) -> GridResult:
    """Run ``points`` on the cluster of ``client`` and pull their experiments into ``repo``.

    Args:
        points: the grid (names set here from their content when missing).
        client: a ``distributed.Client``.
        repo: the user's repository (only its experiment refs change).
        remote: the git remote the workers clone and push to.
        prefix: experiment names are ``PREFIX-<hash of the point>``.
        scratch: where workers clone (default: each worker's local directory).
        keep: leave the workers' clones in place (to inspect a failure).
        retries: resubmit a task whose worker died (not one whose command failed) this many times.
        log: progress lines.

    Returns:
        What ran, failed and already existed; failed entries carry the task's log.

    Raises:
        SweepError: the source cannot be cloned, or the shared stages failed (their log in the message).
    """
    from distributed import as_completed

    repo = repo.resolve()
    source = check_source(repo, remote)
    points = named(points, prefix)
    result = GridResult(source.rev)
    present = existing_experiments(source)
    todo = [p for p in points if p.name not in present]
    result.existing = [p.name for p in points if p.name in present]
    log(f"grid: {len(points)} experiments of {source.rev[:10]} ({source.url}); {len(result.existing)} exist, "
        f"{len(todo)} to run on {len(client.scheduler_info().get('workers', {}))} worker(s)")
    _register_task_by_value()

    if todo:
        for step in shared_steps(read_pipeline(repo / "dvc.yaml"), points):
            result.shared.extend(_run_shared_step(step, points, client, source, scratch, keep, retries, log))

        futures = {client.submit(task_module.run_experiment, _job(source, p, "experiment", scratch, keep),
                                 pure=False, retries=retries, key=f"cropseg-{p.name}-{time.time_ns()}"): p
                   for p in todo}
        for future in as_completed(futures):
            point = futures[future]
            try:
                outcome = future.result()
            except Exception as error:  # noqa: BLE001 - a dead worker, a lost connection: the point failed
                outcome = {"name": point.name, "ok": False, "error": f"{type(error).__name__}: {error}", "log": "",
                           "host": "?"}
            outcome["overrides"] = dict(point.overrides)
            (result.done if outcome["ok"] else result.failed).append(outcome)
            state = (f"done in {outcome['total_s']:.1f} s (clone {outcome['clone_s']:.1f} s, pull "
                     f"{_seconds(outcome['pull_s'])}, push {outcome['push_s']:.1f} s; ran "
                     f"{', '.join(outcome['ran']) or 'nothing'})" if outcome["ok"]
                     else f"FAILED: {outcome['error']}")
            log(f"grid: {point.name} {state} on {outcome['host']}")

    names = [*result.existing, *(o["name"] for o in result.done)]
    if names:
        pulled = _dvc(repo, "exp", "pull", "--no-cache", "--force", remote, *names)
        if pulled.returncode:
            raise SweepError(f"`dvc exp pull {remote}` failed: {pulled.stderr.strip() or pulled.stdout.strip()}")
        result.pulled = names
    return result


def _run_shared_step(step: SharedStep, points: Sequence[Point], client: Any, source: Source, scratch: str | None,
                     keep: bool, retries: int, log: Callable[[str], None]) -> list[dict]:
    """One task per group of the step, side by side: each runs the step's stages on the overrides its points
    share and pushes them with their run cache. Waits for all; a failed group is a :class:`SweepError`."""
    stages = ", ".join(step.stages)
    if len(step.groups) == 1 and len(step.groups[0]) == len(points):
        log(f"grid: shared stages first, once: {stages}")
    else:
        log(f"grid: shared stages first, once per group of points that agree on {', '.join(step.keys)}: {stages} "
            f"({len(step.groups)} group(s) of {', '.join(str(len(g)) for g in step.groups)} points)")
    futures = [client.submit(task_module.run_experiment,
                             _job(source, Point(common_overrides([points[i] for i in group]), step.stages, ""),
                                  "run-cache", scratch, keep), pure=False, retries=retries)
               for group in step.groups]
    outcomes = []
    for future in futures:
        try:
            outcomes.append(future.result())
        except Exception as error:  # noqa: BLE001 - a dead worker, a lost connection: as a failed task
            outcomes.append({"ok": False, "error": f"{type(error).__name__}: {error}", "log": "", "host": "?"})
    failed = [(group, o) for group, o in zip(step.groups, outcomes) if not o["ok"]]
    if failed:
        group, outcome = failed[0]
        raise SweepError(f"the shared stages ({stages}) of the group {common_overrides([points[i] for i in group])} "
                         f"failed on {outcome['host']}: {outcome['error']}\n{outcome['log']}")
    seconds = ", ".join(f"{o['total_s']:.1f}" for o in outcomes)
    ran = sorted({stage for o in outcomes for stage in o["ran"]},
                 key=lambda stage: step.stages.index(stage) if stage in step.stages else len(step.stages))
    log(f"grid: shared stages pushed with their run cache in {seconds} s "
        f"(ran {', '.join(ran) or 'nothing: all restored from the run cache'})")
    return outcomes


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} s"
