"""Data-parallel training (Lightning DDP on CPU with the gloo backend, two processes) gives the quality of one process.

Lightning's ``strategy="ddp"`` re-runs the calling script in the extra processes, so the DDP fit runs in a script of
its own. ``ddp_spawn`` works too (notebooks) but starts fresh interpreters for the fit, which costs more time than
this test should take.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import sctbr
from sctbr.model import TBR

SIMULATION = {"depth": 2, "n_obs_per_env": 200, "n_inputs": 6, "n_latent": 3, "random_state": 0}
EPOCHS = 20
BATCH = 128  # one process; under DDP every process takes BATCH // 2 cells, so the optimiser takes the same steps

SCRIPT = textwrap.dedent(
    """
    import sys
    import numpy as np, torch, sctbr
    from sctbr.model import TBR

    torch.set_num_threads(1)
    out, epochs, batch = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    adata = sctbr.datasets.simulate(**{simulation})
    TBR.setup_anndata(adata, target="y", groupby="environment")
    model = TBR(adata, tree=adata.uns["environment_tree"], n_latent=3, hidden=(32,))
    model.train(
        max_epochs=epochs,
        batch_size=batch,
        accelerator="cpu",
        devices=2,
        strategy="ddp",
        enable_progress_bar=False,
        checkpoint_dir=f"{{out}}/checkpoints",
    )
    rank = model.trainer.global_rank
    state = [v.numpy().ravel() for v in model.module.state_dict().values() if not v.is_sparse]
    mse = model.history["mse_validation"].iloc[-1, 0] if rank == 0 else np.nan
    np.savez(
        f"{{out}}/rank{{rank}}.npz",
        state=np.concatenate(state),
        z=model.get_latent_representation(),
        mse=float(mse),
        world=model.trainer.world_size,
        n_train=len(model.train_indices),
    )
    """
)


@pytest.mark.slow
def test_two_cpu_processes_match_one(tmp_path):
    script = tmp_path / "fit_ddp.py"
    script.write_text(SCRIPT.format(simulation=repr(SIMULATION)))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    env.pop("LOCAL_RANK", None)
    run = subprocess.run(
        [sys.executable, str(script), str(tmp_path), str(EPOCHS), str(BATCH // 2)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-4000:]
    ranks = [np.load(tmp_path / f"rank{r}.npz") for r in (0, 1)]
    assert int(ranks[0]["world"]) == 2
    # the processes end with the same weights and running statistics (the refinement between the phases saw the
    # same module everywhere), hence the same latents
    np.testing.assert_array_equal(ranks[0]["state"], ranks[1]["state"])
    np.testing.assert_array_equal(ranks[0]["z"], ranks[1]["z"])

    adata = sctbr.datasets.simulate(**SIMULATION)
    TBR.setup_anndata(adata, target="y", groupby="environment")
    one = TBR(adata, tree=adata.uns["environment_tree"], n_latent=3, hidden=(32,))
    one.train(max_epochs=EPOCHS, batch_size=BATCH, accelerator="cpu", enable_progress_bar=False)
    assert int(ranks[0]["n_train"]) == len(one.train_indices)  # the same split

    mcc_one = sctbr.metrics.mcc(adata.obsm["Z_true"], one.get_latent_representation())
    mcc_ddp = sctbr.metrics.mcc(adata.obsm["Z_true"], ranks[0]["z"])
    mse_one = float(one.history["mse_validation"].iloc[-1, 0])
    mse_ddp = float(ranks[0]["mse"])
    print(f"MCC one process {mcc_one:.3f}, DDP {mcc_ddp:.3f}; validation MSE {mse_one:.3f} vs {mse_ddp:.3f}")
    assert abs(mcc_ddp - mcc_one) < 0.1
    assert mse_ddp < 1.25 * mse_one
    assert mse_one < 1.25 * mse_ddp

    # rank 0 wrote the checkpoints; one process replays the finished DDP fit from them (no training)
    assert (tmp_path / "checkpoints" / "last.ckpt").exists()
    replay = TBR(adata, tree=adata.uns["environment_tree"], n_latent=3, hidden=(32,))
    replay.train(
        max_epochs=EPOCHS,
        batch_size=BATCH // 2,
        accelerator="cpu",
        enable_progress_bar=False,
        checkpoint_dir=tmp_path / "checkpoints",
        resume=True,
    )
    np.testing.assert_allclose(replay.get_latent_representation(), ranks[0]["z"], atol=1e-6)
    assert len(replay.history["train_loss"]) == EPOCHS
