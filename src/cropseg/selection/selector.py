"""Data selection: score every sample of a block, keep the best, train on those (RHO-Loss & co).

Scores (higher = train on it), each a mean over the sample's parcel pixels:

* ``loss``: class-weighted NLL under the current model;
* ``margin``: best wrong class's log-probability minus the true class's (unweighted);
* ``irreducible``: minus the stored loss of the holdout model (``data/irreducible_loss``);
* ``rho_loss``: ``loss`` minus the stored holdout loss (the reducible holdout loss);
* ``random``: a seeded uniform draw; ``uniform``: no scoring, the block is the batch.

Weighted sums such as ``"1.0*loss - 0.5*irreducible"`` combine them. Scoring runs without
gradients, in eval mode, in the training precision, in sub-batches of ``physical_batch_size``.
Samples without parcel pixels score lowest (-inf), as do NaN scores; ties go to the earlier sample
in the block, and the kept samples stay in their block order.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from ..nn.dataset import Batch
from ..nn.loss import per_sample_loss
from ..nn.precise_bn import batch_statistics
from ..nn.precision import Precision
from .method import SCORES, SelectionError, parse_method  # noqa: F401  (re-exported)

IRREDUCIBLE_FILE = "losses.npy"


def top_k(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Positions of the ``k`` highest scores, in ascending position order.

    NaN counts as -inf; ties are broken towards the earlier position (a stable sort), so the
    choice is deterministic.
    """
    clean = torch.nan_to_num(scores.double().cpu(), nan=-np.inf, posinf=np.inf, neginf=-np.inf)
    order = np.argsort(-clean.numpy(), kind="stable")[:k]
    return torch.from_numpy(np.sort(order))


@torch.no_grad()
def per_sample_scores(model: torch.nn.Module, batch: Batch, weights: torch.Tensor, names: set[str], *,
                      physical_batch_size: int, precision: Precision,
                      batch_norm_stats: bool = True) -> dict[str, torch.Tensor]:
    """``loss`` and/or ``margin`` per sample (NaN where a sample has no parcel pixels).

    ``batch_norm_stats``: BatchNorm layers normalise with each scored sub-batch's own statistics
    (as the model trains) instead of their population statistics (as it predicts); see
    ``selection.scoring_norm``.
    """
    was_training = model.training
    model.eval()
    out: dict[str, list[torch.Tensor]] = {name: [] for name in names}
    for start in range(0, len(batch), physical_batch_size):
        micro = batch.take(slice(start, start + physical_batch_size))
        with (batch_statistics(model) if batch_norm_stats else contextlib.nullcontext()), \
                precision.autocast(micro.x.device):
            log_probs = model(micro.x)
        log_probs = log_probs.float()
        if "loss" in names:
            out["loss"].append(per_sample_loss(log_probs, micro.y, weights))
        if "margin" in names:
            out["margin"].append(margin(log_probs, micro.y))
    model.train(was_training)
    return {name: torch.cat(values) for name, values in out.items()}


def margin(log_probs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over parcel pixels of max_{c != y} log p_c - log p_y; NaN without parcel pixels."""
    true = log_probs.gather(1, target.unsqueeze(1)).squeeze(1)
    others = log_probs.scatter(1, target.unsqueeze(1), -torch.inf)
    others[:, 0] = -torch.inf  # background is never a candidate class
    wrong = others.amax(1)
    mask = (target > 0).float()
    return ((wrong - true) * mask).flatten(1).sum(1) / mask.flatten(1).sum(1)


TRUTH_COLUMNS = ("path", "window_y", "window_x", "label_code", "clean_code", "pixels")


def truth_per_sample(dataset, truth_path: Path) -> dict[str, np.ndarray] | None:
    """Labelled and noisy pixels of every sample (by global index) from the synthetic ``truth.csv``.

    Counted in model-class space: the table gives each window's labelled pixels per (label code,
    clean code) pair in S4A codes, and both codes go through ``dataset.label_set``. ``parcel``
    counts the pixels whose label maps to a class > 0 (those the loss sees), ``noisy`` those of
    them whose label maps to another class than their clean code. A code the label set maps to
    background is then not counted at all (the model never sees it), and a wrong code merged into
    the right class is not noise; counted in code space, both would inflate the noisy share.

    Only meaningful when the medians window equals the truth table's 61 px windows.
    """
    truth = pd.read_csv(truth_path)
    if tuple(truth.columns) != TRUTH_COLUMNS:
        raise ValueError(f"{truth_path}: expected the columns {', '.join(TRUTH_COLUMNS)}, got "
                         f"{', '.join(map(str, truth.columns))} (a truth table of an older generator? "
                         f"run the fetch_s4a stage again)")
    if dataset.window != 61:
        return None
    n = len(dataset.records) * dataset.per_patch
    parcel, noisy = np.zeros(n, np.int64), np.zeros(n, np.int64)
    position = {record["path"]: p for p, record in enumerate(dataset.records)}
    rows = truth[truth.path.isin(position.keys())]
    index = (rows.path.map(position).to_numpy() * dataset.per_patch + rows.window_y.to_numpy() * dataset.sub_x
             + rows.window_x.to_numpy())
    label = dataset.label_set.map(rows.label_code.to_numpy(np.int64))
    clean = dataset.label_set.map(rows.clean_code.to_numpy(np.int64))
    pixels = rows.pixels.to_numpy(np.int64)
    seen = label > 0
    np.add.at(parcel, index[seen], pixels[seen])
    wrong = seen & (label != clean)
    np.add.at(noisy, index[wrong], pixels[wrong])
    return {"parcel": parcel, "noisy": noisy}


@dataclass
class _EpochSums:
    selected_noisy: int = 0
    selected_parcel: int = 0
    block_noisy: int = 0
    block_parcel: int = 0
    score_selected: float = 0.0
    score_rejected: float = 0.0
    n_selected: int = 0
    n_rejected: int = 0


class Selector:
    """Reduces each block of samples to the batches the optimiser steps on."""

    def __init__(self, cfg, *, weights: torch.Tensor, physical_batch_size: int, precision: Precision,
                 device: torch.device, seed: int, irreducible_path: Path | None,
                 truth: dict[str, np.ndarray] | None, n_classes: int):
        self.terms = parse_method(cfg.method) if cfg is not None else None
        self.block_size = cfg.block_size if cfg is not None and self.terms is not None else 1
        self.n_batches = cfg.n_batches_per_block if cfg is not None else 1
        self.batch_norm_stats = cfg is None or cfg.scoring_norm == "batch"
        self.weights, self.physical_batch_size, self.precision = weights, physical_batch_size, precision
        self.device, self.seed, self.truth, self.n_classes = device, seed, truth, n_classes
        self.irreducible = None
        if self.terms and {"irreducible", "rho_loss"} & self.terms.keys():
            if irreducible_path is None or not (irreducible_path / IRREDUCIBLE_FILE).exists():
                raise SelectionError(f"selection.method {cfg.method!r} needs the stored holdout losses "
                                     f"({irreducible_path}/{IRREDUCIBLE_FILE}); run the irreducible_loss stage")
            self.irreducible = torch.from_numpy(np.load(irreducible_path / IRREDUCIBLE_FILE)).float()
        self._sums = _EpochSums()
        self._run_noise = [0, 0, 0, 0]  # selected noisy, selected parcel, block noisy, block parcel: whole run

    def state_dict(self) -> dict[str, Any]:
        """The counters a resumed run continues from (checkpointed with the model)."""
        return {"run_noise": list(self._run_noise), "pending": dict(self._sums.__dict__)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._run_noise = list(state["run_noise"])
        self._sums = _EpochSums(**state["pending"])

    def run_telemetry(self) -> dict[str, float]:
        """Noisy share of the parcel pixels selected / considered over the whole run (model-class space)."""
        if self.truth is None or not self._run_noise[3]:
            return {}
        noisy_selected, parcel_selected, noisy_block, parcel_block = self._run_noise
        return {"selection/noisy_share_selected": noisy_selected / max(parcel_selected, 1),
                "selection/noisy_share_block": noisy_block / max(parcel_block, 1)}

    @property
    def uses_irreducible(self) -> bool:
        return self.irreducible is not None

    @property
    def active(self) -> bool:
        return self.terms is not None and self.block_size > 1

    @property
    def telemetry_columns(self) -> list[str]:
        columns = ["score_selected", "score_rejected"] if self.active else []
        if self.truth is not None:
            columns += ["noisy_share_selected", "noisy_share_block"]
        return columns + [f"class_share/{c}" for c in range(1, self.n_classes)]

    def block_samples(self, batch_size: int) -> int:
        """Samples per block: ``block_size x n_batches_per_block x batch_size``."""
        return self.block_size * self.n_batches * batch_size

    def scores(self, model: torch.nn.Module, block: Batch, step: int, *, positions: torch.Tensor | None = None,
               block_length: int | None = None) -> torch.Tensor:
        """The method's score of every sample of ``block`` (higher = keep); -inf without parcels.

        Under DDP ``block`` is this rank's share: ``positions`` are its samples' positions in the
        whole block of ``block_length`` (the ``random`` draw is made for the whole block, so every
        sample gets the value it gets in one process)."""
        assert self.terms is not None
        needed = {"loss"} if "rho_loss" in self.terms else set()
        needed |= {n for n in ("loss", "margin") if n in self.terms}
        computed = per_sample_scores(model, block, self.weights, needed, physical_batch_size=self.physical_batch_size,
                                     precision=self.precision, batch_norm_stats=self.batch_norm_stats) if needed else {}
        total = torch.zeros(len(block), dtype=torch.float64)
        for name, coefficient in self.terms.items():
            if name == "random":
                generator = torch.Generator().manual_seed(self.seed * 1_000_003 + step)
                value = torch.rand(block_length or len(block), generator=generator, dtype=torch.float64)
                if positions is not None:
                    value = value[positions]
            elif name in ("loss", "margin"):
                value = computed[name].double().cpu()
            else:
                stored = self.irreducible[block.index.cpu()].double()
                value = -stored if name == "irreducible" else computed["loss"].double().cpu() - stored
            total += coefficient * value
        has_parcels = (block.y > 0).flatten(1).any(1).cpu()
        return torch.where(has_parcels, total, torch.tensor(-np.inf, dtype=torch.float64))

    def select(self, model: torch.nn.Module, block: Batch, batch_size: int, *, step: int, rank: int = 0,
               world_size: int = 1) -> tuple[list[Batch], dict]:
        """Keep the top ``n_batches_per_block x batch_size`` samples; split them into batches.

        Under DDP (``world_size > 1``) ``block`` is this rank's share (``BlockSampler``: positions
        ``rank::world_size`` of the whole block). Each rank scores its share, the scores and samples
        are gathered from every rank (``all_gather``), the top-k of the **whole block** is kept
        (what one process keeps), and each rank returns its share (``rank::world_size``) of every
        batch; telemetry is of the whole block, the same on every rank.
        """
        telemetry: dict[str, float] = {}
        if self.active:
            if world_size > 1:
                lengths = _gather_lengths(len(block), world_size, block.index.device)
                positions = torch.arange(rank, sum(lengths), world_size)
                local = self.scores(model, block, step, positions=positions, block_length=sum(lengths))
                block, scores = gather_block(block, local, lengths)
            else:
                scores = self.scores(model, block, step)
            keep = max(1, round(len(block) / self.block_size))
            chosen = top_k(scores, keep)
            rejected = torch.ones(len(block), dtype=torch.bool)
            rejected[chosen] = False
            finite = torch.isfinite(scores)
            telemetry["score_selected"] = _mean(scores[chosen][finite[chosen]])
            telemetry["score_rejected"] = _mean(scores[rejected & finite])
            self._sums.score_selected += float(scores[chosen][finite[chosen]].sum())
            self._sums.n_selected += int(finite[chosen].sum())
            self._sums.score_rejected += float(scores[rejected & finite].sum())
            self._sums.n_rejected += int((rejected & finite).sum())
            selected = block.take(chosen.to(block.index.device))
        else:
            selected = block
        if self.truth is not None:
            telemetry |= self._noise_telemetry(block.index.cpu().numpy(), selected.index.cpu().numpy())
        counts = torch.bincount(selected.y.flatten(), minlength=self.n_classes)[1:self.n_classes].double().cpu()
        shares = counts / counts.sum().clamp_min(1)
        telemetry |= {f"class_share/{c + 1}": float(v) for c, v in enumerate(shares)}
        per_step = max(1, -(-len(selected) // self.n_batches))
        batches = [selected.take(slice(s, s + per_step)) for s in range(0, len(selected), per_step)]
        if self.active and world_size > 1:
            batches = [b.take(slice(rank, None, world_size)) for b in batches]
        return batches, telemetry

    def _noise_telemetry(self, block_index: np.ndarray, selected_index: np.ndarray) -> dict[str, float]:
        noisy, parcel = self.truth["noisy"], self.truth["parcel"]
        sums = self._sums
        sums.selected_noisy += int(noisy[selected_index].sum())
        sums.selected_parcel += int(parcel[selected_index].sum())
        sums.block_noisy += int(noisy[block_index].sum())
        sums.block_parcel += int(parcel[block_index].sum())
        return {"noisy_share_selected": noisy[selected_index].sum() / max(parcel[selected_index].sum(), 1),
                "noisy_share_block": noisy[block_index].sum() / max(parcel[block_index].sum(), 1)}

    def epoch_telemetry(self) -> dict[str, float]:
        """Aggregates since the last call (logged with the validation metrics), then reset."""
        sums, self._sums = self._sums, _EpochSums()
        for i, value in enumerate((sums.selected_noisy, sums.selected_parcel, sums.block_noisy, sums.block_parcel)):
            self._run_noise[i] += value
        out: dict[str, float] = {}
        if self.truth is not None and sums.block_parcel:
            out["selection/noisy_share_selected"] = sums.selected_noisy / max(sums.selected_parcel, 1)
            out["selection/noisy_share_block"] = sums.block_noisy / max(sums.block_parcel, 1)
        if self.active and sums.n_selected:
            out["selection/score_selected"] = sums.score_selected / sums.n_selected
            out["selection/score_rejected"] = sums.score_rejected / max(sums.n_rejected, 1)
        return out


def _gather_lengths(length: int, world_size: int, device: torch.device) -> list[int]:
    import torch.distributed as dist

    mine = torch.tensor([length], dtype=torch.int64, device=device)
    every = [torch.zeros_like(mine) for _ in range(world_size)]
    dist.all_gather(every, mine)
    return [int(t) for t in every]


def _all_gather_padded(tensor: torch.Tensor, lengths: list[int]) -> list[torch.Tensor]:
    """Every rank's ``tensor`` (first dimension ``lengths[rank]``): ``all_gather`` needs equal shapes."""
    import torch.distributed as dist

    longest = max(lengths)
    padded = torch.zeros((longest, *tensor.shape[1:]), dtype=tensor.dtype, device=tensor.device)
    padded[:len(tensor)] = tensor
    every = [torch.empty_like(padded) for _ in lengths]
    dist.all_gather(every, padded)
    return [t[:n] for t, n in zip(every, lengths)]


def gather_block(share: Batch, scores: torch.Tensor, lengths: list[int]) -> tuple[Batch, torch.Tensor]:
    """The whole block and its scores, in block order, from each rank's share (positions
    ``rank::world_size``, as :class:`cropseg.nn.dataset.BlockSampler` deals them)."""
    world_size, total = len(lengths), sum(lengths)
    device = share.index.device
    parts = [_all_gather_padded(t, lengths) for t in (share.index, share.x, share.y, scores.to(device))]
    whole = []
    for pieces in parts:
        out = torch.empty((total, *pieces[0].shape[1:]), dtype=pieces[0].dtype, device=device)
        for rank, piece in enumerate(pieces):
            out[rank::world_size] = piece
        whole.append(out)
    index, x, y, gathered = whole
    return Batch(index, x, y), gathered.cpu()


def _mean(values: torch.Tensor) -> float:
    return float(values.mean()) if values.numel() else float("nan")
