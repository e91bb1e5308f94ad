"""Outputs of a trained :class:`~sctbr.model.TBR`: latents, predictions, heads, per-cell losses; save and load."""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd
import torch
from anndata import AnnData

from sctbr._constants import ENV_KEY, X_KEY
from sctbr.model import _checkpoint as ckpt
from sctbr.model._heads import BATCH_SIZE, encode, map_batches, node_heads


class OutputsMixin:
    """The reading side of :class:`~sctbr.model.TBR` (mixed into it; see its methods there)."""

    def _cell_losses(self, data: dict, idx: np.ndarray, batch_size: int = BATCH_SIZE) -> np.ndarray:
        """Each cell's data term (standardised squared error or logistic loss, summed over targets)."""

        def losses(batch: dict) -> torch.Tensor:
            return next(iter(self.module(batch)[2].reconstruction_loss.values()))

        return map_batches(self.module, data, losses, idx, batch_size).astype(np.float64)

    # -- outputs ----------------------------------------------------------------------------------------------
    def _run(self, adata: AnnData | None, what: str, batch_size: int = BATCH_SIZE) -> np.ndarray:
        if adata is not None:
            ckpt.check_input_names(adata, getattr(self, "input_names_", None), None, self.registry_)
        adata = self._validate_anndata(adata)
        data = self._arrays(adata, with_target=False)
        if what == "latent":
            return encode(self.module, data, batch_size=batch_size)
        return map_batches(
            self.module, data, lambda b: self.module.predict_target(b[X_KEY], b[ENV_KEY]), None, batch_size
        )

    def get_latent_representation(self, adata: AnnData | None = None, batch_size: int = 8192) -> np.ndarray:
        """Standardised latents (cells x n_latent) of ``adata`` (default: the training AnnData).

        Cells of environments without training cells (new cell types) are encoded too: the latents do not depend
        on the environment.
        """
        self._check_if_trained(warn=False)
        if self._unseen_environments(adata):
            return self._encode(adata, batch_size).astype(np.float32)
        return self._run(adata, "latent", batch_size)

    def predict(
        self,
        adata: AnnData | None = None,
        batch_size: int = 8192,
        *,
        environment: str | None = None,
        parent: str | None = None,
        rule: Literal["nearest", "own"] = "nearest",
    ) -> np.ndarray:
        """Predicted target of every cell, from its environment's head, on the target's original scale.

        For a binary target (logistic loss) the probability of 1. With several targets, cells x targets (columns
        in the order of ``model.targets_``).

        Parameters
        ----------
        adata
            Cells to predict (default: the training AnnData).
        batch_size
            Cells per forward pass.
        environment
            ``None``: each cell with the head of its own environment (the registered ``groupby`` column; every
            environment must have training cells). A node name: every cell of ``adata`` with the head for that
            environment (see :doc:`/transfer`): its adapted head if :meth:`adapt` fitted one, otherwise, with
            ``rule="nearest"``, the head of the closest environment with training cells (or an adapted head) in
            the tree (:meth:`nearest_observed`; ties go to the first node in breadth-first order, i.e. to an
            ancestor), the paper's rule for unseen cell types. ``adata``'s ``groupby`` column is then not read
            and nothing is written into ``adata``.
        parent
            For an ``environment`` that is not a node of the model's tree: the node it attaches to.
        rule
            ``"nearest"`` (above), or ``"own"``: the node's own head in the tree (for an internal or unobserved
            node, the value training left it; for a new node, its parent's head, i.e. no change on the new arc).

        Examples
        --------
        >>> import sctbr
        >>> adata = sctbr.datasets.simulate(depth=2, n_obs_per_env=100, random_state=0)
        >>> train = adata[adata.obs["environment"] != "n11"].copy()
        >>> sctbr.model.TBR.setup_anndata(train, target="y", groupby="environment")
        >>> model = sctbr.model.TBR(train, tree=adata.uns["environment_tree"], n_latent=5)
        >>> model.train(max_epochs=20)  # doctest: +SKIP
        >>> new = adata[adata.obs["environment"] == "n11"]
        >>> y_hat = model.predict(new, environment="n11")  # doctest: +SKIP
        """
        self._check_if_trained(warn=False)
        if environment is not None:
            return self._predict_environment(adata, environment, parent, rule, batch_size)
        if parent is not None:
            raise ValueError("`parent` only applies with `environment=`: give the name of the new environment too.")
        self._check_known_environments(adata)
        return self._run(adata, "predict", batch_size)

    def get_environment_weights(self, target: str | None = None) -> pd.DataFrame:
        """Head of every tree node (internal nodes included), in target units per standard deviation of a latent.

        For a binary target, in log-odds per standard deviation of a latent. With several targets, ``target``
        picks one; ``None`` returns all, with a (target, node) row index.
        """
        m = self.module
        heads = node_heads(m, self.tree)
        with torch.no_grad():
            scale = m.y_std.cpu().numpy().astype(np.float64)
        frames = [
            pd.DataFrame(heads[:, t] * scale[t], index=list(self.tree.nodes), columns=self._latent_names())
            for t in range(m.n_targets)
        ]
        return self._by_target(frames, target, "node")

    def get_deltas(self, target: str | None = None, *, changes: bool = False) -> pd.DataFrame:
        """Change of the head along every arc (arcs x latents) as training left it, or which latent changed where.

        Parameters
        ----------
        target
            With several targets, the one to return; ``None`` returns all, with a (target, arc) row index.
        changes
            ``False``: the trained ``Delta`` (arcs x latents; its zeros are exact, but training leaves many small
            non-zero entries). ``True``: the support estimate that :func:`sctbr.tl.tbr` / :func:`sctbr.tl.fit` ran
            after training (stored in ``uns["tbr"]["changes"]``), as a tidy frame with one row per arc x latent:
            ``arc``, ``latent``, ``delta`` (refitted with the latents fixed), ``frequency`` (share of bootstrap
            samples of the training cells that select the entry), ``tested`` (a least-squares test with the
            validation cells' variance calls it), ``changed`` (the rule: selected on all training cells and
            ``frequency >= 0.9``, or ``tested``, and placed on this arc by every equally sparse Delta), ``unresolved`` (a change the observed environments place on
            this arc or a neighbouring one but cannot say which: equally sparse Delta disagree; never
            ``changed``), and the least-squares ``estimate`` with its standard error ``se`` and 90% confidence
            interval ``ci_low`` / ``ci_high`` (latents taken as fixed; NaN for entries the
            observed environments do not identify on their own, e.g. on trees with cells at the leaves only). See
            "Which latent changed on which arc" in :doc:`/using_latents`.

        Examples
        --------
        >>> result = sctbr.tl.fit(adata)  # doctest: +SKIP
        >>> table = result.model.get_deltas(changes=True)  # doctest: +SKIP
        >>> table[table["changed"]]  # doctest: +SKIP
        """
        if changes:
            found = getattr(self, "changes_", None)
            if found is None:
                raise ValueError(
                    "No support estimate for this model: it is computed by sctbr.tl.tbr / sctbr.tl.fit for one "
                    "continuous target (not for the baseline, several or binary targets, or fit(changes=False))."
                )
            return found.tidy()
        m = self.module
        n_targets, d = m.n_targets, m.n_latent
        with torch.no_grad():
            delta = m.delta.cpu().numpy().astype(np.float64).reshape(-1, n_targets, d)
            scale = m.y_std.cpu().numpy().astype(np.float64)
        frames = []
        for t in range(n_targets):
            values = np.zeros((self.tree.n_arcs, d)) if m.baseline else delta[:, t] * scale[t]
            frames.append(pd.DataFrame(values, index=list(self.tree.arc_labels), columns=self._latent_names()))
        return self._by_target(frames, target, "arc")

    def _by_target(self, frames: list[pd.DataFrame], target: str | None, level: str) -> pd.DataFrame:
        if target is not None:
            if target not in self.targets_:
                raise KeyError(f"Target {target!r} is not one of the model's targets {self.targets_}.")
            return frames[self.targets_.index(target)]
        if len(frames) == 1:
            return frames[0]
        return pd.concat(frames, keys=self.targets_, names=["target", level])

    def _latent_names(self) -> list[str]:
        return [f"latent_{i}" for i in range(self.module.n_latent)]

    # -- save / load --------------------------------------------------------------------------------------------
    def save(self, dir_path: str, *args, **kwargs) -> None:
        """Save the model (scvi-tools' :meth:`~scvi.model.base.BaseModelClass.save`), recording the sctbr version.

        Parameters
        ----------
        dir_path
            Directory to write (``overwrite=True`` to replace one).
        *args, **kwargs
            As in scvi-tools' ``save`` (``prefix``, ``overwrite``, ``save_anndata``, ...).

        Examples
        --------
        >>> model.save("my_model/", overwrite=True)  # doctest: +SKIP
        >>> model = sctbr.model.TBR.load("my_model/", adata=adata)  # doctest: +SKIP
        """
        self.sctbr_version_ = ckpt.current_version()
        super().save(dir_path, *args, **kwargs)

    @classmethod
    def load(cls, dir_path: str, adata: AnnData | None = None, *args, prefix: str | None = None, **kwargs):
        """Load a saved model (scvi-tools' :meth:`~scvi.model.base.BaseModelClass.load`).

        Refuses, with the reason, a file written by an sctbr version the installed one cannot read (a newer minor
        version, a version before 0.1.0, or none recorded), and an ``adata`` whose genes differ from the model's
        inputs (missing genes; for a model using all genes also other or reordered genes), before anything is
        written into ``adata``.

        Parameters
        ----------
        dir_path
            Directory written by :meth:`save`.
        adata
            AnnData with the model's inputs, registered like the training data (``None``: the AnnData saved with the
            model, if any).
        *args, prefix, **kwargs
            As in scvi-tools' ``load`` (``accelerator``, ``device``, ``prefix``, ...).

        Returns
        -------
        The loaded :class:`TBR`.

        Examples
        --------
        >>> model = sctbr.model.TBR.load("my_model/", adata=adata)  # doctest: +SKIP
        """
        ckpt.check_saved_model(dir_path, prefix, adata)
        with ckpt.quiet_var_names_warning():
            return super().load(dir_path, adata, *args, prefix=prefix, **kwargs)
