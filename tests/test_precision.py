"""Precision (32 / bf16 / fp16 with a loss scaler) and the loader workers chosen from the machine."""

import copy

import pytest
import torch

from cropseg.core.params import Run
from cropseg.nn.dataset import Batch
from cropseg.nn.loss import parcel_nll
from cropseg.nn.models import build_model
from cropseg.nn.precision import BF16, FP16, FP32, loader_workers, resolve_precision
from cropseg.selection.selector import Selector
from cropseg.train.resume import RunState, resume, save_checkpoint
from cropseg.train.steps import optimizer_step

CPU = torch.device("cpu")
N_CLASSES = 4


def test_resolve_precision_keeps_the_old_mapping_and_adds_fp16():
    assert resolve_precision("32", CPU) is FP32 and resolve_precision("bf16", CPU) is BF16
    assert resolve_precision("auto", CPU) in (FP32, BF16)
    assert resolve_precision("fp16", torch.device("cuda", 0)) is FP16  # resolving needs no GPU
    assert (FP32.dtype, BF16.dtype, FP16.dtype) == (None, torch.bfloat16, torch.float16)
    assert [p.scales_loss for p in (FP32, BF16, FP16)] == [False, False, True]
    assert not FP32.autocasts and BF16.autocasts and FP16.autocasts


def test_fp16_on_a_cpu_is_a_clear_error():
    with pytest.raises(ValueError, match="fp16 needs a CUDA device"):
        resolve_precision("fp16", CPU)


@pytest.mark.parametrize("requested, device, cpus, gpus, expected", [
    (3, "cpu", 16, 0, 3),  # an explicit value wins
    (0, "cuda", 64, 1, 0),
    (None, "cpu", 64, 0, 0),  # CPU runs: workers would compete with the model's threads
    (None, "cuda", 16, 1, 8),  # min(8, CPUs per GPU - 1)
    (None, "cuda", 16, 4, 3),
    (None, "cuda", 6, 1, 5),
    (None, "cuda", 1, 1, 0),
    (None, "cuda", 4, 8, 0),
])
def test_loader_workers_rule(requested, device, cpus, gpus, expected):
    assert loader_workers(requested, torch.device(device), cpus=cpus, gpus=gpus) == expected


def _setup(seed: int = 0):
    torch.manual_seed(seed)
    model = build_model("unet", bands=2, months=3, n_classes=N_CLASSES, width=4, depth=2)
    x = torch.rand(4, 3, 2, 16, 16)
    y = torch.randint(0, N_CLASSES, (4, 16, 16))
    return model, Batch(torch.arange(4), x, y), torch.ones(N_CLASSES)


def _step(model, batch, weights, precision, scaler, optimizer, grad_clip=1.0):
    run = Run(batch_size=4, physical_batch_size=2, precision="32", grad_clip=grad_clip)
    return optimizer_step(model, optimizer, batch, weights, run, precision, CPU, 1, scaler=scaler)


def test_a_disabled_scaler_leaves_the_float32_step_unchanged():
    model, batch, weights = _setup()
    twin = copy.deepcopy(model)
    plain = torch.optim.Adam(model.parameters(), lr=1e-2)
    loss = _step(model, batch, weights, FP32, FP32.grad_scaler(CPU), plain)[0]
    # the pre-scaler step, written out: backward, clip, step
    optimizer = torch.optim.Adam(twin.parameters(), lr=1e-2)
    optimizer.zero_grad()
    scale = 1.0 / float(weights[batch.y].sum())
    for start in (0, 2):
        weighted, _ = parcel_nll(twin(batch.x[start:start + 2]), batch.y[start:start + 2], weights)
        (weighted.sum() * scale).backward()
    torch.nn.utils.clip_grad_norm_(twin.parameters(), 1.0)
    optimizer.step()
    assert loss > 0
    for a, b in zip(model.parameters(), twin.parameters()):
        assert torch.equal(a, b)


def test_fp16_with_the_scaler_steps_like_float32():
    # CPU autocast runs fp16 in torch >= 2.4 (slowly): the scaler's arithmetic is the same as on CUDA
    model, batch, weights = _setup()
    twin = copy.deepcopy(model)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 12)
    loss16, pixels, samples = _step(model, batch, weights, FP16, scaler,
                                    torch.optim.SGD(model.parameters(), lr=0.1), grad_clip=0)
    loss32 = _step(twin, batch, weights, FP32, FP32.grad_scaler(CPU), torch.optim.SGD(twin.parameters(), lr=0.1),
                   grad_clip=0)[0]
    assert (pixels, samples) == (int((batch.y > 0).sum()), 4)
    assert loss16 == pytest.approx(loss32, rel=1e-2)  # the reported loss is unscaled
    for a, b in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(a, b, rtol=2e-2, atol=2e-3)
    assert scaler.get_scale() == 2.0 ** 12  # no overflow: the scale stays until growth_interval steps


def test_gradients_are_unscaled_before_clipping():
    model, batch, weights = _setup()
    before = [p.detach().clone() for p in model.parameters()]
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 10)
    _step(model, batch, weights, FP16, scaler, torch.optim.SGD(model.parameters(), lr=1.0), grad_clip=1e-3)
    update = torch.sqrt(sum(((p.detach() - b) ** 2).sum() for p, b in zip(model.parameters(), before)))
    # SGD with lr 1 moves by the clipped gradient: norm 1e-3 (clipping scaled gradients would give 1e-3 / 2**10)
    assert float(update) == pytest.approx(1e-3, rel=1e-3)


def test_an_overflowing_fp16_step_is_skipped_and_the_scale_lowered():
    model, batch, weights = _setup()
    before = [p.detach().clone() for p in model.parameters()]
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 60)  # fp16 gradients overflow
    _step(model, batch, weights, FP16, scaler, torch.optim.Adam(model.parameters(), lr=1e-2))
    assert all(torch.equal(p, b) for p, b in zip(model.parameters(), before))
    assert scaler.get_scale() == 2.0 ** 59


def test_the_scaler_state_is_checkpointed_and_resumed(tmp_path):
    model, batch, weights = _setup()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 60, growth_interval=3)
    _step(model, batch, weights, FP16, scaler, optimizer)  # overflow: the scale backs off
    _step(model, batch, weights, FP16, scaler, optimizer)
    selector = Selector(None, weights=weights, physical_batch_size=2, precision=FP16, device=CPU, seed=0,
                        irreducible_path=None, truth=None, n_classes=N_CLASSES)
    path = tmp_path / "last.pt"
    common = dict(scheduler=None, selector=selector, checkpoint_dir=tmp_path, metrics_dir=tmp_path / "metrics")
    save_checkpoint(path, "d", model=model, optimizer=optimizer, scaler=scaler, state=RunState(), **common)

    restored = torch.amp.GradScaler("cpu")
    fresh_model, _, _ = _setup(seed=1)
    resume(path, "d", model=fresh_model, optimizer=torch.optim.Adam(fresh_model.parameters(), lr=1e-2),
           scaler=restored, stage="train", rank=1, **common)
    assert restored.state_dict() == scaler.state_dict()
    assert restored.get_scale() < 2.0 ** 60

    # float32 runs save a disabled scaler's empty state and resume without one
    save_checkpoint(path, "e", model=model, optimizer=optimizer, scaler=FP32.grad_scaler(CPU), state=RunState(),
                    **common)
    state = resume(path, "e", model=fresh_model, optimizer=torch.optim.Adam(fresh_model.parameters()),
                   scaler=FP32.grad_scaler(CPU), stage="train", rank=1, **common)
    assert state.resumed_from == 0
