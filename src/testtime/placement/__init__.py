"""GPU placement: where the policy and the PRM run, planned from their ``config.json`` alone.

* ``shapes``: a model's shape and weight bytes from its ``config.json`` (local or Hub);
* ``budget``: the memory each engine needs per GPU (named constants, with their sources);
* ``planner``: ``plan_placement(policy, prm, gpus)`` -> ``PlacementPlan`` (``plan``);
* ``loading``: accelerate device maps for transformers models (the PRM and the ``hf:`` policy).

Importing this package loads no torch; ``detect_gpus`` and ``loading`` import it when called.
"""

from testtime.placement.plan import GpuInfo, ModelPlacement, PlacementPlan
from testtime.placement.planner import detect_gpus, given_gpus, plan_placement
from testtime.placement.shapes import ModelShape, PlacementError, model_shape, read_config

__all__ = ["GpuInfo", "ModelPlacement", "ModelShape", "PlacementError", "PlacementPlan",
           "detect_gpus", "given_gpus", "model_shape", "plan_placement", "read_config"]
