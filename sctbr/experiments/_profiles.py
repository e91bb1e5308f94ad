"""Scale settings of the experiments: ``quick`` (CI), ``local`` (a 2-core machine) and ``paper`` (a GPU)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

#: Profile fields that hold tuples; :meth:`Profile.replace` also takes a single value or any sequence for them.
_TUPLE_FIELDS = ("methods", "hidden", "lams", "ks", "rates", "latent_dims", "semi_ks", "semi_lams", "transfer_ks")


@dataclass(frozen=True)
class Profile:
    """The scale knobs of every experiment; one instance per profile in :data:`PROFILES`.

    Every experiment function takes a profile (its name or an instance) and keyword overrides of these fields,
    e.g. ``sctbr.experiments.sparsity_sweep("quick", ks=(0, 1), n_repeats=1)``. Fields an experiment does not use
    are ignored by it.

    Parameters
    ----------
    name
        Name of the profile (recorded in the results).
    n_repeats
        Repetitions of every setting; repetition ``r`` uses seed ``random_state + r`` for the data and the fit.
    methods
        Methods fitted in every setting: ``"tbr"`` (:func:`sctbr.tl.tbr` with its default recipe), ``"tbr_plain"``
        (the paper's plain recipe: penalised training from the start, ``refine=False, fit_fraction=0``) and
        ``"baseline"`` (:func:`sctbr.tl.baseline`).
    max_epochs
        Epochs of every simulation fit; ``None`` uses :func:`sctbr.tl.tbr`'s heuristic (about 20 000 steps).
    hidden
        Hidden layer widths of the encoder (the paper's ``(256, 64)``).
    lams
        Grid of sparsity weights for the TBR fits on simulations. ``None`` uses :func:`sctbr.tl.tbr`'s default.
        With several values the one with the lowest prediction MSE on the validation cells is kept (never the
        test cells).
    n_threads
        CPU threads of torch during the fits (restored afterwards); ``None`` leaves torch's setting. One thread is
        much faster for these small networks on a few shared cores (torch's threads otherwise wait on each other:
        10x slower fits were measured on a loaded 2-core machine).
    depth
        Depth of the balanced binary tree of the simulations (observed at every non-root node); ``leaves_only``
        goes one level deeper.
    n_obs_per_env
        Cells per observed environment in the simulations.
    n_inputs, n_latent
        Inputs and true (and fitted) latents of the simulations.
    ks
        Changes per arc swept by ``sparsity_sweep``, ``leaves_only`` and ``linear_psi``; ``None``: 0 to
        ``n_latent``.
    rates
        Bernoulli rates of a change per arc and latent swept by ``bernoulli_changes``.
    n_latent_true
        True number of latents in ``latent_dimension``.
    latent_dims
        Fitted numbers of latents in ``latent_dimension``.
    dims_max_epochs
        Epochs of the ``latent_dimension`` fits (``None``: ``max_epochs``). A fit with exactly the true number of
        latents needs longer to converge than one with spare latents; short fits blur the plateau.
    noise_z, noise_y
        Noise of the latents and of the phenotype in the simulations and (``noise_y``) the semi-synthetic data.
    max_cells
        Cap on cells per cell type in the semi-synthetic experiments (the paper's preprocessing).
    min_cells
        Cell types with fewer cells are dropped in the semi-synthetic experiments.
    semi_ks
        Changes per arc swept by ``semisynthetic_sweep``; ``None``: 0 to the number of latent genes.
    semi_max_epochs
        Epochs of every semi-synthetic fit (``None``: the heuristic).
    semi_n_repeats
        Repetitions of the semi-synthetic experiments (their fits are cheaper and noisier than the simulations');
        ``None``: ``n_repeats``.
    semi_lams
        Grid of sparsity weights on the semi-synthetic data (the paper tuned ``{0, 1e-1, 1e-2, 1e-3, 1e-4}`` on a
        validation split); ``None`` uses the default.
    transfer_ks
        Changes per arc of the training tree in ``transfer``.
    n_held_out
        Cell types held out of training in every repetition of ``transfer``.
    min_neighbour_cells
        A cell type is held out only if its closest observed cell type has at least this many cells.
    subcluster_resolution, min_subcluster_cells
        Louvain resolution and smallest sub-cluster of :func:`sctbr.pp.subclusters` for
        ``semisynthetic_sweep(environments="subclusters")`` (on PBMC3k: about 30 sub-clusters of 13-150 cells).
    n_latent_genes, max_latent_corr, min_regulators, min_fraction, min_latent_r2
        The rule of :func:`sctbr.datasets.weakly_correlated_genes` for
        ``semisynthetic_sweep(latents="weakly_correlated")``: number of genes, cap on the absolute correlation
        of every pair after MAGIC, fewest regulators in the data, smallest fraction of cells detecting the gene,
        smallest cross-validated R² of the gene on the inputs, its regulators and the kept genes' (``None``: no
        such rule).

    Examples
    --------
    >>> from sctbr.experiments import PROFILES
    >>> PROFILES["quick"].depth
    3
    >>> PROFILES["quick"].replace(depth=2).depth
    2
    """

    name: str
    n_repeats: int
    methods: tuple[str, ...] = ("tbr", "baseline")
    max_epochs: int | None = None
    hidden: tuple[int, ...] = (256, 64)
    lams: tuple[float, ...] | None = None
    n_threads: int | None = 1
    # simulations
    depth: int = 4
    n_obs_per_env: int = 300
    n_inputs: int = 10
    n_latent: int = 5
    ks: tuple[int, ...] | None = None
    rates: tuple[float, ...] = (0.1, 0.2, 0.4, 0.6, 0.8)
    n_latent_true: int = 3
    latent_dims: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 7, 8)
    dims_max_epochs: int | None = None
    noise_z: float = 0.1
    noise_y: float = 0.1
    # semi-synthetic (real cells)
    max_cells: int = 200
    min_cells: int = 10
    semi_ks: tuple[int, ...] | None = None
    semi_max_epochs: int | None = 60
    semi_n_repeats: int | None = None
    semi_lams: tuple[float, ...] | None = None
    transfer_ks: tuple[int, ...] = (1, 2, 3)
    n_held_out: int = 2
    min_neighbour_cells: int = 100
    subcluster_resolution: float = 0.7
    min_subcluster_cells: int = 30
    n_latent_genes: int = 5
    max_latent_corr: float = 0.4
    min_regulators: int = 3
    min_fraction: float = 0.1
    min_latent_r2: float | None = 0.8

    def replace(self, **overrides) -> Profile:
        """A copy with some fields changed; unknown names raise a ``TypeError`` that lists the fields.

        Tuple fields (``ks``, ``methods``, ...) also take a single value: ``ks=1`` means ``ks=(1,)``.

        Parameters
        ----------
        **overrides
            New values of fields of :class:`Profile`.

        Returns
        -------
        The new profile.
        """
        fields = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(overrides) - fields)
        if unknown:
            raise TypeError(f"Unknown profile setting(s) {unknown}; the settings are: {sorted(fields)}.")
        for key in _TUPLE_FIELDS:
            value = overrides.get(key)
            if value is not None:
                overrides[key] = (value,) if isinstance(value, (int, float, str)) else tuple(value)
        return dataclasses.replace(self, **overrides)


#: ``quick``: every experiment in one to two minutes on 2 CPU cores (``all``: about 7.5 minutes; CI): a depth-3
#: tree (14 environments) with 150 cells each, 3 latents, 100 epochs (200 for ``latent_dimension``), 3 repetitions
#: (5 on real cells, PBMC3k capped at 200 cells per type). Noisy, but TBR is ahead of the baseline at k = 1.
QUICK = Profile(
    name="quick",
    n_repeats=3,
    max_epochs=100,
    depth=3,
    n_obs_per_env=150,
    n_inputs=6,
    n_latent=3,
    ks=(0, 1, 2, 3),
    rates=(0.2, 0.5),
    n_latent_true=2,
    latent_dims=(1, 2, 3, 4),
    dims_max_epochs=200,
    max_cells=200,
    semi_ks=(0, 1, 2),
    semi_max_epochs=60,
    semi_n_repeats=5,
    transfer_ks=(1, 2),
    n_held_out=1,
    min_neighbour_cells=100,
)

#: ``local``: the shape of the paper's figures on a 2-core machine, each experiment in under an hour: a balanced
#: tree of depth 4 (30 environments; 32 leaves one level deeper for ``leaves_only``), 300 cells per environment
#: (9000 cells), 5 latents, the default number of epochs (300), 5 repetitions; PBMC3k capped at 200 cells per type
#: with 10 repetitions. Measured on 2 cores: a TBR fit takes about 25 s and a baseline fit about 20 s, so
#: ``sparsity_sweep`` (6 k x 5 repetitions x 2 methods) takes about 25 minutes.
LOCAL = Profile(
    name="local",
    n_repeats=5,
    max_epochs=None,
    depth=4,
    n_obs_per_env=300,
    n_inputs=10,
    n_latent=5,
    ks=None,
    rates=(0.1, 0.2, 0.4, 0.6),
    n_latent_true=3,
    latent_dims=(1, 2, 3, 4, 5, 6),
    max_cells=200,
    semi_ks=(0, 1, 2, 3, 5),
    semi_max_epochs=None,
    semi_n_repeats=10,
    transfer_ks=(1, 2, 3),
    n_held_out=2,
)

#: ``paper``: the paper's scale (128 leaves: a depth-7 tree, 3000 cells per environment, 10 repetitions, the full
#: sweeps, the plain recipe next to the default one, and the paper's grid of sparsity weights on real cells).
#: Meant for a GPU (``accelerator="gpu"``); the paper's lost d_x and d_z are taken as 10 and 5.
PAPER = Profile(
    name="paper",
    n_repeats=10,
    methods=("tbr", "tbr_plain", "baseline"),
    max_epochs=None,
    n_threads=None,
    depth=7,
    n_obs_per_env=3000,
    n_inputs=10,
    n_latent=5,
    ks=None,
    rates=(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9),
    n_latent_true=4,
    latent_dims=(1, 2, 3, 4, 5, 6, 7, 8),
    max_cells=3000,
    semi_ks=None,
    semi_max_epochs=None,
    semi_lams=(0.0, 1e-1, 1e-2, 1e-3, 1e-4),
    transfer_ks=(1, 2, 3, 4),
    n_held_out=2,
    min_neighbour_cells=300,
)

#: A test-only scale (a few seconds per experiment); not listed in :data:`PROFILES`.
_TEST = Profile(
    name="test",
    n_repeats=1,
    max_epochs=3,
    hidden=(16,),
    depth=2,
    n_obs_per_env=40,
    n_inputs=4,
    n_latent=2,
    ks=(0, 1),
    rates=(0.5,),
    n_latent_true=2,
    latent_dims=(1, 2),
    max_cells=30,
    semi_ks=(0, 1),
    semi_max_epochs=3,
    transfer_ks=(1,),
    n_held_out=1,
    min_neighbour_cells=20,
)

#: The profiles by name: ``"quick"``, ``"local"`` and ``"paper"`` (see :class:`Profile` for the knobs).
PROFILES: dict[str, Profile] = {"quick": QUICK, "local": LOCAL, "paper": PAPER}


def get_profile(profile: str | Profile = "quick", **overrides) -> Profile:
    """Resolve a profile name (or instance) and apply overrides."""
    if isinstance(profile, Profile):
        base = profile
    elif profile == _TEST.name:
        base = _TEST
    elif profile in PROFILES:
        base = PROFILES[profile]
    else:
        raise ValueError(f"Unknown profile {profile!r}; choose one of {list(PROFILES)} or pass a Profile.")
    return base.replace(**overrides) if overrides else base
