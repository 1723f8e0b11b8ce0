"""The low-level operations of the StyleGAN2 generator (and our discriminator), in plain PyTorch.

- `fir_filter_2d`: the low-pass FIR filter from a 1-D tap list ([1, 3, 3, 1]), as a normalized 2-D kernel.
- `upsample_2x`: zero-insertion up-sampling by 2 followed by that filter (what NVIDIA's upfirdn2d does).
- `blur`: that filter alone, with explicit zero padding (used before the discriminator's stride-2 steps).
- `modulated_conv2d`: style-modulated (and optionally demodulated) convolution, optionally up-sampling by 2.
- `bias_lrelu`: bias, leaky ReLU with its gain, and optional clamping, in the reference's order.
"""

import math

import torch
import torch.nn.functional as F

LRELU_SLOPE = 0.2
LRELU_GAIN = math.sqrt(2)


def fir_filter_2d(taps) -> torch.Tensor:
    """Outer product of a 1-D tap list with itself, normalized to sum 1: a [k, k] float32 tensor."""
    f = torch.as_tensor(taps, dtype=torch.float32)
    f = torch.outer(f, f)
    return f / f.sum()


def blur(x: torch.Tensor, f: torch.Tensor, pad: tuple[int, int], gain: float = 1.0) -> torch.Tensor:
    """Pad x [N, C, H, W] by pad=(before, after) on both axes, then convolve each channel with f * gain."""
    channels = x.shape[1]
    x = F.pad(x, [pad[0], pad[1], pad[0], pad[1]])
    kernel = (f * gain).flip([0, 1]).to(x.dtype)[None, None].repeat(channels, 1, 1, 1)
    return F.conv2d(x, kernel, groups=channels)


def upsample_2x(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """Up-sample [N, C, H, W] to [N, C, 2H, 2W]: insert zeros after each pixel, then low-pass filter with f.

    The gain of 4 keeps the mean; the padding centres a 4-tap filter as NVIDIA's upsample2d does.
    """
    n, c, h, w = x.shape
    zeros_inserted = x.new_zeros(n, c, h, 2, w, 2)
    zeros_inserted[:, :, :, 0, :, 0] = x
    x = zeros_inserted.reshape(n, c, 2 * h, 2 * w)
    taps = f.shape[-1]
    return blur(x, f, ((taps + 1) // 2, (taps - 2) // 2), gain=4.0)


def modulated_conv2d(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor, demodulate: bool = True,
                     up: bool = False, f: torch.Tensor | None = None) -> torch.Tensor:
    """Convolve each sample with the shared weight modulated by its own styles.

    x [N, I, H, W], weight [O, I, k, k], styles [N, I] -> [N, O, H, W] (or [N, O, 2H, 2W] with up=True,
    which also needs the low-pass filter f). Demodulation rescales each output channel of the
    per-sample weight to unit L2 norm (plus 1e-8), as in StyleGAN2. Scaling the activations before
    and after one shared convolution is the same linear map as convolving with per-sample weights.
    """
    n, in_channels, h, w = x.shape
    out_channels, _, k, _ = weight.shape
    x = x * styles.reshape(n, in_channels, 1, 1)
    if not up:
        x = F.conv2d(x, weight, padding=k // 2)
    else:
        # Transposed convolution (stride 2) then the FIR filter, padded as NVIDIA's conv2d_resample pads it.
        x = F.conv_transpose2d(x, weight.transpose(0, 1), stride=2)
        taps = f.shape[-1]
        pad = (k // 2 + (taps + 1) // 2 - (k - 1), k // 2 + (taps - 2) // 2 - (k - 2))
        x = blur(x, f, pad, gain=4.0)
    if demodulate:
        norms = styles.square() @ weight.square().sum(dim=[2, 3]).t()  # [N, O]: squared norm of each modulated filter
        x = x * (norms + 1e-8).rsqrt().reshape(n, out_channels, 1, 1)
    return x


def bias_lrelu(x: torch.Tensor, bias: torch.Tensor, clamp: float | None = None, activate: bool = True) -> torch.Tensor:
    """x + bias (per channel, dim 1), then leaky ReLU times sqrt(2) if activate, then clamp to [-clamp, clamp]."""
    x = x + bias.reshape([1, -1] + [1] * (x.ndim - 2))
    if activate:
        x = F.leaky_relu(x, LRELU_SLOPE) * LRELU_GAIN
    if clamp is not None:
        x = x.clamp(-clamp, clamp)
    return x
