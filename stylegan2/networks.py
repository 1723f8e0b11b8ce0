"""The StyleGAN2(-ADA) generator, rebuilt in plain PyTorch with NVIDIA's parameter names.

`Generator(**init_kwargs)` takes the keyword arguments NVIDIA's stylegan2-ada-pytorch generator was built
with (they are stored in its pickles), and `Generator.state_dict()` has exactly the names and shapes of
NVIDIA's `G_ema.state_dict()`, so official weights load with `load_state_dict` and no renaming.
Everything runs in float32; `num_fp16_res` is accepted (it is part of the stored kwargs) but only
NVIDIA's CUDA training path used half precision.

Shapes: z [N, z_dim], c [N, c_dim] (or None when c_dim == 0), w [N, w_dim], ws [N, num_ws, w_dim],
images [N, img_channels, img_resolution, img_resolution] in roughly [-1, 1] (NCHW, RGB).
"""

import math

import torch
from torch import nn

from .ops import bias_lrelu, fir_filter_2d, modulated_conv2d, upsample_2x

RESAMPLE_TAPS = [1, 3, 3, 1]


class FullyConnectedLayer(nn.Module):
    """y = x @ (weight * lr_multiplier / sqrt(in)).T + bias * lr_multiplier, then optionally lrelu * sqrt(2).

    The weight is stored divided by lr_multiplier (equalized learning rate), as NVIDIA stores it.
    """

    def __init__(self, in_features, out_features, activation="linear", lr_multiplier=1.0, bias_init=0.0):
        super().__init__()
        if activation not in ("linear", "lrelu"):
            raise ValueError(f"unsupported activation {activation!r}")
        self.activation = activation
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_multiplier)
        self.bias = nn.Parameter(torch.full([out_features], float(bias_init)))
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x):
        x = x @ (self.weight * self.weight_gain).t()
        return bias_lrelu(x, self.bias * self.bias_gain, activate=self.activation == "lrelu")


def normalize_2nd_moment(x, eps=1e-8):
    """Scale each row of x [N, D] to unit root-mean-square."""
    return x * (x.square().mean(dim=1, keepdim=True) + eps).rsqrt()


class MappingNetwork(nn.Module):
    """z (and optional class label c) -> w, broadcast to num_ws copies; tracks w_avg while training."""

    def __init__(self, z_dim, c_dim, w_dim, num_ws, num_layers=8, embed_features=None, layer_features=None,
                 activation="lrelu", lr_multiplier=0.01, w_avg_beta=0.995):
        super().__init__()
        self.z_dim, self.c_dim, self.w_dim, self.num_ws = z_dim, c_dim, w_dim, num_ws
        self.num_layers = num_layers
        self.w_avg_beta = w_avg_beta
        embed_features = 0 if c_dim == 0 else (w_dim if embed_features is None else embed_features)
        layer_features = w_dim if layer_features is None else layer_features
        features = [z_dim + embed_features] + [layer_features] * (num_layers - 1) + [w_dim]
        if c_dim > 0:
            self.embed = FullyConnectedLayer(c_dim, embed_features)
        for i in range(num_layers):
            setattr(self, f"fc{i}", FullyConnectedLayer(features[i], features[i + 1], activation=activation,
                                                        lr_multiplier=lr_multiplier))
        if w_avg_beta is not None:
            self.register_buffer("w_avg", torch.zeros([w_dim]))

    def forward(self, z, c=None, truncation_psi=1.0, truncation_cutoff=None):
        """z [N, z_dim], c [N, c_dim] or None -> ws [N, num_ws, w_dim], truncated towards w_avg.

        truncation_psi < 1 pulls w towards w_avg (0 gives w_avg itself); truncation_cutoff limits that
        to the first `truncation_cutoff` of the num_ws copies (the coarse layers).
        """
        parts = []
        if self.z_dim > 0:
            parts.append(normalize_2nd_moment(z.to(torch.float32)))
        if self.c_dim > 0:
            parts.append(normalize_2nd_moment(self.embed(c.to(torch.float32))))
        x = torch.cat(parts, dim=1)
        for i in range(self.num_layers):
            x = getattr(self, f"fc{i}")(x)
        if self.training and self.w_avg_beta is not None:
            with torch.no_grad():
                self.w_avg.copy_(x.detach().mean(dim=0).lerp(self.w_avg, self.w_avg_beta))
        ws = x.unsqueeze(1).repeat(1, self.num_ws, 1)
        if truncation_psi != 1:
            cutoff = self.num_ws if truncation_cutoff is None else truncation_cutoff
            ws[:, :cutoff] = self.w_avg.lerp(ws[:, :cutoff], truncation_psi)
        return ws


class SynthesisLayer(nn.Module):
    """Modulated 3x3 convolution (optionally up-sampling by 2), noise, bias, lrelu, clamp."""

    def __init__(self, in_channels, out_channels, w_dim, resolution, up=1, conv_clamp=None, kernel_size=3,
                 use_noise=True, resample_filter=RESAMPLE_TAPS):
        super().__init__()
        self.resolution = resolution
        self.up = up
        self.use_noise = use_noise
        self.conv_clamp = conv_clamp
        self.register_buffer("resample_filter", fir_filter_2d(resample_filter))
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        if use_noise:
            self.register_buffer("noise_const", torch.randn(resolution, resolution))
            self.noise_strength = nn.Parameter(torch.zeros([]))
        self.bias = nn.Parameter(torch.zeros([out_channels]))

    def forward(self, x, w, noise_mode="const"):
        """x [N, I, r/up, r/up], w [N, w_dim] -> [N, O, r, r]; noise_mode: 'const', 'random' or 'none'."""
        if noise_mode not in ("const", "random", "none"):
            raise ValueError(f"noise_mode must be 'const', 'random' or 'none', not {noise_mode!r}")
        x = modulated_conv2d(x, self.weight, self.affine(w), up=self.up == 2, f=self.resample_filter)
        if self.use_noise and noise_mode == "const":
            x = x + self.noise_const * self.noise_strength
        elif self.use_noise and noise_mode == "random":
            x = x + torch.randn(x.shape[0], 1, self.resolution, self.resolution, device=x.device) * self.noise_strength
        return bias_lrelu(x, self.bias, clamp=self.conv_clamp)


class ToRGBLayer(nn.Module):
    """Modulated 1x1 convolution to RGB without demodulation, bias, clamp."""

    def __init__(self, in_channels, out_channels, w_dim, kernel_size=1, conv_clamp=None):
        super().__init__()
        self.conv_clamp = conv_clamp
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros([out_channels]))
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size ** 2)

    def forward(self, x, w):
        styles = self.affine(w) * self.weight_gain
        x = modulated_conv2d(x, self.weight, styles, demodulate=False)
        return bias_lrelu(x, self.bias, clamp=self.conv_clamp, activate=False)


class SynthesisBlock(nn.Module):
    """One resolution of the 'skip' architecture: (const | up-conv) + conv, and an RGB image added to the
    up-sampled image of the previous resolution."""

    def __init__(self, in_channels, out_channels, w_dim, resolution, img_channels, is_last,
                 architecture="skip", resample_filter=RESAMPLE_TAPS, conv_clamp=None, use_fp16=False,
                 fp16_channels_last=False, **layer_kwargs):
        super().__init__()
        if architecture != "skip":
            raise ValueError(f"only the 'skip' synthesis architecture is implemented, not {architecture!r}")
        self.in_channels = in_channels
        self.resolution = resolution
        self.register_buffer("resample_filter", fir_filter_2d(resample_filter))
        if in_channels == 0:
            self.const = nn.Parameter(torch.randn(out_channels, resolution, resolution))
        else:
            self.conv0 = SynthesisLayer(in_channels, out_channels, w_dim, resolution, up=2, conv_clamp=conv_clamp,
                                        resample_filter=resample_filter, **layer_kwargs)
        self.conv1 = SynthesisLayer(out_channels, out_channels, w_dim, resolution, conv_clamp=conv_clamp,
                                    resample_filter=resample_filter, **layer_kwargs)
        self.torgb = ToRGBLayer(out_channels, img_channels, w_dim, conv_clamp=conv_clamp)
        self.num_conv = 1 if in_channels == 0 else 2
        self.num_torgb = 1

    def forward(self, x, img, ws, noise_mode="const"):
        """x [N, C_in, r/2, r/2] (None for the first block), img [N, 3, r/2, r/2] or None,
        ws [N, num_conv + 1, w_dim] -> (x [N, C_out, r, r], img [N, 3, r, r])."""
        ws = ws.unbind(dim=1)
        if self.in_channels == 0:
            x = self.const.unsqueeze(0).repeat(ws[0].shape[0], 1, 1, 1)
            x = self.conv1(x, ws[0], noise_mode)
        else:
            x = self.conv0(x, ws[0], noise_mode)
            x = self.conv1(x, ws[1], noise_mode)
        rgb = self.torgb(x, ws[self.num_conv])
        img = rgb if img is None else upsample_2x(img, self.resample_filter) + rgb
        return x, img


class SynthesisNetwork(nn.Module):
    """ws [N, num_ws, w_dim] -> image [N, img_channels, R, R], through blocks b4, b8, ..., bR."""

    def __init__(self, w_dim, img_resolution, img_channels, channel_base=32768, channel_max=512, num_fp16_res=0,
                 **block_kwargs):
        super().__init__()
        if img_resolution < 4 or img_resolution & (img_resolution - 1):
            raise ValueError(f"img_resolution must be a power of two >= 4, not {img_resolution}")
        self.w_dim = w_dim
        self.img_resolution = img_resolution
        self.block_resolutions = [2 ** i for i in range(2, int(math.log2(img_resolution)) + 1)]
        channels = {res: min(channel_base // res, channel_max) for res in self.block_resolutions}
        self.num_ws = 0
        for res in self.block_resolutions:
            block = SynthesisBlock(channels[res // 2] if res > 4 else 0, channels[res], w_dim, res, img_channels,
                                   is_last=res == img_resolution, **block_kwargs)
            # Each block reads one w per conv and one for its toRGB, which is shared with the next block's
            # first conv; only the last block's toRGB w is counted separately.
            self.num_ws += block.num_conv + (block.num_torgb if res == img_resolution else 0)
            setattr(self, f"b{res}", block)

    def forward(self, ws, noise_mode="const"):
        x = img = None
        w_index = 0
        for res in self.block_resolutions:
            block = getattr(self, f"b{res}")
            x, img = block(x, img, ws.narrow(1, w_index, block.num_conv + block.num_torgb), noise_mode)
            w_index += block.num_conv
        return img


class Generator(nn.Module):
    """z (+ c) -> image; the constructor takes NVIDIA's Generator kwargs (see module docstring)."""

    def __init__(self, z_dim, c_dim, w_dim, img_resolution, img_channels, mapping_kwargs=None, synthesis_kwargs=None):
        super().__init__()
        self.z_dim, self.c_dim, self.w_dim = z_dim, c_dim, w_dim
        self.img_resolution, self.img_channels = img_resolution, img_channels
        self.init_kwargs = dict(z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, img_resolution=img_resolution,
                                img_channels=img_channels, mapping_kwargs=dict(mapping_kwargs or {}),
                                synthesis_kwargs=dict(synthesis_kwargs or {}))
        self.synthesis = SynthesisNetwork(w_dim, img_resolution, img_channels, **(synthesis_kwargs or {}))
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(z_dim, c_dim, w_dim, self.num_ws, **(mapping_kwargs or {}))

    def forward(self, z, c=None, truncation_psi=1.0, truncation_cutoff=None, noise_mode="const"):
        """z [N, z_dim] -> images [N, img_channels, R, R] in about [-1, 1]; 'const' noise is deterministic."""
        ws = self.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff)
        return self.synthesis(ws, noise_mode=noise_mode)
