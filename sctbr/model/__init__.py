"""scvi-tools style model: :class:`TBR`, its torch module and training plan."""

from sctbr.model._basis import refine_basis
from sctbr.model._data import TBRDataModule
from sctbr.model._model import TBR
from sctbr.model._module import TBRModule
from sctbr.model._trainingplan import TBRTrainingPlan

__all__ = ["TBR", "TBRModule", "TBRTrainingPlan", "TBRDataModule", "refine_basis"]
