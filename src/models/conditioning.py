"""Where the stage-2 components lived before each got its own module; kept because saved
pipelines name it.

A pipeline folder records each component's class under the module that defined it when it was
saved: ``model_index.json`` of a folder saved (or converted from the authors' checkpoint) before
the split says ``["src.models.conditioning", "PoseEncoder"]``, and likewise ``SourceMLP`` and
``FusionMLP``. diffusers resolves that name from this module, so it re-exports the classes that
now live in ``src.models.pose_encoder`` and ``src.models.heads``. New code imports from those.
"""

# diffusers finds how to load a component by looking its base classes up by name in the module the
# folder names, so ModelMixin must be reachable here too.
from diffusers import ModelMixin  # noqa: F401

from .heads import FusionMLP, SourceMLP
from .pose_encoder import PoseEncoder

__all__ = ["FusionMLP", "PoseEncoder", "SourceMLP"]
