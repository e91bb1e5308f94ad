"""Transfer to environments without training cells: nearest-environment prediction and few-shot adaptation.

:class:`TransferMixin` is inherited by :class:`sctbr.model.TBR`. It adds

* :meth:`TBR.predict` with ``environment=`` (and ``parent=`` for a node that is not in the tree): every cell is
  predicted with the head of the closest environment that has a trained head (the paper's rule, Fig. 4b), or with
  the head of a given node;
* :meth:`TBR.adapt`: few-shot adaptation to a new environment, the new arc's sparse change ``Delta`` with every
  other weight frozen: a small convex problem solved exactly (:mod:`sctbr.model._sparse_arc`);
* :meth:`TBR.nearest_observed`: the node whose head the nearest-environment rule uses.

Adapted heads live in ``model.adapted_heads_``, a plain dict that scvi-tools' ``save``/``load`` keep (every model
attribute whose name ends in ``_`` is saved).
"""

from __future__ import annotations

import hashlib
import warnings
from typing import Literal

import numpy as np
import pandas as pd
import torch
from anndata import AnnData

from sctbr._constants import ENV_KEY, Y_KEY
from sctbr._tree import EnvironmentTree, UnknownNodeError, _fmt_names
from sctbr.model._backed import BackedRows, is_backed_matrix
from sctbr.model._data import prepare_arrays
from sctbr.model._heads import encode, node_heads
from sctbr.model._sparse_arc import Problem, cv_lambda, sigmoid, target_matrix

#: Significance of the universal ("no change") threshold used for ``lam=None`` when there are too few cells for CV.
UNIVERSAL_ALPHA = 0.05
#: Cells of the training AnnData used to estimate the model's residual noise (deterministic subsample).
NOISE_CELLS = 20_000

Rule = Literal["nearest", "own"]


class TransferMixin:
    """Prediction for environments without training cells and few-shot adaptation (mixed into :class:`TBR`)."""

    # -- tree, heads ------------------------------------------------------------------------------------------
    def _adapted(self) -> dict:
        heads = getattr(self, "adapted_heads_", None)
        if heads is None:
            heads = {}
            self.adapted_heads_ = heads
        return heads

    def _extended_tree(self, without: str | None = None) -> EnvironmentTree:
        """The model's tree plus the new nodes added by :meth:`adapt` (in the order they were added)."""
        tree = self.tree
        for name, entry in self._adapted().items():
            if name != without and name not in tree and entry["parent"] in tree:
                tree = tree.add_node(name, entry["parent"])
        return tree

    def _n_targets(self) -> int:
        return int(getattr(self.module, "n_targets", 1))

    def _logistic_targets(self) -> np.ndarray:
        losses = getattr(self.module, "losses", None) or ("mse",) * self._n_targets()
        return np.array([loss == "logistic" for loss in losses], dtype=bool)

    def _target_names(self) -> list[str]:
        target = self.registry_["setup_args"]["target"]
        return [target] if isinstance(target, str) else [str(t) for t in target]

    def _scales(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Shared intercept, target mean and standard deviation (one value per target)."""
        m = self.module
        with torch.no_grad():
            bias = m.bias.detach().cpu().numpy().astype(np.float64).reshape(-1)
            mean = m.y_mean.detach().cpu().numpy().astype(np.float64).reshape(-1)
            std = m.y_std.detach().cpu().numpy().astype(np.float64).reshape(-1)
        t = self._n_targets()
        return np.broadcast_to(bias, (t,)), np.broadcast_to(mean, (t,)), np.broadcast_to(std, (t,))

    def _tree_heads(self) -> np.ndarray:
        """Standardised heads of every node of the model's tree, shape ``(nodes, targets, latents)``."""
        return node_heads(self.module, self.tree)

    def _node_head(self, node: str) -> np.ndarray:
        """Standardised head ``(targets, latents)`` of a tree node or an adapted environment."""
        adapted = self._adapted()
        if node in adapted:
            self._check_fresh(node)
            return np.asarray(adapted[node]["head"], dtype=np.float64)
        return self._tree_heads()[self.tree.node_index([node])[0]]

    def _fingerprint(self) -> str:
        """Hash of the weights that the latents and the intercept depend on (detects retraining after adapt)."""
        m = self.module
        parts = [*m.encoder.state_dict().values(), m.standardize.running_mean, m.standardize.running_var]
        parts += [m.bias, m.y_mean, m.y_std]
        digest = hashlib.sha256()
        for t in parts:
            digest.update(t.detach().cpu().numpy().astype(np.float32).tobytes())
        return digest.hexdigest()

    def _check_fresh(self, node: str) -> None:
        if self._adapted()[node].get("fingerprint") != self._fingerprint():
            raise RuntimeError(
                f"The adapted head of {node!r} was fitted to latents of an earlier state of this model (it was "
                f"trained or changed since). Call model.adapt(adata, {node!r}, ...) again."
            )

    def _locate(self, environment, parent, *, what: str = "environment", without_self: bool = False):
        """Check ``environment``/``parent`` and return ``(tree containing environment, its parent)``."""
        if not isinstance(environment, str) or not environment:
            raise TypeError(f"`{what}` must be a non-empty str (a node name), got {environment!r}.")
        environment = str(environment)
        tree = self._extended_tree(without=environment if without_self else None)
        if parent is not None and not isinstance(parent, str):
            raise TypeError(f"`parent` must be a str (a node of the tree), got {parent!r}.")
        if environment in tree:
            current = tree.parent(environment)
            if parent is not None and parent != current:
                raise ValueError(
                    f"{what.capitalize()} {environment!r} is already a node of the tree, with parent {current!r}, not "
                    f"{parent!r}. Drop `parent`, or give the new environment a name that is not in the tree."
                )
            return tree, current
        if parent is None:
            raise UnknownNodeError(
                f"{what.capitalize()} {environment!r} is not a node of the model's tree; pass parent=<node> to say "
                f"where it attaches (nodes: {_fmt_names(tree.nodes)})."
            )
        if parent not in tree:
            raise UnknownNodeError(
                f"`parent` {parent!r} is not a node of the model's tree (nodes: {_fmt_names(tree.nodes)}); attach "
                f"{environment!r} to one of them."
            )
        return tree.add_node(environment, parent), parent

    def _with_heads(self, without: str | None = None) -> list[str]:
        """Environments with a head fitted to cells: the training environments, then the adapted ones."""
        return list(self.environments_) + [n for n in self._adapted() if n != without]

    def _resolve_head(self, environment, parent=None, rule: Rule = "nearest") -> tuple[str, np.ndarray]:
        """The node whose head predicts ``environment`` under ``rule``, and that head (standardised)."""
        if rule not in ("nearest", "own"):
            raise ValueError(f"`rule` must be 'nearest' or 'own', got {rule!r}.")
        tree, par = self._locate(environment, parent)
        if environment in self._adapted():
            return environment, self._node_head(environment)
        if rule == "nearest":
            source = tree.closest(environment, self._with_heads())
        else:
            # its own head in the tree; a node that is not in the model's tree inherits its parent's (no change)
            source = environment if environment in self.tree else par
        return source, self._node_head(source)

    def nearest_observed(self, environment: str, parent: str | None = None) -> str:
        """The environment whose head :meth:`predict` uses for ``environment`` (the nearest-environment rule).

        The closest node, by the number of arcs on the tree path, among the training environments and the
        environments added by :meth:`adapt`; an observed or adapted ``environment`` is its own nearest. Ties are
        broken in favour of the node that comes first in the tree's breadth-first order, which prefers an
        ancestor over any other node at the same distance, then shallower nodes, then the tree's child order.

        Parameters
        ----------
        environment
            A node of the model's tree, or a new node (then give ``parent``).
        parent
            Where a new node attaches.

        Returns
        -------
        The name of the node whose head is used.

        Examples
        --------
        >>> import sctbr
        >>> adata = sctbr.datasets.simulate(depth=2, n_obs_per_env=50, random_state=0)
        >>> train = adata[adata.obs["environment"] != "n11"].copy()
        >>> sctbr.model.TBR.setup_anndata(train, target="y", groupby="environment")
        >>> model = sctbr.model.TBR(train, tree=adata.uns["environment_tree"], n_latent=2)
        >>> model.nearest_observed("n11")
        'n1'
        >>> model.nearest_observed("new type", parent="n00")
        'n00'
        """
        self._locate(environment, parent)
        if environment in self._adapted():
            return environment
        return self._resolve_head(environment, parent, "nearest")[0]

    # -- inputs -> latents ----------------------------------------------------------------------------------
    def _input_names(self) -> list[str]:
        var_names = self.registry_["setup_args"].get("var_names")
        return list(var_names) if var_names is not None else [str(v) for v in self.adata.var_names]

    def _encode(self, adata: AnnData, batch_size: int = 8192, rows: np.ndarray | None = None) -> np.ndarray:
        """Latents of ``adata``'s cells, read without registering (nor writing anything into) the AnnData."""
        if not isinstance(adata, AnnData):
            raise TypeError(f"Expected an AnnData, got {type(adata).__name__}.")
        if batch_size < 1:
            raise ValueError(f"`batch_size` must be positive, got {batch_size}.")
        names = self._input_names()
        if not adata.var_names.is_unique:
            raise ValueError("adata.var_names are not unique; run adata.var_names_make_unique() first.")
        cols = adata.var_names.get_indexer(names)
        if (cols < 0).any():
            missing = [n for n, c in zip(names, cols, strict=True) if c < 0]
            raise KeyError(
                f"{len(missing)} of the model's {len(names)} inputs are not in adata.var_names: "
                f"{_fmt_names(missing)}. Give the new cells the same inputs (genes) as the training data."
            )
        identity = len(cols) == adata.n_vars and np.array_equal(cols, np.arange(adata.n_vars))
        layer = self.registry_["setup_args"].get("layer")
        if layer is not None and layer not in adata.layers:
            raise KeyError(f"The model reads inputs from layer {layer!r}, which this AnnData lacks.")
        x = adata.layers[layer] if layer is not None else adata.X
        if x is None:
            raise ValueError("The AnnData has no input matrix (adata.X is None).")
        if rows is not None:  # only these cells: read them first
            if is_backed_matrix(x):
                x, identity = BackedRows(x, None if identity else cols).take(rows), True
            else:
                x = x[np.asarray(rows)]
        data = prepare_arrays(x, None, np.zeros(x.shape[0]), columns=None if identity else cols, stream=True)
        return encode(self.module, data, batch_size=batch_size).astype(np.float64)

    def _apply_head(self, z: np.ndarray, head: np.ndarray) -> np.ndarray:
        """Prediction on the target's original scale (probabilities for a binary target)."""
        bias, mean, std = self._scales()
        eta = z @ head.T + bias[None, :]
        out = np.where(self._logistic_targets()[None, :], sigmoid(eta), eta * std + mean)
        out = out.astype(np.float32)
        return out[:, 0] if out.shape[1] == 1 else out

    # -- used by TBR.predict / get_latent_representation ------------------------------------------------------
    def _unseen_environments(self, adata: AnnData | None) -> list[str]:
        """Environments of ``adata``'s cells that the model has no training cells for."""
        if adata is None:
            return []
        groupby = self.registry_["setup_args"].get("groupby")
        if groupby is None or groupby not in adata.obs:
            return []
        labels = pd.unique(adata.obs[groupby].astype(str).to_numpy())
        known = set(self.environments_)
        return [str(v) for v in labels if v not in known]

    def _check_known_environments(self, adata: AnnData | None) -> None:
        unseen = self._unseen_environments(adata)
        if unseen:
            groupby = self.registry_["setup_args"]["groupby"]
            in_tree = [u for u in unseen if u in self._extended_tree()]
            hint = (
                f" {_fmt_names(in_tree)} are nodes of the tree: predict(adata, environment=<node>) uses the nearest "
                "environment's head (or the adapted head)."
                if in_tree
                else ""
            )
            raise ValueError(
                f"adata.obs[{groupby!r}] has {len(unseen)} environment(s) without training cells: "
                f"{_fmt_names(unseen)}. The per-cell heads exist only for {_fmt_names(self.environments_)}. Predict "
                "the cells of a new environment with model.predict(adata_new, environment=<name>, parent=<node of "
                f"the tree>) (nearest observed environment's head), after model.adapt(...) if you have a few "
                f"labelled cells.{hint}"
            )

    def _predict_environment(
        self, adata: AnnData | None, environment: str, parent: str | None, rule: Rule, batch_size: int
    ) -> np.ndarray:
        _, head = self._resolve_head(environment, parent, rule)
        z = self._encode(self.adata if adata is None else adata, batch_size)
        return self._apply_head(z, head)

    # -- few-shot adaptation --------------------------------------------------------------------------------
    def _noise_std(self) -> np.ndarray:
        """Residual standard deviation of the model on (up to 20 000 of) its training cells, standardised units."""
        n = self.adata.n_obs
        rows = np.arange(n) if n <= NOISE_CELLS else np.sort(np.random.default_rng(0).choice(n, NOISE_CELLS, False))
        z = self._encode(self.adata, rows=rows)
        codes = np.asarray(self.adata_manager.get_from_registry(ENV_KEY)).reshape(-1)[rows].astype(int)
        y = np.asarray(self.adata_manager.get_from_registry(Y_KEY), dtype=np.float64).reshape(n, -1)[rows]
        heads = self._tree_heads()[self.tree.node_index(self.environments_)][codes]  # cells x targets x latents
        bias, mean, std = self._scales()
        eta = np.einsum("nd,ntd->nt", z, heads) + bias
        return np.sqrt(np.mean(((y - mean) / std - eta) ** 2, axis=0))

    def adapt(
        self,
        adata: AnnData,
        environment: str,
        *,
        parent: str | None = None,
        target=None,
        lam: float | None = None,
        base: Literal["parent", "nearest"] = "parent",
        refit: bool = True,
        cv_folds: int = 5,
        max_iter: int = 10_000,
        tol: float = 1e-9,
        random_state: int = 0,
    ) -> pd.Series | pd.DataFrame:
        """Few-shot adaptation: fit the sparse change on the arc into a new environment from a few labelled cells.

        The encoder, the latents' standardisation, the shared intercept and every trained head stay frozen. The
        new environment's head is ``w_new = w_base + Delta``, where ``w_base`` is the head of its parent
        (``base="parent"``: the tree model, a sparse change on the new arc) or of its nearest environment with a
        head (``base="nearest"``). ``Delta`` minimises, on the standardised target of the given cells,

        ``mean((y - bias - z @ w_base - z @ Delta)^2) + lam * ||Delta||_1``

        (the model's own objective restricted to the new arc; the logistic loss for a binary target). With the
        latents fixed this is a lasso on ``n_latent`` coefficients, solved exactly by scikit-learn's
        ``Lasso`` (statsmodels' l1-penalised binomial GLM with an offset for a binary target): deterministic, with exact zeros where nothing
        changes. With ``refit=True`` (default) the non-zero entries are then refitted by least squares (the
        relaxed lasso): the l1 penalty picks which latents change, and the refit removes its shrinkage of the
        changes it keeps, which on simulations predicted as well as an unpenalised refit while keeping the
        zeros (see :doc:`/transfer`).

        The adapted head is stored in ``model.adapted_heads_`` (kept by ``save``/``load``) and used by
        ``predict(..., environment=environment)``; adapted environments also count as observed for the
        nearest-environment rule. Adapting the same name again replaces its head. Heads are tied to the model's
        current weights: after retraining, predicting with an adapted head raises an error until it is adapted
        again.

        Parameters
        ----------
        adata
            The labelled cells of the new environment (all of them are taken to belong to ``environment``; their
            ``groupby`` column, if any, is ignored). Same inputs (``var_names``, layer) as the training data.
            Nothing is written into it.
        environment
            Name of the environment: a node of the model's tree without training cells, or a new name (then give
            ``parent``).
        parent
            The node a new environment attaches to (its arc's start). For a node of the tree, its parent (may be
            omitted).
        target
            ``None``: the registered target column(s); a column name of ``adata.obs`` (a list with several
            targets); or an array with one value per cell (cells x targets with several).
        lam
            Weight of the l1 penalty, in the units of the model's ``lam`` (relative to the standardised target's
            variance). ``None`` chooses it. With at least ``4 * cv_folds`` cells: ``cv_folds``-fold
            cross-validation over 25 values log-spaced over three decades below ``lambda_max`` (the smallest value
            that gives ``Delta = 0``), keeping the largest whose CV error is within one standard error of the best
            (the sparsest well-fitting change). With fewer cells: the universal threshold, which keeps
            ``Delta = 0`` with probability 95% when nothing changes,
            ``lam = 2 * sigma * t * sqrt(max_j G_jj / n)``, where ``t = sqrt(2 * log(2 * n_latent / 0.05))``,
            ``G = z'z / n`` and ``sigma`` is the model's residual standard deviation on its training cells (for
            a binary target, ``sigma`` is replaced by ``sqrt(mean(p * (1 - p)))`` at the base head and the
            factor 2 is dropped).
        base
            ``"parent"`` (default) or ``"nearest"``: the head that ``Delta`` changes.
        refit
            Refit the non-zero entries of ``Delta`` without penalty (relaxed lasso; squared-error targets only,
            binary targets keep the penalised solution). Cross-validation then scores each ``lam`` by its refitted
            solution.
        cv_folds
            Folds of the cross-validation (0 or 1: never cross-validate).
        max_iter, tol
            Iteration limit and relative convergence tolerance of the solver.
        random_state
            Seed of the cross-validation folds.

        Returns
        -------
        ``Delta`` in target units per standard deviation of a latent (as :meth:`get_deltas`), exact zeros where
        nothing changed: a :class:`pandas.Series` over the latents named ``"<base>-><environment>"``, or with
        several targets a :class:`pandas.DataFrame` (targets x latents). The fit's details (``lam``, the CV path,
        the number of cells) are in ``model.adapted_heads_[environment]``.

        Examples
        --------
        >>> import sctbr
        >>> adata = sctbr.datasets.simulate(depth=2, n_obs_per_env=100, random_state=0)
        >>> held_out = adata.obs["environment"] == "n11"
        >>> train = adata[~held_out].copy()
        >>> sctbr.model.TBR.setup_anndata(train, target="y", groupby="environment")
        >>> model = sctbr.model.TBR(train, tree=adata.uns["environment_tree"], n_latent=5)
        >>> model.train(max_epochs=50)  # doctest: +SKIP
        >>> new = adata[held_out]
        >>> delta = model.adapt(new[:30], "n11")  # doctest: +SKIP
        >>> y_hat = model.predict(new[30:], environment="n11")  # doctest: +SKIP
        """
        self._check_if_trained(warn=False)
        if not isinstance(adata, AnnData):
            raise TypeError(f"`adata` must be an AnnData with the new environment's cells, got {type(adata).__name__}.")
        if isinstance(environment, str) and environment in self.environments_:
            raise ValueError(
                f"{environment!r} has training cells, so its head was trained with the model; adaptation is for "
                "environments without training cells. Use a new name, or retrain with these cells added."
            )
        previous = self._adapted().get(environment) if isinstance(environment, str) else None
        if parent is None and previous is not None and previous["new_node"]:
            parent = previous["parent"]  # adapting the same new node again
        tree, par = self._locate(environment, parent, without_self=True)
        if par is None:
            raise ValueError(f"{environment!r} is the root of the tree: it has no incoming arc to adapt.")
        if base not in ("parent", "nearest"):
            raise ValueError(f"`base` must be 'parent' or 'nearest', got {base!r}.")
        if lam is not None and (not np.isfinite(lam) or lam < 0):
            raise ValueError(f"`lam` must be a non-negative number or None, got {lam!r}.")
        if not isinstance(cv_folds, (int, np.integer)) or cv_folds < 0:
            raise ValueError(f"`cv_folds` must be a non-negative integer, got {cv_folds!r}.")
        if adata.n_obs < 2:
            raise ValueError(f"Adaptation needs at least 2 labelled cells of {environment!r}, got {adata.n_obs}.")
        y = target_matrix(adata, target, self._target_names(), self._logistic_targets())
        base_node = par if base == "parent" else tree.closest(environment, self._with_heads(without=environment))
        if base_node in self._adapted() and base_node != environment:
            self._check_fresh(base_node)
        w_base = self._node_head(base_node)  # targets x latents
        z = self._encode(adata)
        bias, mean, std = self._scales()
        logistic = self._logistic_targets()
        n, p = z.shape
        rng_seed = int(random_state)
        deltas, lams, paths, sigma = [], [], [], None
        for t in range(self._n_targets()):
            offset = bias[t] + z @ w_base[t]
            response = y[:, t] if logistic[t] else (y[:, t] - mean[t]) / std[t]
            problem = Problem(z, response, offset, bool(logistic[t]), max_iter, tol)
            path = None
            if lam is not None:
                lam_t = float(lam)
            elif cv_folds >= 2 and n >= 4 * cv_folds:
                lam_t, path = cv_lambda(problem, int(cv_folds), np.random.default_rng([rng_seed, t]), refit)
            else:
                crit = np.sqrt(2.0 * np.log(2.0 * p / UNIVERSAL_ALPHA))
                scale = np.sqrt(max(float(np.max(np.mean(z**2, axis=0), initial=0.0)), 0.0) / n)
                if logistic[t]:
                    pi = sigmoid(offset)
                    lam_t = float(crit * np.sqrt(np.mean(pi * (1 - pi))) * scale)
                else:
                    sigma = self._noise_std() if sigma is None else sigma
                    lam_t = float(2.0 * sigma[t] * crit * scale)
            delta = problem.solve(lam_t)
            if refit:
                delta = problem.refit(delta)
            if problem.not_converged:
                warnings.warn(
                    f"The adaptation solver did not converge within max_iter={max_iter} iterations "
                    f"({problem.not_converged} solve(s)); raise `max_iter` or `tol`.",
                    RuntimeWarning,
                    stacklevel=2,
                )
            deltas.append(delta)
            lams.append(lam_t)
            paths.append(path)
        delta = np.vstack(deltas)
        self._adapted()[environment] = {
            "parent": par,
            "base": base_node,
            "head": w_base + delta,
            "delta": delta,
            "lam": np.asarray(lams),
            "cv_path": paths if any(pth is not None for pth in paths) else None,
            "n_cells": int(n),
            "new_node": environment not in self.tree,
            "fingerprint": self._fingerprint(),
        }
        latents = [f"latent_{i}" for i in range(p)]
        scaled = delta * std[:, None]
        if self._n_targets() == 1:
            return pd.Series(scaled[0], index=latents, name=f"{base_node}->{environment}")
        return pd.DataFrame(scaled, index=self._target_names(), columns=latents)
