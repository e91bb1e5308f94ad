"""scvi-tools style model: :class:`TBR`, its torch module and training plan."""

from sctbr.model._basis import refine_basis
from sctbr.model._data import TBRDataModule, read_columns
from sctbr.model._lam import one_standard_error_rule
from sctbr.model._model import DEFAULT_LAM as DEFAULT_LAM
from sctbr.model._model import TBR
from sctbr.model._module import TBRModule
from sctbr.model._policy import DEFAULT_BATCH_SIZE as DEFAULT_BATCH_SIZE
from sctbr.model._policy import DEFAULT_LR as DEFAULT_LR
from sctbr.model._trainingplan import TBRTrainingPlan

# The training defaults DEFAULT_LR, DEFAULT_BATCH_SIZE and DEFAULT_LAM (shared with sctbr.tl) are public constants
# too; __all__ lists the functions and classes, which carry their own docstrings.
__all__ = [
    "TBR",
    "TBRModule",
    "TBRTrainingPlan",
    "TBRDataModule",
    "refine_basis",
    "read_columns",
    "one_standard_error_rule",
]
