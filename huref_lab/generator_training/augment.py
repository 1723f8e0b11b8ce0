"""Adaptive discriminator augmentation (ADA: Karras et al. 2020, "Training Generative Adversarial Networks
with Limited Data", NeurIPS 2020), written here from the paper.

Every image the discriminator sees, real or generated, goes through a chain of random transformations,
each one applied to each image independently with probability p (`augment`). Because the same chain is
applied to both, and every transformation keeps some probability of being skipped, the generator is
not pushed to draw augmented images for p below about 0.8 (the paper's "non-leaking" condition). p itself
is tuned during training (`AdaptiveProbability`) from the paper's overfitting heuristic
r_t = E[sign(D(augmented real))]: above the target 0.6, D is too sure of the real photos, so p rises;
below it, p falls; it moves by at most batch * interval / (500,000) per adjustment (0 to 1 in 500k
images).

The chain is the paper's "bgc" set (its Appendix B), in its order:
- blit: x-flip, rotation by a multiple of 90 degrees, integer translation (up to 1/8 of the size);
- geometric: isotropic scaling (log2 ~ N(0, 0.2^2)), rotation (uniform angle, probability
  1 - sqrt(1 - p) twice, so that some rotation happens with probability p), anisotropic scaling
  (log2 ~ N(0, 0.2^2)), fractional translation (N(0, 0.125^2) of the size);
- colour: brightness (+N(0, 0.2^2)), contrast (x 2^N(0, 0.5^2)), luma flip, hue rotation (uniform angle
  about the grey axis), saturation (x 2^N(0, 1)).
All geometric steps are composed into one affine map per image and applied by one bilinear
`grid_sample` with reflection at the borders (the paper's reference resamples at twice the size with a
wavelet low-pass filter against aliasing; this plain bilinear sampling is simpler and is used because the
images are only 64x64). All colour steps are composed into one 4x4 matrix per image. Blit steps alone
map pixel centres onto pixel centres, so they move pixels without blurring them. Both parts are
differentiable with respect to the images, as the generator's loss needs.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

LOG2_SCALE_STD = 0.2         # isotropic and anisotropic scaling: log2 of the factor ~ N(0, 0.2^2)
TRANSLATE_MAX = 0.125        # integer translation: uniform, up to this fraction of the size
TRANSLATE_STD = 0.125        # fractional translation: N(0, 0.125^2) of the size
BRIGHTNESS_STD = 0.2         # in image units ([-1, 1] images)
LOG2_CONTRAST_STD = 0.5
LOG2_SATURATION_STD = 1.0


def augment(images: torch.Tensor, p: float) -> torch.Tensor:
    """images [N, 3, H, W] (square, about [-1, 1]) -> the same images through the 'bgc' chain at probability p.

    p = 0 returns images itself. Draws from torch's default generator of images.device (two calls); every
    tensor is made on that device, so on a GPU nothing waits for a host-to-device copy.
    """
    if p <= 0:
        return images
    geometric, colour = random_parameters(images.shape[0], p, images.shape[-1], images.device)
    return recolour(resample(images, geometric_matrices(**geometric)), colour_matrices(**colour))


def random_parameters(n: int, p: float, size: int, device) -> tuple[dict, dict]:
    """Each image's parameters of every step, [N] tensors, set to the step's identity where the step is
    skipped: (geometric_matrices' keyword arguments, colour_matrices')."""
    u = torch.rand(n, 21, device=device)  # [:, :13] which steps run, [:, 13:] uniform parameters
    g = torch.randn(n, 7, device=device)  # normal parameters
    run = u[:, :13] < p                   # one column per step, in the chain's order
    p_rotation = 1 - math.sqrt(1 - min(p, 1.0))  # twice, so that some rotation happens with probability p
    run[:, 4], run[:, 6] = u[:, 4] < p_rotation, u[:, 6] < p_rotation
    pick = lambda i, value, identity: torch.where(run[:, i], value, identity)  # noqa: E731
    shift = ((u[:, 15:17] * 2 - 1) * TRANSLATE_MAX * size).round() * 2 / size  # whole pixels; a pixel is 2 / size
    geometric = {
        "flip": pick(0, (u[:, 13] * 2).floor(), 0.0),
        "quarter_turns": pick(1, (u[:, 14] * 4).floor(), 0.0),
        "shift_x": pick(2, shift[:, 0], 0.0), "shift_y": pick(2, shift[:, 1], 0.0),
        "scale": pick(3, torch.exp2(g[:, 0] * LOG2_SCALE_STD), 1.0),
        "angle_1": pick(4, (u[:, 17] * 2 - 1) * math.pi, 0.0),
        "stretch": pick(5, torch.exp2(g[:, 1] * LOG2_SCALE_STD), 1.0),
        "angle_2": pick(6, (u[:, 18] * 2 - 1) * math.pi, 0.0),
        "offset_x": pick(7, g[:, 2] * TRANSLATE_STD * 2, 0.0), "offset_y": pick(7, g[:, 3] * TRANSLATE_STD * 2, 0.0),
    }
    colour = {
        "brightness": pick(8, g[:, 4] * BRIGHTNESS_STD, 0.0),
        "contrast": pick(9, torch.exp2(g[:, 5] * LOG2_CONTRAST_STD), 1.0),
        "luma_flip": pick(10, (u[:, 19] * 2).floor(), 0.0),
        "hue": pick(11, (u[:, 20] * 2 - 1) * math.pi, 0.0),
        "saturation": pick(12, torch.exp2(g[:, 6] * LOG2_SATURATION_STD), 1.0),
    }
    return geometric, colour


def _affine(a, b, c, d, tx, ty) -> torch.Tensor:
    """[N, 3, 3] homogeneous 2-D maps [[a, b, tx], [c, d, ty], [0, 0, 1]] from [N] entries."""
    zeros, ones = torch.zeros_like(a), torch.ones_like(a)
    return torch.stack([a, b, tx, c, d, ty, zeros, zeros, ones], dim=1).reshape(-1, 3, 3)  # [N, 9] -> [N, 3, 3]


def _rotation(angle):
    return _affine(angle.cos(), -angle.sin(), angle.sin(), angle.cos(), torch.zeros_like(angle), torch.zeros_like(angle))


def geometric_matrices(flip, quarter_turns, shift_x, shift_y, scale, angle_1, stretch, angle_2, offset_x, offset_y):
    """[N, 3, 3]: each image's affine map from an output pixel's coordinates to where it is sampled in the
    input, in grid_sample's normalized coordinates ([-1, 1] across the image, x right, y down), from [N]
    parameters: flip (1 flips x), quarter_turns (0..3), whole-pixel shift, isotropic scale, rotation,
    anisotropic stretch (x by it, y by its inverse), rotation, fractional offset.

    Each step is written as its sampling matrix; every parameter's distribution is symmetric, so that has
    the distribution of the step's inverse, and the steps compose in order as M = M_1 @ M_2 @ ...
    """
    zeros, k = torch.zeros_like(flip), quarter_turns
    cos, sin = (1 - k % 2) * (1 - k), k % 2 * (2 - k)  # of k * 90 degrees, exactly: k = 0, 1, 2, 3 -> 1, 0, -1, 0 and 0, 1, 0, -1
    sign = 1 - 2 * flip
    m = _affine(sign * cos, -sign * sin, sin, cos, zeros, zeros)  # x-flip after an exact quarter turn
    m = m @ _affine(scale, zeros, zeros, scale, shift_x, shift_y)  # whole-pixel shift, then isotropic scale
    m = m @ _rotation(angle_1) @ _affine(stretch, zeros, zeros, 1 / stretch, zeros, zeros) @ _rotation(angle_2)
    return m @ _affine(1 + zeros, zeros, zeros, 1 + zeros, offset_x, offset_y)


def resample(images: torch.Tensor, matrices: torch.Tensor) -> torch.Tensor:
    """images [N, C, H, W] sampled at matrices [N, 3, 3] (output -> input coordinates; see geometric_matrices),
    bilinear, reflected at the borders."""
    grid = F.affine_grid(matrices[:, :2, :].to(images.dtype), list(images.shape), align_corners=False)  # [N, H, W, 2]
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def colour_matrices(brightness, contrast, luma_flip, hue, saturation) -> torch.Tensor:
    """[N, 4, 4]: each image's colour transformation of homogeneous RGB columns [r, g, b, 1], from [N]
    parameters, in closed form.

    With v the unit grey axis, P = v v^T, Q = I - P and K the cross-product matrix of v (K v = 0,
    P K = K P = 0, Q K = K Q = K), the steps applied in order are: x + b 1 (brightness, 1 = (1, 1, 1)),
    c I (contrast), Q + l P with l = 1 - 2 * luma_flip, P + cos(h) Q + sin(h) K (hue rotation about v),
    P + s Q (saturation). Their product is
        x -> c (l P + s cos(h) Q + s sin(h) K) x + c l b 1,
    since P, Q and K multiply as above and P 1 = 1, Q 1 = K 1 = 0.
    """
    v = torch.full((3,), 1 / math.sqrt(3), device=brightness.device)  # the grey axis, made on the device
    P = torch.outer(v, v)
    Q = torch.eye(3, device=v.device) - P
    K = torch.linalg.cross(v.expand(3, 3), torch.eye(3, device=v.device), dim=1).T  # K @ x = v x x
    l = 1 - 2 * luma_flip
    c = contrast[:, None, None]
    linear = c * (l[:, None, None] * P + (saturation * hue.cos())[:, None, None] * Q
                  + (saturation * hue.sin())[:, None, None] * K)  # [N, 3, 3]
    offset = (contrast * l * brightness)[:, None].expand(-1, 3)   # [N, 3]
    bottom = torch.zeros(len(l), 1, 4, device=v.device)
    bottom[:, :, 3] = 1
    return torch.cat([torch.cat([linear, offset[:, :, None]], dim=2), bottom], dim=1)  # [N, 4, 4]


def recolour(images: torch.Tensor, matrices: torch.Tensor) -> torch.Tensor:
    """images [N, 3, H, W] with each pixel's RGB mapped by its image's matrices [N, 4, 4] (homogeneous)."""
    matrices = matrices.to(images.dtype)
    return torch.einsum("nij,njhw->nihw", matrices[:, :3, :3], images) + matrices[:, :3, 3, None, None]


class AdaptiveProbability:
    """ADA's p and its controller.

    `observe(real_logits)` after each discriminator step adds sign(D(augmented real)) to a running sum
    kept on the logits' device (no host synchronisation); `adjust(step, batch)` after step number `step`
    (counted from 1) does, every `interval` steps: r_t = the mean of those signs, p += sign(r_t - target)
    * batch * interval / (kimg * 1000), clamped to [0, 1], and starts a new sum. The paper's settings:
    target 0.6, interval 4, kimg 500.
    """

    def __init__(self, p: float = 0.0, target: float = 0.6, interval: int = 4, kimg: float = 500.0,
                 signs_sum: float = 0.0, signs_count: int = 0, last_r_t: float | None = None):
        self.p, self.target, self.interval, self.kimg = float(p), target, interval, kimg
        self.signs_sum, self.signs_count, self.last_r_t = signs_sum, signs_count, last_r_t

    def observe(self, real_logits: torch.Tensor) -> None:
        self.signs_sum = self.signs_sum + real_logits.detach().float().sign().sum()
        self.signs_count += real_logits.numel()

    def adjust(self, step: int, batch: int) -> None:
        if step % self.interval or not self.signs_count:
            return
        r_t = float(self.signs_sum) / self.signs_count
        change = math.copysign(batch * self.interval / (self.kimg * 1000), r_t - self.target) if r_t != self.target else 0.0
        self.p = min(1.0, max(0.0, self.p + change))
        self.signs_sum, self.signs_count, self.last_r_t = 0.0, 0, r_t

    def state(self) -> dict:
        """What a saved training state keeps: p, the running sum of signs and its count, the last r_t."""
        return {"p": self.p, "signs_sum": float(self.signs_sum), "signs_count": self.signs_count,
                "last_r_t": self.last_r_t}
