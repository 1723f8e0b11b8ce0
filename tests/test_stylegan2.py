"""The StyleGAN2 generator: shapes, determinism, truncation, NVIDIA's names, and its ops against other ways
of computing the same thing. (The comparison with NVIDIA's own code is done outside the test suite; see
docs/GENERATOR.md.)"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from stylegan2.networks import Generator
from stylegan2.ops import fir_filter_2d, modulated_conv2d, upsample_2x

TINY = dict(z_dim=32, c_dim=0, w_dim=24, img_resolution=16, img_channels=3,
            mapping_kwargs=dict(num_layers=3), synthesis_kwargs=dict(channel_base=128, channel_max=16, conv_clamp=256))


def tiny_generator(seed=0, **overrides) -> Generator:
    """A tiny generator whose zero-initialized tensors (biases, noise strengths, w_avg) are made random too."""
    torch.manual_seed(seed)
    G = Generator(**{**TINY, **overrides}).eval()
    with torch.no_grad():
        for name, t in G.state_dict().items():
            if name.endswith(("bias", "noise_strength", "w_avg")):
                t.copy_(torch.randn_like(t) * 0.5)
    return G


def test_output_shape_and_range_of_num_ws():
    G = tiny_generator()
    img = G(torch.randn(5, 32))
    assert img.shape == (5, 3, 16, 16) and img.dtype == torch.float32
    # NVIDIA: two ws per block (one for 4x4) plus the last toRGB: 2 * log2(R) - 2.
    assert G.num_ws == 2 * 4 - 2


def test_const_noise_is_deterministic_and_random_noise_is_not():
    G = tiny_generator()
    z = torch.randn(3, 32)
    assert torch.equal(G(z, noise_mode="const"), G(z, noise_mode="const"))
    assert not torch.equal(G(z, noise_mode="random"), G(z, noise_mode="random"))
    assert not torch.allclose(G(z, noise_mode="const"), G(z, noise_mode="none"))
    # Each sample depends only on its own z.
    assert torch.allclose(G(z[1:2]), G(z)[1:2], atol=1e-5)


def test_psi_zero_gives_the_image_of_w_avg_for_every_z():
    G = tiny_generator()
    images = G(torch.randn(4, 32), truncation_psi=0)
    w_avg_image = G.synthesis(G.mapping.w_avg.reshape(1, 1, -1).repeat(1, G.num_ws, 1))
    assert torch.allclose(images, w_avg_image.expand_as(images), atol=1e-5)
    assert images.std(dim=0).max() < 1e-5


def test_truncation_cutoff_only_moves_the_first_ws():
    G = tiny_generator()
    z = torch.randn(2, 32)
    free = G.mapping(z)
    cut = G.mapping(z, truncation_psi=0.3, truncation_cutoff=2)
    expected_head = G.mapping.w_avg + 0.3 * (free[:, :2] - G.mapping.w_avg)
    assert torch.allclose(cut[:, :2], expected_head, atol=1e-6)
    assert torch.equal(cut[:, 2:], free[:, 2:])


def nvidia_state_dict_names(img_resolution, num_mapping_layers):
    """The tensor names of NVIDIA's G_ema.state_dict() for an unconditional 'skip' generator, as their
    networks.py registers them (parameters, then buffers, then sub-modules, synthesis before mapping)."""
    names = []
    resolutions = [2 ** i for i in range(2, int(np.log2(img_resolution)) + 1)]
    layer = lambda p: [f"{p}.weight", f"{p}.noise_strength", f"{p}.bias", f"{p}.resample_filter",  # noqa: E731
                       f"{p}.noise_const", f"{p}.affine.weight", f"{p}.affine.bias"]
    for res in resolutions:
        b = f"synthesis.b{res}"
        names += ([f"{b}.const"] if res == 4 else []) + [f"{b}.resample_filter"]
        names += (layer(f"{b}.conv0") if res > 4 else []) + layer(f"{b}.conv1")
        names += [f"{b}.torgb.weight", f"{b}.torgb.bias", f"{b}.torgb.affine.weight", f"{b}.torgb.affine.bias"]
    names.append("mapping.w_avg")
    for i in range(num_mapping_layers):
        names += [f"mapping.fc{i}.weight", f"mapping.fc{i}.bias"]
    return names


def test_state_dict_names_match_nvidia():
    G = tiny_generator()
    assert list(G.state_dict()) == nvidia_state_dict_names(16, 3)
    # The filter buffer is NVIDIA's setup_filter([1, 3, 3, 1]): the normalized outer product.
    assert torch.allclose(G.synthesis.b8.resample_filter, torch.tensor([1., 3, 3, 1]).outer(torch.tensor([1., 3, 3, 1])) / 64)


def test_conditional_generator_has_an_embedding():
    G = tiny_generator(c_dim=5)
    assert "mapping.embed.weight" in G.state_dict()
    img = G(torch.randn(2, 32), torch.eye(5)[:2])
    assert img.shape == (2, 3, 16, 16)


def test_upsample_matches_the_upfirdn_definition():
    """Zero-insertion by 2, zero padding (2 before, 1 after), 4x4 FIR convolution with gain 4, by loops."""
    x = torch.randn(1, 2, 3, 3)
    f = fir_filter_2d([1, 3, 3, 1])
    out = upsample_2x(x, f)
    z = np.zeros((2, 6 + 3, 6 + 3))
    z[:, 2:8:2, 2:8:2] = x[0].numpy()
    expected = np.zeros((2, 6, 6))
    for oy in range(6):
        for ox in range(6):
            expected[:, oy, ox] = 4 * (z[:, oy:oy + 4, ox:ox + 4] * f.numpy()[::-1, ::-1]).sum(axis=(1, 2))
    assert np.allclose(out[0].numpy(), expected, atol=1e-6)


def per_sample_weights_conv(x, weight, styles, demodulate):
    """The fused form: build each sample's modulated (and demodulated) weight explicitly, convolve per sample."""
    outs = []
    for xi, si in zip(x, styles):
        w = weight * si.reshape(1, -1, 1, 1)
        if demodulate:
            w = w / (w.square().sum(dim=[1, 2, 3], keepdim=True) + 1e-8).sqrt()
        outs.append(F.conv2d(xi[None], w, padding=weight.shape[-1] // 2))
    return torch.cat(outs)


@pytest.mark.parametrize("demodulate", [True, False])
def test_modulated_conv_equals_per_sample_weights(demodulate):
    x, weight, styles = torch.randn(3, 6, 5, 5), torch.randn(4, 6, 3, 3), torch.randn(3, 6)
    ours = modulated_conv2d(x, weight, styles, demodulate=demodulate)
    assert torch.allclose(ours, per_sample_weights_conv(x, weight, styles, demodulate), atol=1e-5)


def test_demodulation_cancels_a_per_sample_style_scale():
    x, weight, styles = torch.randn(2, 6, 5, 5), torch.randn(4, 6, 3, 3), torch.randn(2, 6)
    scaled = styles * torch.tensor([[3.0], [0.2]])
    assert torch.allclose(modulated_conv2d(x, weight, styles), modulated_conv2d(x, weight, scaled), atol=1e-5)


def test_upsampling_conv_is_upsample_then_convolution_away_from_the_border():
    """Transposed conv + FIR filter (NVIDIA's order) equals FIR up-sampling then a true convolution; only
    the outer pixels differ, where up-sampling alone crops what the convolution would still reach."""
    x, weight, styles = torch.randn(2, 5, 6, 6), torch.randn(4, 5, 3, 3), torch.randn(2, 5)
    f = fir_filter_2d([1, 3, 3, 1])
    ours = modulated_conv2d(x, weight, styles, up=True, f=f)
    modulated = upsample_2x(x * styles[:, :, None, None], f)
    other = per_sample_weights_conv(modulated, weight.flip([2, 3]), torch.ones(2, 5), False)
    per_sample_norm = (weight[None] * styles[:, None, :, None, None]).square().sum(dim=[2, 3, 4])
    other = other * (per_sample_norm + 1e-8).rsqrt()[:, :, None, None]
    assert ours.shape == (2, 4, 12, 12)
    assert torch.allclose(ours[..., 2:-2, 2:-2], other[..., 2:-2, 2:-2], atol=1e-5)
