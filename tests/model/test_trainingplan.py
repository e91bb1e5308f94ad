"""The learning-rate schedule is torch's CosineAnnealingLR, with the values of the former closed-form decay."""

from __future__ import annotations

import math

import pytest
from lightning.pytorch.callbacks import Callback

from sctbr.model import TBR, TBRTrainingPlan
from sctbr.model._trainingplan import Phase


def _formula(plan: TBRTrainingPlan, epoch: int) -> float:
    """The schedule before CosineAnnealingLR: cosine decay from the phase's lr to lr * lr_min_factor, then flat."""
    phase = plan.phases[plan.phase_index(epoch)]
    total = max(1, phase.schedule)
    t = min(epoch - phase.start, total) / total
    f = plan.lr_min_factor
    return phase.lr * (f + (1 - f) * 0.5 * (1 + math.cos(math.pi * t)))


@pytest.fixture
def model(small_adata):
    TBR.setup_anndata(small_adata, target="y", groupby="environment")
    return TBR(small_adata, tree=small_adata.uns["environment_tree"], n_latent=2, hidden=(8,), random_state=0)


def test_lr_at_equals_the_former_formula(model):
    # phases with early-stopped schedules (epochs < schedule) and a phase past its decay (epochs > schedule)
    phases = [
        Phase("fit", 0, 12, 3e-3, 1e-3, 12),
        Phase("sparsify", 12, 5, 1e-3, 1e-2, 9),
        Phase("path", 17, 8, 2e-3, 1e-1, 4),
    ]
    plan = TBRTrainingPlan(model.module, phases=phases, lr_min_factor=0.05)
    for epoch in range(25):
        assert plan.lr_at(epoch) == pytest.approx(_formula(plan, epoch), rel=1e-12, abs=0)


class _RecordLR(Callback):
    def __init__(self):
        self.lrs: dict[int, float] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.plan = pl_module
        self.lrs.setdefault(trainer.current_epoch, trainer.optimizers[0].param_groups[0]["lr"])


def test_training_follows_the_former_formula(model):
    record = _RecordLR()
    model.train(
        max_epochs=12, accelerator="cpu", enable_progress_bar=False, callbacks=[record], random_state=0, batch_size=64
    )
    plan = record.plan
    assert len(plan.phases) >= 2  # fit, then the later phases (each with a fresh decay)
    assert len(record.lrs) >= 12
    for epoch, lr in record.lrs.items():
        assert lr == pytest.approx(_formula(plan, epoch), rel=1e-10), epoch


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"optimizer": "SGD"}, TypeError, r"does not use \['optimizer'\].*Adam"),
        ({"reduce_lr_on_plateau": True}, TypeError, r"reduce_lr_on_plateau.*cosine decay"),
        ({"n_epochs_kl_warmup": 10}, TypeError, r"no KL term"),
        ({"lr": 0}, ValueError, r"`lr` must be a positive number.*got 0"),
        ({"lr": float("nan")}, ValueError, r"`lr`"),
        ({"lr_min_factor": 1.5}, ValueError, r"`lr_min_factor` must be a fraction"),
        ({"weight_decay": -1}, ValueError, r"`weight_decay`"),
        ({"max_epochs": 0}, ValueError, r"`max_epochs` must be a positive integer"),
        ({"reweight_every": 0}, ValueError, r"`reweight_every`"),
    ],
)
def test_plan_rejects_options_it_ignores_and_bad_values(model, kwargs, error, match):
    with pytest.raises(error, match=match):
        TBRTrainingPlan(model.module, **kwargs)


def test_train_rejects_ignored_plan_options_before_training(model):
    with pytest.raises(TypeError, match="optimizer"):
        model.train(max_epochs=2, accelerator="cpu", enable_progress_bar=False, plan_kwargs={"optimizer": "SGD"})
    assert not model.is_trained
