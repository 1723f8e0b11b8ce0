"""The random draws of the attacks: orthogonal and invertible maps and scales (float64), permutations."""

import torch

def random_orthogonal(n: int, generator: torch.Generator) -> torch.Tensor:
    """A Haar-random n x n orthogonal matrix (QR of a Gaussian, signs fixed), float64."""
    q, r = torch.linalg.qr(torch.randn(n, n, generator=generator, dtype=torch.float64))
    return q * torch.sign(torch.diagonal(r))


def orthogonal_fixing_ones(n: int, generator: torch.Generator) -> torch.Tensor:
    """A random orthogonal T with T·1 = 1 (commutes with LayerNorm's mean removal), float64."""
    basis = torch.cat([torch.ones(n, 1, dtype=torch.float64),
                       torch.randn(n, n - 1, generator=generator, dtype=torch.float64)], 1)
    basis, _ = torch.linalg.qr(basis)
    basis[:, 0] = basis[:, 0].abs()
    inner = torch.eye(n, dtype=torch.float64)
    inner[1:, 1:] = random_orthogonal(n - 1, generator)
    return basis @ inner @ basis.T


def random_scales(n: int, generator: torch.Generator, signed=True, spread=1.0) -> torch.Tensor:
    """n factors exp(U(-spread, spread)), each with a random sign when `signed`, float64."""
    scales = torch.exp((torch.rand(n, generator=generator, dtype=torch.float64) * 2 - 1) * spread)
    if signed:
        scales = scales * (torch.randint(0, 2, (n,), generator=generator) * 2 - 1)
    return scales


def random_invertible(n: int, generator: torch.Generator) -> torch.Tensor:
    """A well-conditioned random invertible matrix: orthogonal · positive diagonal (0.37..2.7) · orthogonal."""
    return random_orthogonal(n, generator) @ torch.diag(random_scales(n, generator, signed=False)) @ \
        random_orthogonal(n, generator)


def random_permutation(n: int, generator: torch.Generator) -> torch.Tensor:
    """A random permutation of range(n) [n], int64."""
    return torch.randperm(n, generator=generator)


def in_float64(fn):
    """Run fn on a float64 copy and return float32."""
    return lambda x: fn(x.double()).float()
