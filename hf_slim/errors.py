"""Exceptions raised by hf_slim.

Every error hf_slim raises about user input subclasses `ValueError`, names the bad value, what was expected and how
to fix it, and is raised before any work starts or any output is written.
"""


class HfSlimError(ValueError):
    """Base class for errors about user input (a bad argument, an incompatible model, an invalid config)."""


class UnsupportedArchitectureError(HfSlimError):
    """The model's architecture has no adapter in the hf_slim registry."""


class IncompatibleModelsError(HfSlimError):
    """The teacher and the student cannot be distilled into each other (labels, vocabulary, head counts...)."""


class InvalidLayerMapError(HfSlimError):
    """A `layer_map` or a list of layers names layers that do not exist."""


class MissingDependencyError(ImportError):
    """An optional dependency is needed for this feature; the message says which extra to install."""
