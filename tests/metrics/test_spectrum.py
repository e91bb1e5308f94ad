"""``sctbr.metrics.heads_spectrum``: how many latent directions the cell types' heads use."""

from __future__ import annotations

import numpy as np
import pytest

from sctbr.metrics import heads_spectrum


def _cells(n_used: int, n_latent: int, *, n_groups: int = 8, n_per: int = 400, same_head: bool = False, seed: int = 0):
    """Latents, a target that uses the first ``n_used`` of them with a head per group, and the groups."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n_groups * n_per, n_latent))
    groups = np.repeat(np.arange(n_groups), n_per)
    heads = rng.normal(size=(n_groups, n_used))
    if same_head:
        heads[:] = heads[0]
    y = np.einsum("ij,ij->i", z[:, :n_used], heads[groups]) + 0.1 * rng.normal(size=len(z))
    return z, y, groups


def test_basis_invariant():
    z, y, groups = _cells(3, 4)
    mixed = z @ np.random.default_rng(1).normal(size=(4, 4)) + 5.0
    np.testing.assert_allclose(heads_spectrum(mixed, y, groups), heads_spectrum(z, y, groups), atol=1e-8)


def test_surplus_latents_are_unused():
    z, y, groups = _cells(3, 5)
    spectrum, noise = heads_spectrum(z @ np.random.default_rng(2).normal(size=(5, 5)), y, groups, return_noise=True)
    assert spectrum[0] == pytest.approx(1.0)
    assert np.all(np.diff(spectrum) <= 0)
    assert spectrum[2] > 0.1 > noise
    assert np.all(spectrum[3:] < noise)


def test_noise_level_follows_the_noise():
    # more noise in the target, or fewer cells: a higher noise level, and the unused directions stay below it
    for scale, n_per in ((0.1, 400), (1.0, 400), (1.0, 50)):
        z, y, groups = _cells(3, 5, n_per=n_per)
        y = y + scale * np.random.default_rng(4).normal(size=len(y))
        spectrum, noise = heads_spectrum(z, y, groups, return_noise=True)
        assert np.all(spectrum[3:] < noise)
        assert (scale, n_per) == (0.1, 400) or noise > 0.02


def test_all_used():
    z, y, groups = _cells(5, 5)
    spectrum, noise = heads_spectrum(z, y, groups, return_noise=True)
    assert spectrum.min() > 0.05 > noise


def test_no_changes_use_one_direction():
    # every group with the same head (k = 0): the target depends on one direction of the latents only
    z, y, groups = _cells(4, 4, same_head=True)
    spectrum, noise = heads_spectrum(z, y, groups, return_noise=True)
    assert np.all(spectrum[1:] < noise)


def test_several_targets_stack_their_heads():
    z, y1, groups = _cells(2, 4)
    rng = np.random.default_rng(3)
    y2 = z[:, 2] * rng.normal(size=8)[groups]  # a second target that uses a third latent
    for y, used in ((y1, 2), (np.c_[y1, y2], 3)):
        spectrum, noise = heads_spectrum(z, y, groups, return_noise=True)
        assert np.sum(spectrum > noise) == used


def test_small_groups_are_skipped():
    z, y, groups = _cells(2, 3)
    groups = groups.copy()
    groups[:3] = 99  # a group of 3 cells cannot give a head of 3 latents (its least squares would be noise)
    # only the whitening sees those 3 cells
    np.testing.assert_allclose(heads_spectrum(z, y, groups), heads_spectrum(z[3:], y[3:], groups[3:]), atol=1e-3)
    assert np.all(heads_spectrum(z[:3], y[:3], groups[:3]) == 0)


def test_noise_cells_give_the_noise_level():
    # cells whose residuals are small (as an encoder's training cells) understate the noise; other cells do not
    z, y, groups = _cells(3, 5)
    rng = np.random.default_rng(5)
    held = rng.random(len(y)) < 0.3
    noisy = y + np.where(held, 1.0, 0.0) * rng.normal(size=len(y))
    _, low = heads_spectrum(z, noisy, groups, return_noise=True, noise_cells=~held)
    _, high = heads_spectrum(z, noisy, groups, return_noise=True, noise_cells=held)
    _, everything = heads_spectrum(z, noisy, groups, return_noise=True)
    assert low < everything < high


def test_bad_input_is_named():
    z, y, groups = _cells(2, 3)
    with pytest.raises(ValueError, match="one row per cell"):
        heads_spectrum(z, y[:-1], groups)
    with pytest.raises(ValueError, match="noise_cells"):
        heads_spectrum(z, y, groups, noise_cells=np.ones(3, dtype=bool))
    bad = z.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="finite"):
        heads_spectrum(bad, y, groups)
