"""Segmentation models over monthly time series: a registry by ``model.arch``.

Every model takes ``(N, T, B, H, W)`` float input (T months, B bands) and returns float32
log-probabilities ``(N, n_classes, H, W)`` at the input size, for any H and W. Both models run
under ``torch.autocast(..., dtype=torch.bfloat16)`` and with ``channels_last`` weights
(``model.to(memory_format=torch.channels_last)``: inputs are converted inside ``forward``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

BACKGROUND_FREQUENCY = 1e-6  # what the head bias assumes for background and for unseen classes


def _follow_memory_format(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``x`` as channels_last when ``weight`` (a k x k conv's, k > 1) is, so convs stay in that format."""
    if weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous():
        return x.contiguous(memory_format=torch.channels_last)
    return x


def init_head_bias(head: nn.Conv2d, class_frequencies: Any) -> None:
    """Set ``head.bias`` to log(class frequency), so that the untrained model predicts the priors.

    ``class_frequencies``: counts or frequencies over the model classes, background (entry 0)
    included; they are normalised over classes 1.. (entry 0 is ignored). Background and classes
    with zero frequency get :data:`BACKGROUND_FREQUENCY`.

    Args:
        head: the model's 1x1 classification conv (one output channel per class).
        class_frequencies: as above, one entry per output channel.

    Raises:
        ValueError: the frequencies do not have one entry per class, are negative or not finite,
            or are all zero outside background.
    """
    freq = torch.as_tensor(np.asarray(class_frequencies, dtype=np.float64))
    if freq.shape != (head.out_channels,):
        raise ValueError(f"class_frequencies has shape {tuple(freq.shape)}, expected ({head.out_channels},)")
    if (freq < 0).any() or not torch.isfinite(freq).all():
        raise ValueError("class_frequencies must be finite and non-negative")
    freq = freq.clone()
    freq[0] = 0.0
    total = freq.sum()
    if total <= 0:
        raise ValueError("class_frequencies are all zero outside background")
    freq = (freq / total).clamp_min(BACKGROUND_FREQUENCY)
    freq[0] = BACKGROUND_FREQUENCY
    with torch.no_grad():
        head.bias.copy_(freq.log().to(head.bias.dtype))


NORMS = ("precise", "batch")


def norm(channels: int, kind: str = "precise") -> nn.BatchNorm2d:
    """BatchNorm2d; ``kind`` says which statistics eval mode normalises with.

    ``precise`` (default): population statistics (``track_running_stats=True``), which the
    training loop recomputes for the current weights before every validation and before saving
    (:mod:`cropseg.nn.precise_bn`): a prediction does not depend on the other samples of its batch.
    ``batch``: no running statistics, eval mode normalises with the statistics of the batch at
    hand (a form of test-time adaptation): predictions change with batch size and batch mates.
    The measurement behind the default is in the README (Training, "BatchNorm").

    Args:
        channels: the feature channels normalised.
        kind: ``precise`` or ``batch`` (``model.norm``).

    Raises:
        ValueError: an unknown ``kind``.
    """
    if kind not in NORMS:
        raise ValueError(f"unknown norm {kind!r}; expected one of {', '.join(NORMS)}")
    return nn.BatchNorm2d(channels, track_running_stats=kind == "precise")


class DoubleConv(nn.Sequential):
    """(3x3 conv, BatchNorm, ReLU) twice."""

    def __init__(self, c_in: int, c_out: int, norm_kind: str = "precise") -> None:
        super().__init__(
            nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
            norm(c_out, norm_kind),
            nn.ReLU(inplace=True),
            nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
            norm(c_out, norm_kind),
            nn.ReLU(inplace=True),
        )


class UNet(nn.Module):
    """U-Net with time folded into channels (T*B input channels).

    ``width`` channels at the first level, doubling at each of the ``depth`` down-samplings
    (max-pool 2); transposed-conv up-sampling with skip connections; a 1x1 head. Inputs are
    zero-padded to a multiple of ``2**depth`` (split evenly on both sides) and cropped back.
    """

    def __init__(self, bands: int, months: int, n_classes: int, width: int, depth: int,
                 norm: str = "precise") -> None:
        """Build the layers.

        Args:
            bands: input bands B.
            months: input periods T (the input has ``T * B`` channels).
            n_classes: output classes, background included.
            width: channels of the first level.
            depth: down-samplings (0: no down-sampling).
            norm: ``model.norm`` (:func:`norm`).

        Raises:
            ValueError: ``width`` below 1, ``depth`` below 0, or an unknown ``norm``.
        """
        super().__init__()
        if depth < 0 or width < 1:
            raise ValueError(f"UNet needs width >= 1 and depth >= 0, got width={width}, depth={depth}")
        self.depth = depth
        chans = [width * 2**i for i in range(depth + 1)]
        self.inc = DoubleConv(bands * months, chans[0], norm)
        self.down = nn.ModuleList(DoubleConv(chans[i], chans[i + 1], norm) for i in range(depth))
        self.up = nn.ModuleList(nn.ConvTranspose2d(chans[i + 1], chans[i], 2, stride=2) for i in reversed(range(depth)))
        self.dec = nn.ModuleList(DoubleConv(2 * chans[i], chans[i], norm) for i in reversed(range(depth)))
        self.head = nn.Conv2d(chans[0], n_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t, b, h, w = x.shape
        x = x.reshape(n, t * b, h, w)
        m = 2**self.depth
        ph, pw = -h % m, -w % m
        top, left = ph // 2, pw // 2
        if ph or pw:
            x = F.pad(x, (left, pw - left, top, ph - top))
        x = _follow_memory_format(x, self.inc[3].weight)
        skips = [self.inc(x)]
        for block in self.down:
            skips.append(block(F.max_pool2d(skips[-1], 2)))
        y = skips.pop()
        for up, dec in zip(self.up, self.dec):
            y = dec(torch.cat([skips.pop(), up(y)], dim=1))
        logits = self.head(y)[:, :, top : top + h, left : left + w]
        return F.log_softmax(logits.float(), dim=1)


class ConvSTARCell(nn.Module):
    """ConvSTAR cell (Turkoglu et al. 2021, after the STAR cell of Turkoglu et al. 2019).

    ``K = sigmoid(conv_x(x) + conv_h(h) + b_K + gate_bias)``, ``z = tanh(conv_xz(x) + b_z)``,
    ``h' = tanh(h + K * (z - h))``. The two input convolutions are one conv with ``2*hidden``
    outputs, so a whole sequence is convolved in one call (:meth:`input_terms`); only ``conv_h``
    runs per step. ``gate_bias`` (1.0) is a fixed offset that starts the gate half open towards
    the new input; ``b_K`` (learnt) starts at 0.
    """

    def __init__(self, c_in: int, hidden: int, kernel_size: int = 3, gate_bias: float = 1.0) -> None:
        """Build the convolutions.

        Args:
            c_in: input channels per time step.
            hidden: channels of the state ``h``.
            kernel_size: side of the (odd, same-padded) convolutions.
            gate_bias: the fixed offset added to the gate's pre-activation.
        """
        super().__init__()
        self.hidden = hidden
        self.gate_bias = gate_bias
        self.conv_x = nn.Conv2d(c_in, 2 * hidden, kernel_size, padding=kernel_size // 2)
        self.conv_h = nn.Conv2d(hidden, hidden, kernel_size, padding=kernel_size // 2, bias=False)
        nn.init.zeros_(self.conv_x.bias)

    def input_terms(self, xs: torch.Tensor) -> torch.Tensor:
        """``(N, T, C, H, W)`` -> ``(N, T, 2*hidden, H, W)``: gate then candidate input terms."""
        x = _follow_memory_format(xs.flatten(0, 1), self.conv_h.weight)
        return self.conv_x(x).unflatten(0, xs.shape[:2])

    def step(self, terms: torch.Tensor, h: torch.Tensor | None) -> torch.Tensor:
        """One month: ``terms`` from :meth:`input_terms` at t, ``h`` the previous state (None = 0)."""
        gate_x, z_x = terms[:, : self.hidden], terms[:, self.hidden :]
        z = torch.tanh(z_x)
        if h is None:  # h = 0: conv_h(h) = 0
            return torch.tanh(torch.sigmoid(gate_x + self.gate_bias) * z).float()
        k = torch.sigmoid(gate_x + self.conv_h(h) + self.gate_bias)
        return torch.tanh(h + k * (z - h))  # h is float32, so the state stays float32 under autocast


class ConvSTAR(nn.Module):
    """``depth`` stacked ConvSTAR layers of ``width`` channels, recurrent over the T months.

    Layer 1 reads the bands of each month, layer l the hidden states of layer l-1; a 1x1 head
    classifies the last hidden state of the last layer. No down-sampling, so any H, W works.
    """

    def __init__(self, bands: int, months: int, n_classes: int, width: int, depth: int, kernel_size: int = 3,
                 norm: str = "precise") -> None:
        """Build the layers.

        Args:
            bands: input bands per month.
            months: input periods (any number works; accepted so every arch takes the same arguments).
            n_classes: output classes, background included.
            width: hidden channels of every layer.
            depth: stacked layers.
            kernel_size: side of the cells' convolutions.
            norm: accepted and ignored (no BatchNorm here).

        Raises:
            ValueError: ``width`` or ``depth`` below 1.
        """
        super().__init__()  # no BatchNorm: ``norm`` is accepted so every arch takes the same arguments
        if depth < 1 or width < 1:
            raise ValueError(f"ConvSTAR needs width >= 1 and depth >= 1, got width={width}, depth={depth}")
        self.cells = nn.ModuleList(ConvSTARCell(bands if i == 0 else width, width, kernel_size) for i in range(depth))
        self.head = nn.Conv2d(width, n_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        seq = x
        for i, cell in enumerate(self.cells):
            terms = cell.input_terms(seq)
            h = None
            states = []
            for t in range(terms.shape[1]):
                h = cell.step(terms[:, t], h)
                states.append(h)
            if i + 1 < len(self.cells):
                seq = torch.stack(states, dim=1)
        assert h is not None
        logits = self.head(h)
        return F.log_softmax(logits.float(), dim=1)


MODELS: dict[str, type[nn.Module]] = {"unet": UNet, "convstar": ConvSTAR}


def build_model(
    arch: str,
    *,
    bands: int,
    months: int,
    n_classes: int,
    width: int,
    depth: int,
    norm: str = "precise",
    class_frequencies: Any = None,
) -> nn.Module:
    """Instantiate ``MODELS[arch]``; with ``class_frequencies`` the head bias is log(frequency).

    The returned module carries ``model.config`` (plain types: arch and the arguments above
    except ``class_frequencies``), enough to rebuild it before loading a state dict.

    Args:
        arch: ``model.arch``, a key of :data:`MODELS`.
        bands: input bands.
        months: input periods.
        n_classes: output classes, background included.
        width: channels (first level of the U-Net, every layer of ConvSTAR).
        depth: U-Net down-samplings, or ConvSTAR layers.
        norm: ``model.norm`` (:func:`norm`).
        class_frequencies: per-class counts for :func:`init_head_bias`; default init when None.

    Returns:
        The model, in training mode, on the CPU.

    Raises:
        ValueError: an unknown ``arch`` or ``norm``, ``bands``/``months``/``n_classes`` below 1,
            invalid ``width``/``depth`` for the arch, or invalid ``class_frequencies``.
    """
    if arch not in MODELS:
        raise ValueError(f"unknown model arch {arch!r}; registered: {', '.join(sorted(MODELS))}")
    for key, value in {"bands": bands, "months": months, "n_classes": n_classes}.items():
        if value < 1:
            raise ValueError(f"{key} must be >= 1, got {value}")
    if norm not in NORMS:
        raise ValueError(f"unknown norm {norm!r}; expected one of {', '.join(NORMS)}")
    model = MODELS[arch](bands=bands, months=months, n_classes=n_classes, width=width, depth=depth, norm=norm)
    if class_frequencies is not None:
        init_head_bias(model.head, class_frequencies)
    model.config = {"arch": arch, "bands": bands, "months": months, "n_classes": n_classes, "width": width,
                    "depth": depth, "norm": norm}
    return model


__all__ = ["MODELS", "NORMS", "norm", "UNet", "ConvSTAR", "ConvSTARCell", "build_model", "init_head_bias"]
