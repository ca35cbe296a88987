"""The Dask cluster a grid runs on: an existing scheduler, SLURM jobs (dask-jobqueue), or this machine.

One Dask worker runs one experiment at a time (one thread): an experiment is a whole ``dvc exp
run``, and two on one worker would share its GPU and CPUs. Concurrency is therefore the number
of workers: SLURM jobs for a :func:`slurm_cluster`, ``--workers`` (default: the GPUs of this
machine, else 1) for a :class:`~distributed.LocalCluster`; for an existing scheduler
(``DASK_SCHEDULER_ADDRESS``) start its workers with ``--nthreads 1``.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

#: Keys of the SLURM config file that are ours, not SLURMCluster arguments.
OWN_KEYS = {"jobs": "SLURM jobs to start (one Dask worker each)", "gpus": "GPUs per job (--gres=gpu:N)"}


def _slurm_arguments() -> set[str]:
    from dask_jobqueue.core import Job, JobQueueCluster
    from dask_jobqueue.slurm import SLURMJob

    names = set()
    for function in (Job.__init__, SLURMJob.__init__, JobQueueCluster.__init__):
        names |= {p.name for p in inspect.signature(function).parameters.values()
                  if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}
    return names - {"self", "scheduler", "job_cls", "loop", "asynchronous", "n_workers", "name"}


def read_slurm_config(path: Path) -> tuple[dict[str, Any], int]:
    """SLURMCluster arguments and the number of jobs from a config file (``configs/cluster/slurm.yaml``).

    ``gpus: N`` becomes ``#SBATCH --gres=gpu:N``; ``cores`` and ``processes`` default to 1 (one
    experiment per job); environment variables in ``local_directory`` are left for the job's shell
    to expand (``$TMPDIR`` is the node's, not this machine's); ``log_directory`` defaults to
    ``~/.cache/cropseg/slurm-logs``, since SLURM would write into the submitting directory (the
    workspace).
    """
    try:
        config = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as error:
        raise ValueError(f"{path}: cannot read the SLURM config ({error})") from error
    if not isinstance(config, dict):
        raise ValueError(f"{path}: expected a mapping of SLURMCluster arguments, found {type(config).__name__}")
    allowed = _slurm_arguments()
    unknown = sorted(set(config) - allowed - set(OWN_KEYS))
    if unknown:
        raise ValueError(f"{path}: unknown key {unknown[0]!r}: expected SLURMCluster arguments "
                         f"({', '.join(sorted(allowed))}) or {', '.join(OWN_KEYS)}")
    jobs = config.pop("jobs", 1)
    gpus = config.pop("gpus", 0)
    for key, value in (("jobs", jobs), ("gpus", gpus)):
        if not isinstance(value, int) or isinstance(value, bool) or value < (1 if key == "jobs" else 0):
            raise ValueError(f"{path}: {key}: expected an integer >= {1 if key == 'jobs' else 0}, found {value!r}")
    if gpus:
        config["job_extra_directives"] = [*(config.get("job_extra_directives") or []), f"--gres=gpu:{gpus}"]
    if not config.get("log_directory"):  # SLURM's default is the submitting directory: the user's workspace
        config["log_directory"] = str(Path.home() / ".cache" / "cropseg" / "slurm-logs")
    config.setdefault("cores", 1)
    config.setdefault("processes", 1)
    if config.get("memory") is None:
        raise ValueError(f"{path}: memory: required by SLURMCluster (memory per job, e.g. 64GB)")
    config = {k: v for k, v in config.items() if v is not None}
    return config, jobs


def slurm_cluster(path: Path, *, start: bool = True):
    """A SLURMCluster from ``path``, scaled to its ``jobs`` when ``start`` (``start=False``: for ``job_script()``)."""
    from dask_jobqueue import SLURMCluster

    config, jobs = read_slurm_config(path)
    cluster = SLURMCluster(**config)
    if start:
        cluster.scale(jobs=jobs)
    return cluster


def local_gpus() -> int:
    """GPUs of this machine as torch sees them (0 without CUDA)."""
    try:
        import torch
    except ImportError:
        return 0
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


@contextlib.contextmanager
def dask_client(*, address: str | None = None, slurm: Path | None = None,
                workers: int | None = None) -> Iterator[Any]:
    """A Dask client: ``address`` (or ``DASK_SCHEDULER_ADDRESS``), else SLURM jobs from ``slurm``, else a LocalCluster.

    The cluster this function started is closed on exit; an existing scheduler is left running.
    """
    from distributed import Client, LocalCluster

    address = address or os.environ.get("DASK_SCHEDULER_ADDRESS")
    if address and slurm:
        raise ValueError("give a scheduler address (--scheduler / DASK_SCHEDULER_ADDRESS) or --slurm, not both")
    if address:
        with Client(address) as client:
            yield client
        return
    if slurm:
        cluster = slurm_cluster(slurm)
    else:
        count = workers or max(local_gpus(), 1)
        cluster = LocalCluster(n_workers=count, threads_per_worker=1, processes=True, dashboard_address=None,
                               silence_logs=logging.CRITICAL)  # a worker outliving the scheduler at exit is no news
    with cluster, Client(cluster) as client:
        yield client
