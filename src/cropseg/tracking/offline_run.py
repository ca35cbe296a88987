"""Reading a W&B offline run folder back: name, group, config, summary and artifacts.

    python -m cropseg.tracking.offline_run wandb/offline-run-*   # what each run recorded (inputs, git, artifacts)

The ``run-*.wandb`` file is read as the LevelDB log W&B writes it in and its records are parsed
with W&B's own protobuf classes. Used by the tests (what a stage's run recorded) and by people
checking a run before ``wandb sync``; no stage runs it, so it is kept out of
:mod:`cropseg.tracking.wandb_run` (which the stages import): a change here reruns no stage.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

BLOCK = 32 * 1024
HEADER = 7  # ":W&B", uint16 0xBEE1, version 0 (the LevelDB log format W&B writes run files in)


def _records(path: Path):
    """Payloads of a ``run-*.wandb`` file: LevelDB log records (4-byte crc, uint16 length, type)."""
    data = Path(path).read_bytes()
    if data[:4] != b":W&B":
        raise ValueError(f"{path}: not a W&B run file (no ':W&B' header)")
    position, pending = HEADER, b""
    while position + 7 <= len(data):
        left = BLOCK - position % BLOCK
        if left < 7:  # block trailer: zero padding
            position += left
            continue
        length = int.from_bytes(data[position + 4:position + 6], "little")
        kind = data[position + 6]
        payload = data[position + 7:position + 7 + length]
        position += 7 + length
        if kind == 1:
            yield payload
        elif kind == 2:
            pending = payload
        elif kind == 3:
            pending += payload
        elif kind == 4:
            yield pending + payload
            pending = b""
        else:  # zeroed tail of a file still being written
            break


def read_offline_run(run_dir: str | Path, wait_s: float = 30.0) -> dict[str, Any]:
    """Name, group, job type, config, summary and artifacts recorded in an offline run folder.

    W&B's service process may still be flushing the file when ``finish()`` has returned: the
    file is read again (up to ``wait_s``) until it holds the run's ``exit`` record.

    Args:
        run_dir: an ``offline-run-*`` folder (holding one ``run-*.wandb`` file).
        wait_s: how long to wait for the ``exit`` record; after that, what is there is returned.

    Returns:
        ``name``, ``group``, ``job_type``, ``config``, ``summary``, ``artifacts`` (type, entries,
        metadata by name) and ``exited`` (True once the run's exit was recorded).

    Raises:
        ValueError: the folder does not hold exactly one run file, or it is not a W&B run file.
    """
    import time

    deadline = time.monotonic() + wait_s
    while True:
        run = _read_offline_run(run_dir)
        if run.get("exited") or time.monotonic() > deadline:
            return run
        time.sleep(0.2)


def _read_offline_run(run_dir: str | Path) -> dict[str, Any]:
    import json

    from wandb.proto import wandb_internal_pb2 as pb

    run_dir = Path(run_dir)
    (path,) = run_dir.glob("run-*.wandb")
    out: dict[str, Any] = {"config": {}, "summary": {}, "artifacts": {}}

    def items(update) -> dict[str, Any]:
        return {(item.key or ".".join(item.nested_key)): json.loads(item.value_json) for item in update}

    for payload in _records(path):
        record = pb.Record()
        record.ParseFromString(payload)
        kind = record.WhichOneof("record_type")
        if kind == "run":
            out |= {"name": record.run.display_name, "group": record.run.run_group, "job_type": record.run.job_type}
            out["config"] |= items(record.run.config.update)
        elif kind == "config":
            out["config"] |= items(record.config.update)
        elif kind == "summary":
            out["summary"] |= items(record.summary.update)
        elif kind == "artifact":
            entries = {e.path: {"ref": e.ref, "digest": e.digest, "local_path": e.local_path}
                       for e in record.artifact.manifest.contents}
            out["artifacts"][record.artifact.name] = {"type": record.artifact.type, "entries": entries,
                                                      "metadata": json.loads(record.artifact.metadata or "{}")}
        elif kind == "exit":
            out["exited"] = True
    return out


def main(argv: list[str]) -> int:
    """Print what each offline run folder of ``argv`` recorded, as JSON; the exit status.

    Args:
        argv: ``offline-run-*`` folders.

    Returns:
        0.
    """
    import json

    for folder in argv:
        run = read_offline_run(folder)
        print(json.dumps({"run": folder, **{k: run.get(k) for k in ("name", "group", "job_type")},
                          "dvc_inputs": run["config"].get("dvc_inputs"), "git": run["config"].get("git"),
                          "artifacts": {k: v["metadata"] for k, v in run["artifacts"].items()}}, indent=1))
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
