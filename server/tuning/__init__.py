"""Bayesian optimization of LLM parameters (``llmopt.v1.Tuning``), no grpc inside.

- ``space``: the search space (floats, log-scale floats, integers, categories) and its encoding
  in the unit cube (one-hot categories).
- ``gp``, ``acquisition``, ``optimizer``: the Gaussian process (Matérn-5/2, a length scale per
  dimension, fitted by marginal likelihood), the acquisitions (log-EI, EI, PI, UCB, constrained
  through the probability of feasibility), batch suggestions (Kriging believer, local
  penalization) and the seeded initial design.
- ``types``: a study's spec (objective, constraints, optimizer config, bandit binding), trials.
- ``store``: studies and trials in SQLite, durable before Suggest and Report answer.
- ``service``: ``TuningService``, ask and tell, and the studies that drive a bandit.
"""

from llmopt.tuning.optimizer import Constraint, OptimizerConfig
from llmopt.tuning.service import TuningService
from llmopt.tuning.space import CategoricalParam, FloatParam, IntParam, SearchSpace
from llmopt.tuning.types import BanditBinding, Objective, StudyInfo, StudySpec, Trial

__all__ = [
    "BanditBinding",
    "CategoricalParam",
    "Constraint",
    "FloatParam",
    "IntParam",
    "Objective",
    "OptimizerConfig",
    "SearchSpace",
    "StudyInfo",
    "StudySpec",
    "Trial",
    "TuningService",
]
