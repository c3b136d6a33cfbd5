"""Lazy imports of the optional ONNX stack, with an install hint when it is missing."""

from __future__ import annotations

import importlib

from ..errors import MissingDependencyError

INSTALL_HINT = 'pip install "hf-slim[onnx]"  (optimum 2.1, optimum-onnx 0.1, onnxruntime)'


def require_onnx():
    """Import and return `(optimum.onnxruntime, optimum.exporters.onnx, onnxruntime, onnx)`."""
    modules = []
    for name in ("optimum.onnxruntime", "optimum.exporters.onnx", "onnxruntime", "onnx"):
        try:
            modules.append(importlib.import_module(name))
        except ImportError as err:
            raise MissingDependencyError(
                f"ONNX export and quantization need {name.split('.')[0]!r}, which is not installed ({err}). "
                f"Install the extra: {INSTALL_HINT}"
            ) from err
    return tuple(modules)
