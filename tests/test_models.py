"""Models: shapes at odd sizes, normalised log-probabilities, head bias, bf16, channels_last."""

import numpy as np
import pytest
import torch

from cropseg.nn.models import BACKGROUND_FREQUENCY, MODELS, build_model

ARCHS = sorted(MODELS)
SMALL = {"bands": 3, "months": 4, "n_classes": 5, "width": 4, "depth": 2}


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("size", [(61, 61), (13, 18)])
def test_shape_and_normalised(arch, size):
    torch.manual_seed(0)
    model = build_model(arch, **SMALL).eval()
    x = torch.rand(2, 4, 3, *size)
    with torch.no_grad():
        out = model(x)
    assert out.shape == (2, 5, *size) and out.dtype == torch.float32
    torch.testing.assert_close(out.exp().sum(1), torch.ones(2, *size))
    assert model.config == {"arch": arch, **SMALL, "norm": "precise"}


@pytest.mark.parametrize("arch", ARCHS)
def test_head_bias_from_class_frequencies(arch):
    counts = np.array([500, 60, 30, 10, 0])  # background count is ignored; class 4 unseen
    model = build_model(arch, **SMALL, class_frequencies=counts)
    expected = np.log([BACKGROUND_FREQUENCY, 0.6, 0.3, 0.1, BACKGROUND_FREQUENCY])
    np.testing.assert_allclose(model.head.bias.detach().numpy(), expected, rtol=1e-6)
    with pytest.raises(ValueError, match="shape"):
        build_model(arch, **SMALL, class_frequencies=[1, 2])


def test_unknown_arch_lists_registered():
    with pytest.raises(ValueError, match="convstar, unet"):
        build_model("resnet", **SMALL)


@pytest.mark.parametrize("arch", ARCHS)
def test_bf16_autocast_channels_last_forward_backward(arch):
    torch.manual_seed(0)
    model = build_model(arch, **SMALL).to(memory_format=torch.channels_last)
    x = torch.rand(2, 4, 3, 11, 13)
    target = torch.randint(1, 5, (2, 11, 13))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x)
        loss = torch.nn.functional.nll_loss(out, target)
    assert out.dtype == torch.float32 and out.shape == (2, 5, 11, 13)
    loss.backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    # bf16 agrees with float32 roughly
    with torch.no_grad():
        ref = model.eval()(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(x)
    assert (ref.exp() - low.exp()).abs().max() < 0.1
