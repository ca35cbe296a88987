"""One Weights & Biases run per stage, with the lineage of what it read and wrote.

W&B is optional and never blocks a stage: ``offline`` by default, ``online`` only with
``WANDB_API_KEY`` in the environment, ``disabled`` on demand; ``WANDB_MODE`` in the environment
wins over ``tracking.wandb``; any W&B failure is printed and the stage goes on.

Where runs live: ``wandb.init(dir=ROOT)`` writes ``ROOT/wandb/offline-run-*`` (one folder per
run), ``ROOT`` being the main repository (:func:`cropseg.core.workspace.repo_root`, also from the
temporary copy of a queued experiment, which DVC deletes) or an explicit ``WANDB_DIR`` (made
absolute against it). ``wandb sync`` with no path syncs the ``./wandb`` folder of the current
directory, so ``wandb sync`` from the repository root uploads every run (docs.wandb.ai, "wandb sync").

Outputs become artifacts named ``<stage>-<output>``. With a DVC remote configured, by reference:
one entry pointing at the object ``dvc push`` stores (``<remote>/files/md5/ab/cdef...``), with
the md5 in the metadata. The entry is built directly because ``Artifact.add_reference`` contacts
the storage even with ``checksum=False`` (boto3 / GCS clients, or a stat of a local file), and
the object is not pushed yet when the stage ends. Without a remote, the files are hard-linked
into the run's own folder and added with ``policy="immutable"``: the default ``"mutable"``
policy copies each file to W&B's staging folder (``~/.local/share/wandb/artifacts/staging``),
where an offline run leaves it until it is synced, and a DVC output is replaced by later runs.
What W&B still stages itself (the JSON of a logged table) goes to the run's own folder
(``WANDB_DATA_DIR`` set per run, unless the user set it).
"""

from __future__ import annotations

import base64
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..core.files import link_or_copy
from ..core.workspace import in_temporary_copy, repo_root
from .lineage import (code_digest, dvc_md5, dvc_remote_url, experiment_name, git_state, input_hashes,
                      remote_object_url, run_group)


_USER_DATA_DIR = os.environ.get("WANDB_DATA_DIR")


def wandb_root() -> Path:
    """The folder whose ``wandb/`` holds the runs: ``WANDB_DIR`` (absolute, against the main repository) or it."""
    root = repo_root()
    explicit = os.environ.get("WANDB_DIR")
    return (root / explicit).absolute() if explicit else root


def resolve_mode(mode: str) -> str:
    """The W&B mode to use: ``WANDB_MODE`` over ``mode``; ``online`` without ``WANDB_API_KEY`` logs offline."""
    mode = os.environ.get("WANDB_MODE", mode)
    if mode == "online" and not os.environ.get("WANDB_API_KEY"):
        print("tracking: tracking.wandb is online but WANDB_API_KEY is not set; logging offline instead")
        return "offline"
    return mode


def lineage_config(stage: str, params: Mapping[str, Any], inputs: Mapping[str, str | Path | None]) -> dict[str, Any]:
    """What a run records about itself: params, inputs read (DVC md5), git state, code, DVC context.

    Args:
        stage: the stage's name.
        params: the params the stage ran with.
        inputs: name -> path of each input read; hashed as DVC does (None where absent).
    """
    state = git_state()
    return {
        "stage": stage,
        "params": dict(params),
        "dvc_inputs": input_hashes(inputs),
        "git": state,
        "git_revision": state["revision"],
        "code_digest": code_digest(),
        # the package that ran: under an editable install a queued experiment imports the main
        # repository's src/, not its temporary copy's
        "code_path": str(Path(__file__).resolve().parent),
        "dvc": {"experiment": experiment_name(), "group": run_group(state), "queued": in_temporary_copy(),
                "baseline_rev": os.environ.get("DVC_EXP_BASELINE_REV"), "root": str(repo_root())},
    }


def start_run(mode: str, project: str, stage: str, *, params: Mapping[str, Any],
              inputs: Mapping[str, str | Path | None], extra: Mapping[str, Any] | None = None, rank: int = 0):
    """A W&B run for ``stage`` (None when disabled, not rank 0, or W&B fails).

    Args:
        mode: ``tracking.wandb``: ``offline``, ``online`` or ``disabled`` (see :func:`resolve_mode`).
        project: the W&B project.
        stage: the stage's name: the run's job type and the end of its name.
        params: the params recorded in the run's config.
        inputs: name -> path of each input, recorded with its DVC md5.
        extra: more config entries (the lineage entries win on a clash).
        rank: the process's rank; only rank 0 logs.

    Returns:
        The ``wandb`` run, in the group :func:`cropseg.tracking.lineage.run_group`, or None.
    """
    mode = resolve_mode(mode)
    if mode == "disabled" or rank != 0:
        return None
    try:
        config = {**(extra or {}), **lineage_config(stage, params, inputs)}
        root = wandb_root()
        (root / "wandb").mkdir(parents=True, exist_ok=True)
        os.environ["WANDB_DIR"] = str(root)  # absolute: W&B resolves a relative one against the cwd
        import wandb

        group = config["dvc"]["group"]
        run = wandb.init(project=project, mode=mode, dir=str(root), job_type=stage, group=group,
                         name=f"{group}-{stage}", config=config, reinit="finish_previous",
                         settings=wandb.Settings(silent=True, x_disable_stats=True))
        if not _USER_DATA_DIR:
            # what W&B still stages (the JSON of a logged table) goes into this run's folder, beside
            # the files it belongs to, instead of ~/.local/share/wandb/artifacts/staging
            os.environ["WANDB_DATA_DIR"] = str(Path(run.dir).parent / "staging")
        return run
    except Exception as error:  # tracking must never stop a stage
        print(f"tracking: W&B disabled for this run ({type(error).__name__}: {error})")
        return None


def log_outputs(run, stage: str, outputs: Mapping[str, str | Path]) -> dict[str, dict[str, str]]:
    """Log each existing output as an artifact ``<stage>-<name>``; returns their metadata.

    Args:
        run: the W&B run.
        stage: the stage's name, the first part of each artifact's name.
        outputs: name -> path of each output; missing ones are skipped.

    Returns:
        name -> ``{"path", "md5"}`` (plus ``"remote"`` and ``"url"`` with a DVC remote) of each
        output logged.
    """
    import wandb

    remote = dvc_remote_url()
    logged = {}
    for name, path in outputs.items():
        path = Path(path)
        if not path.exists():
            continue
        md5 = dvc_md5(path)
        meta = {"path": path.as_posix(), "md5": md5}
        artifact = wandb.Artifact(f"{stage}-{name}", type="model" if path.suffix == ".pt" else "dvc-output")
        if remote:
            meta |= {"remote": remote, "url": remote_object_url(remote, md5)}
            _add_remote_reference(artifact, path.name, meta["url"], md5)
        else:
            copy = Path(run.dir).parent / "outputs" / name / path.name
            _link_tree(path, copy)
            if copy.is_dir():
                artifact.add_dir(str(copy), name=path.name, policy="immutable")
            else:
                artifact.add_file(str(copy), name=path.name, policy="immutable")
        artifact.metadata.update(meta)
        run.log_artifact(artifact)
        logged[name] = meta
    return logged


def _add_remote_reference(artifact, name: str, url: str, md5: str) -> None:
    from wandb.sdk.artifacts.artifact_manifest_entry import ArtifactManifestEntry

    digest = base64.b64encode(bytes.fromhex(md5.removesuffix(".dir"))).decode()
    artifact.manifest.add_entry(ArtifactManifestEntry(path=name, ref=url, digest=digest))


def _link_tree(source: Path, target: Path) -> None:
    if target.exists():
        shutil.rmtree(target) if target.is_dir() else target.unlink()
    if source.is_dir():
        for path in sorted(source.rglob("*")):
            if path.is_file():
                link_or_copy(path, target / path.relative_to(source))
    else:
        link_or_copy(source, target)


class StageRun:
    """The W&B run of a stage that scores or predicts (irreducible_loss, evaluate): lineage, summary,
    tables, images and outputs. Every method is a no-op when W&B is off, and prints instead of
    raising when W&B fails: tracking never stops a stage."""

    def __init__(self, stage: str, mode: str, project: str, *, params: Mapping[str, Any],
                 inputs: Mapping[str, str | Path | None], rank: int = 0):
        """Start the run (:func:`start_run`, same arguments); ``self.run`` is None when W&B is off."""
        self.stage = stage
        self.run = start_run(mode, project, stage, params=params, inputs=inputs, rank=rank)

    def _guard(self, what: str, action) -> None:
        if self.run is None:
            return
        try:
            action()
        except Exception as error:
            print(f"tracking: {what} not logged to W&B ({type(error).__name__}: {error})")

    def summary(self, values: Mapping[str, Any]) -> None:
        self._guard("summary", lambda: self.run.summary.update(dict(values)))

    def table(self, key: str, frame) -> None:
        """A pandas DataFrame as a W&B table."""
        def log():
            import wandb

            self.run.log({key: wandb.Table(dataframe=frame)})
        self._guard(key, log)

    def images(self, paths: Mapping[str, str | Path]) -> None:
        def log():
            import wandb

            self.run.log({key: wandb.Image(str(path)) for key, path in paths.items() if Path(path).exists()})
        self._guard("images", log)

    def outputs(self, outputs: Mapping[str, str | Path]) -> None:
        self._guard("outputs", lambda: log_outputs(self.run, self.stage, outputs))

    def finish(self) -> None:
        if self.run is not None:
            self._guard("finish", self.run.finish)
            self.run = None
