"""A compact residual StyleGAN2-style discriminator, used only to train the bundled generator.

It is ours (NVIDIA's discriminator is not needed to generate images): equalized learning rate,
residual blocks that halve the resolution with the [1, 3, 3, 1] low-pass filter, a minibatch
standard-deviation feature, and a linear head. images [N, C, R, R] in [-1, 1] -> logits [N].
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from .ops import LRELU_GAIN, LRELU_SLOPE, blur, fir_filter_2d


class EqualConv2d(nn.Module):
    """Convolution whose weight is scaled by 1/sqrt(fan_in) at run time; optional stride-2 down-sampling
    (blur first, as StyleGAN2 does) and leaky ReLU * sqrt(2)."""

    def __init__(self, in_channels, out_channels, kernel_size, bias=True, activate=True, down=False):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.gain = 1 / math.sqrt(in_channels * kernel_size ** 2)
        self.activate = activate
        self.down = down
        self.register_buffer("resample_filter", fir_filter_2d([1, 3, 3, 1]), persistent=False)

    def forward(self, x):
        k = self.weight.shape[-1]
        if self.down:
            # Filter with enough padding that a stride-2 convolution gives exactly half the size.
            x = blur(x, self.resample_filter, ((k + 1) // 2, (k + 1) // 2))
            x = F.conv2d(x, self.weight * self.gain, self.bias, stride=2)
        else:
            x = F.conv2d(x, self.weight * self.gain, self.bias, padding=k // 2)
        return F.leaky_relu(x, LRELU_SLOPE) * LRELU_GAIN if self.activate else x


class EqualLinear(nn.Module):
    """Fully connected layer with its weight scaled by 1/sqrt(fan_in) at run time."""

    def __init__(self, in_features, out_features):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(out_features))
        self.gain = 1 / math.sqrt(in_features)

    def forward(self, x):
        return F.linear(x, self.weight * self.gain, self.bias)


class DiscriminatorBlock(nn.Module):
    """[N, in, r, r] -> [N, out, r/2, r/2]: two 3x3 convolutions (the second halves r) plus a 1x1 skip."""

    def __init__(self, in_channels, out_channels):
        super().__init__()
        self.conv0 = EqualConv2d(in_channels, in_channels, 3)
        self.conv1 = EqualConv2d(in_channels, out_channels, 3, down=True)
        self.skip = EqualConv2d(in_channels, out_channels, 1, bias=False, activate=False, down=True)

    def forward(self, x):
        return (self.skip(x) + self.conv1(self.conv0(x))) * math.sqrt(0.5)


class Discriminator(nn.Module):
    """Real/fake logits for images [N, img_channels, img_resolution, img_resolution]."""

    def __init__(self, img_resolution, img_channels=3, channel_base=4096, channel_max=128, mbstd_group=4):
        super().__init__()
        channels = lambda res: min(channel_base // res, channel_max)  # noqa: E731
        self.mbstd_group = mbstd_group
        self.from_rgb = EqualConv2d(img_channels, channels(img_resolution), 1)
        resolutions = [2 ** i for i in range(int(math.log2(img_resolution)), 2, -1)]
        self.blocks = nn.Sequential(*[DiscriminatorBlock(channels(res), channels(res // 2)) for res in resolutions])
        c4 = channels(4)
        self.conv = EqualConv2d(c4 + 1, c4, 3)
        self.fc = EqualLinear(c4 * 16, c4)
        self.out = EqualLinear(c4, 1)

    def minibatch_std(self, x):
        """Append one channel: the std of each feature across a group of samples, averaged, per group."""
        n, c, h, w = x.shape
        g = min(self.mbstd_group, n)
        while n % g:
            g -= 1
        y = x.reshape(g, n // g, c, h, w)
        y = (y.var(dim=0, unbiased=False) + 1e-8).sqrt().mean(dim=[1, 2, 3])  # [n // g]
        y = y.reshape(1, n // g, 1, 1, 1).expand(g, n // g, 1, h, w).reshape(n, 1, h, w)
        return torch.cat([x, y], dim=1)

    def forward(self, img):
        x = self.blocks(self.from_rgb(img))
        x = self.conv(self.minibatch_std(x))
        x = F.leaky_relu(self.fc(x.flatten(1)), LRELU_SLOPE) * LRELU_GAIN
        return self.out(x).squeeze(1)
