"""Checkpoints (resume after a crash) and model files (what later stages and users load).

A checkpoint is written at the end of every epoch to a folder outside the stage's DVC outputs
(DVC deletes outputs before it runs a stage), tagged with a digest of everything that defines the
run: a killed run resumes from its last epoch, and a changed config or input never resumes a stale
checkpoint. Model files hold only tensors and plain Python values so that
``torch.load(path, weights_only=True)`` opens them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from ..core.atomic import atomic_file


def save_atomic(obj: Any, path: Path) -> None:
    """``torch.save`` through a temporary sibling, so a kill never leaves a torn file."""
    with atomic_file(path, "wb") as handle:
        torch.save(obj, handle)
        handle.flush()
        os.fsync(handle.fileno())


def load_checkpoint(path: Path, digest: str) -> dict[str, Any] | None:
    """The checkpoint at ``path`` if it belongs to this exact run (same digest), else None.

    An unreadable checkpoint, or one of another run, is reported on stdout and ignored.

    Args:
        path: the checkpoint file (it may not exist).
        digest: the digest of this run's config and inputs, as stored under ``"digest"``.
    """
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a corrupt checkpoint is ignored, never fatal
        print(f"checkpoint: ignoring unreadable {path} ({error})")
        return None
    if state.get("digest") != digest:
        print(f"checkpoint: {path} is from another config or input; starting afresh")
        return None
    return state


def model_file(model: torch.nn.Module, *, arch: str, model_config: dict, label_set: dict, loader: dict,
               metrics: dict[str, float], epoch: int) -> dict[str, Any]:
    """Everything needed to use a trained model: weights, architecture, labels, normalisation.

    Args:
        model: the trained module (a DDP wrapper is unwrapped); its weights are copied to the CPU.
        arch: ``model.arch``.
        model_config: ``model.config`` of :func:`cropseg.nn.models.build_model` (rebuilds the module).
        label_set: :meth:`cropseg.split.labels.LabelSet.to_dict`.
        loader: the loader params the inputs were made with (months, normalisation).
        metrics: the validation metrics of this epoch.
        epoch: the epoch the weights are from.

    Returns:
        Plain types and tensors only (``format: cropseg-model-1``), for :func:`save_atomic`.
    """
    weights = {k: v.detach().cpu() for k, v in _unwrap(model).state_dict().items()}
    return {"format": "cropseg-model-1", "arch": arch, "model": model_config, "state_dict": weights,
            "labels": label_set, "loader": loader, "metrics": metrics, "epoch": epoch}


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if hasattr(model, "module") else model


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, dict[str, Any]]:
    """Rebuild a trained model from its model file (``weights_only``: no code is unpickled).

    Args:
        path: the model file (``models/model.pt``).
        device: where the weights are loaded and the model is moved.

    Returns:
        The model in eval mode and the file's contents (labels, loader settings, metrics).

    Raises:
        ValueError: the file is not a cropseg model file, or its architecture config is invalid
            (:func:`cropseg.nn.models.build_model`).
        FileNotFoundError: ``path`` does not exist.
    """
    from .models import build_model

    content = torch.load(path, map_location=device, weights_only=True)
    if content.get("format") != "cropseg-model-1":
        raise ValueError(f"{path}: not a cropseg model file (format {content.get('format')!r})")
    config = dict(content["model"])
    config.setdefault("norm", "batch")  # files written before model.norm existed normalised with batch statistics
    model = build_model(config.pop("arch"), **config)
    model.load_state_dict(content["state_dict"])
    return model.to(device).eval(), content
