"""Reliability of long fits: the checkpoint directory, divergence checks, interrupts, saved versions.

A fit of :meth:`sctbr.model.TBR.train` is one Lightning run in phases (see :mod:`sctbr.model._phases`). With
``checkpoint_dir``, Lightning's :class:`~lightning.pytorch.callbacks.ModelCheckpoint` writes ``last.ckpt`` at the
end of every epoch (weights, optimiser, epoch counter, the phases, the refinement, the lambda path's scores and the
loss history), next to ``sctbr_checkpoint.json`` (the fit's settings); ``resume=True`` passes it to Lightning as
``ckpt_path``. Batch order depends on the seed and the epoch only, so on CPU a resumed fit gives the same numbers
as an uninterrupted one.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import tempfile
import threading
import warnings
from contextlib import contextmanager
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

import sctbr._logging as logg
from sctbr._constants import X_KEY
from sctbr.model._backed import max_abs

#: Saved models from sctbr versions before this one cannot be read by the installed version.
MIN_COMPATIBLE_VERSION = "0.1.0"
_STATE_FILE = "sctbr_checkpoint.json"
_DIVERGED_HINT = (
    "Lower the learning rate (e.g. lr={suggest:g}), check that the inputs are on a moderate scale (log-normalised "
    "expression or sc.pp.scale, not raw counts{scale}), or reduce `lam`."
)


def current_version() -> str:
    """The installed sctbr version."""
    try:
        return version("sctbr")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree without installation
        return "0.0.0"


# ---------------------------------------------------------------------------------------------------- callbacks


def epoch_checkpoint(directory: str | os.PathLike) -> ModelCheckpoint:
    """Lightning's checkpoint of the fit (``last.ckpt``: weights, optimiser, epoch, phases, history) every epoch."""
    return ModelCheckpoint(
        dirpath=str(directory),
        filename="last",
        monitor=None,
        save_top_k=1,
        every_n_epochs=1,
        save_on_train_epoch_end=True,
        enable_version_counter=False,
    )


class DivergenceCheck(Callback):
    """Stop a diverged fit (NaN or infinite weights or loss) at the end of the epoch where it happens."""

    def _check(self, trainer, pl_module) -> None:
        module = pl_module.module
        finite = all(bool(torch.isfinite(p).all()) for p in module.parameters())
        loss = trainer.callback_metrics.get("train_loss")
        if loss is not None:
            finite = finite and bool(torch.isfinite(torch.as_tensor(loss)).all())
        if not finite:
            phase = pl_module.phase
            raise DivergedError(phase.name, int(pl_module.phase_epoch), phase.lr)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._check(trainer, pl_module)

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            self._check(trainer, pl_module)


class DivergedError(FloatingPointError):
    """Training produced NaN or infinite weights or losses."""

    def __init__(self, stage: str, epoch: int, lr: float, input_scale: float | None = None):
        self.stage, self.epoch, self.lr, self.input_scale = stage, epoch, lr, input_scale
        scale = f"; the largest |input| is {input_scale:.3g}" if input_scale is not None else ""
        hint = _DIVERGED_HINT.format(suggest=min(1e-3, lr / 10), scale=scale)
        super().__init__(
            f"Training diverged in epoch {epoch} of stage {stage!r} (lr={lr:g}): the loss or the weights became NaN "
            f"or infinite. {hint}"
        )

    def __reduce__(self):
        return (DivergedError, (self.stage, self.epoch, self.lr, self.input_scale))


# ---------------------------------------------------------------------------------------------------- interrupts


@contextmanager
def keyboard_interrupts():
    """Turn Lightning's handling of Ctrl+C back into a ``KeyboardInterrupt`` and restore the SIGINT handler.

    Lightning catches a ``KeyboardInterrupt`` during ``fit``, ignores SIGINT from then on and calls
    ``sys.exit(1)``. Inside a library call (a notebook, a pipeline) the caller should see the interrupt instead.
    """
    main = threading.current_thread() is threading.main_thread()
    handler = signal.getsignal(signal.SIGINT) if main else None
    try:
        yield
    except SystemExit as exc:
        if exc.code == 1:
            raise KeyboardInterrupt("Training was interrupted.") from exc
        raise
    finally:
        if main and handler is not None and signal.getsignal(signal.SIGINT) != handler:
            signal.signal(signal.SIGINT, handler)


# ---------------------------------------------------------------------------------------------------- directory


def checkpoint_path(directory: str | os.PathLike, resume: bool, config: dict) -> str | None:
    """Prepare ``directory`` for the checkpoints of a fit; the checkpoint to resume from, if any.

    The fit's settings (``config``) are written next to the checkpoint; a resumed fit must have the same. Without
    ``resume``, a directory that already holds a fit is refused.
    """
    directory = Path(directory)
    config = json.loads(json.dumps(config, default=str))
    # under DDP every process runs train(); only rank 0 writes, and the others read what it wrote
    writer = is_rank_zero()
    state_file = directory / _STATE_FILE
    if state_file.exists():
        saved = json.loads(state_file.read_text())
        if not resume and writer:
            raise FileExistsError(
                f"{directory} already holds the checkpoints of a fit. Pass resume=True to continue it, or a new "
                "(or empty) checkpoint_dir to start over."
            )
        diff = {k: (saved.get(k), v) for k, v in config.items() if saved.get(k) != v}
        if diff:
            listed = "; ".join(f"{k}: checkpoint {a!r}, now {b!r}" for k, (a, b) in list(diff.items())[:8])
            raise ValueError(
                f"The checkpoints in {directory} are from a fit with other settings ({listed}). Resume with the "
                "same model, data and train() arguments, or pass a new checkpoint_dir."
            )
    elif writer:
        if resume:
            logg.info(f"No checkpoint in {directory}: starting a fresh fit.")
        directory.mkdir(parents=True, exist_ok=True)
        state_file.write_text(json.dumps(config, indent=1))
    last = directory / "last.ckpt"
    return str(last) if resume and last.exists() else None


#: ``train()`` arguments that may change between an interrupted fit and its resumption.
NOT_CHECKPOINTED = frozenset(
    {
        "self",
        "checkpoint_dir",
        "resume",
        "accelerator",
        "devices",
        "plan_kwargs",
        "trainer_kwargs",
        "backed",
        "num_threads",
    }
)


def fit_config(model, settings: dict, plan_kwargs: dict | None, max_epochs: int) -> dict:
    """What a resumed fit must share with the interrupted one: model, data shape and training settings."""
    module = model.module
    return {
        **{k: v for k, v in settings.items() if k != "max_epochs"},
        "max_epochs": int(max_epochs),
        "plan_kwargs": repr(sorted((plan_kwargs or {}).items())),
        "n_obs": int(model.adata.n_obs),
        "inputs": list(getattr(model, "input_names_", []))[:50],
        "environments": list(model.environments_),
        "module": {k: list(v.shape) for k, v in module.state_dict().items()},
        "lam": float(module.lam) if not isinstance(module.lam, str) else module.lam,
        "summary": str(getattr(model, "_model_summary_string", "")),
    }


def is_rank_zero() -> bool:
    """Whether this process is the first of a distributed run (or the only one), before or during a fit."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    if "RANK" in os.environ:
        return int(os.environ["RANK"]) == 0
    if int(os.environ.get("SLURM_NTASKS", 1)) > 1 and "SLURM_PROCID" in os.environ:
        return int(os.environ["SLURM_PROCID"]) == 0
    return int(os.environ.get("LOCAL_RANK", 0)) == 0 and int(os.environ.get("NODE_RANK", 0)) == 0


@torch.no_grad()
def sync_from_rank_zero(module: torch.nn.Module) -> None:
    """Under DDP ("ddp" launcher: every process runs the whole fit), give every process rank 0's weights and buffers.

    DDP keeps the parameters equal but each process updates the latents' running statistics on its own shard; the
    basis refinement between stages must see the same module everywhere. No-op without a process group.
    """
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        return
    for tensor in module.state_dict().values():
        if not tensor.is_sparse:
            dist.broadcast(tensor, src=0)


def is_ddp(trainer_kwargs: dict) -> bool:
    """Whether the Trainer arguments ask for a DDP strategy."""
    strategy = trainer_kwargs.get("strategy")
    name = strategy if isinstance(strategy, str) else type(strategy).__name__ if strategy is not None else ""
    return "ddp" in name.lower()


def ddp_log_dir(common: dict) -> str | None:
    """A private directory for scvi-tools' on-disk history under DDP (it defaults to ``./lightning_logs``)."""
    if is_ddp(common) and not common.get("log_save_dir"):
        return tempfile.mkdtemp(prefix="sctbr_ddp_")
    return None


def remove_dir(path: str | None) -> None:
    if path:
        shutil.rmtree(path, ignore_errors=True)


# ---------------------------------------------------------------------------------------------------- save / load


def _release(v: str) -> tuple[int, ...]:
    from packaging.version import Version

    return Version(v).release


def check_version(saved: str | None, path: str) -> None:
    """Refuse a saved model that the installed sctbr cannot read, with the reason and the fix."""
    from packaging.version import InvalidVersion

    current = current_version()
    if saved is None:
        raise ValueError(
            f"{path} records no sctbr version: it was not written by sctbr.model.TBR.save (or by a development "
            f"version before {MIN_COMPATIBLE_VERSION}). Refit the model with the installed sctbr {current}."
        )
    try:
        file_release, current_release, minimum = (
            _release(str(saved)),
            _release(current),
            _release(MIN_COMPATIBLE_VERSION),
        )
    except InvalidVersion:
        raise ValueError(f"{path} records an unreadable sctbr version {saved!r}; refit the model.") from None
    if file_release[:2] > current_release[:2]:
        raise ValueError(
            f"{path} was written by sctbr {saved}, newer than the installed {current}; its format may have changed. "
            "Upgrade sctbr (pip install -U sctbr) to load it."
        )
    if file_release < minimum:
        raise ValueError(
            f"{path} was written by sctbr {saved}; the installed sctbr {current} reads models from "
            f"{MIN_COMPATIBLE_VERSION} on. Refit the model, or load it with sctbr {saved}."
        )


def check_saved_model(dir_path: str, prefix: str | None, adata) -> None:
    """Check a saved model's sctbr version and that ``adata`` has its inputs, before anything touches ``adata``."""
    path = os.path.join(str(dir_path), f"{prefix or ''}model.pt")
    if not os.path.exists(path):
        return  # scvi-tools raises its own error (and handles backup URLs)
    saved = torch.load(path, map_location="cpu", weights_only=False)
    attrs = saved.get("attr_dict") or {}
    check_version(attrs.get("sctbr_version_"), path)
    if adata is None or adata is False:
        return
    check_input_names(adata, attrs.get("input_names_"), saved.get("var_names"), attrs.get("registry_") or {})


def check_input_names(adata, inputs, trained_var_names, registry: dict) -> None:
    """Raise when ``adata`` lacks the model's inputs or (for a model using all genes) has other genes."""
    setup_args = registry.get("setup_args") or {}
    subset = setup_args.get("var_names")
    names = [str(v) for v in adata.var_names]
    if subset is not None:
        wanted = [str(v) for v in subset]
        missing = [v for v in wanted if v not in set(names)]
        if missing:
            raise ValueError(
                f"The AnnData lacks {len(missing)} of the model's {len(wanted)} inputs: {missing[:10]}. Give it the "
                "same inputs (genes) as the training data."
            )
        return
    wanted = [
        str(v) for v in (inputs if inputs is not None else trained_var_names if trained_var_names is not None else [])
    ]
    if not wanted or names == wanted:
        return
    missing = [v for v in wanted if v not in set(names)]
    extra = [v for v in names if v not in set(wanted)]
    if missing:
        detail = f"it lacks {len(missing)} of them: {missing[:10]}"
    elif extra:
        detail = f"it has {len(extra)} other genes: {extra[:10]}"
    else:
        first = next(i for i, (a, b) in enumerate(zip(names, wanted, strict=True)) if a != b)
        detail = f"they are in another order (position {first}: {names[first]!r}, model {wanted[first]!r})"
    raise ValueError(
        f"The AnnData's var_names differ from the model's {len(wanted)} inputs: {detail}. Subset and order the genes "
        "as in training, e.g. adata[:, model_inputs] with model_inputs = the training data's var_names."
    )


@contextmanager
def quiet_var_names_warning():
    """scvi-tools warns about differing ``var_names`` even when sctbr already checked the inputs by name."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="`var_names` for the loaded `model` does not match")
        yield


def run_fit(model, plan, datamodule, accelerator, devices, checkpoint_dir, ckpt_path, trainer_kwargs: dict) -> None:
    """One Lightning fit of ``model`` over all phases of ``plan`` (resumed from ``ckpt_path`` if given).

    With ``checkpoint_dir``, ``last.ckpt`` is written at the end of every epoch; Ctrl+C and divergence (NaN or
    infinite weights) end the fit with :class:`KeyboardInterrupt` / :class:`DivergedError` (with the input scale)
    and mark the model untrained. The data module's device copy is released in every case.
    """
    module = model.module
    # DDP broadcasts buffers, and cannot broadcast sparse ones (the path matrix is the same on every process)
    plan._ddp_params_and_buffers_to_ignore = [f"module.{n}" for n, b in module.named_buffers() if b.is_sparse]
    kwargs = {**trainer_kwargs, "accelerator": accelerator, "devices": devices, "early_stopping": False}
    if ckpt_path is not None:
        kwargs["ckpt_path"] = ckpt_path
    log_dir = ddp_log_dir(kwargs)
    if log_dir is not None:
        kwargs["log_save_dir"] = log_dir
    try:
        runner = model._train_runner_cls(
            model, training_plan=plan, data_splitter=datamodule, max_epochs=plan.phases[-1].end, **kwargs
        )
        if checkpoint_dir is not None:
            # a plain Lightning checkpoint; added after scvi-tools' Trainer, which only accepts its own kind
            runner.trainer.callbacks.append(epoch_checkpoint(checkpoint_dir))
        with keyboard_interrupts(), warnings.catch_warnings():
            # the directory holds the checkpoint being resumed from
            warnings.filterwarnings("ignore", message="Checkpoint directory .* exists and is not empty")
            runner()
        sync_from_rank_zero(module)
        if not all(torch.isfinite(p).all() for p in module.parameters()):
            phase = plan.phases[-1]
            raise DivergedError(phase.name, phase.epochs - 1, phase.lr)
    except DivergedError as err:
        model.is_trained_ = False
        raise DivergedError(err.stage, err.epoch, err.lr, max_abs(datamodule.data[X_KEY])) from None
    except BaseException:
        model.is_trained_ = False
        raise
    finally:
        datamodule.teardown("fit")  # the trainer (kept as model.trainer) must not hold the device copy
        remove_dir(log_dir)
