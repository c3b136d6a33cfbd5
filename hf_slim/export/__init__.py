from .onnx import export_onnx, load_ort_model
from .quantize import QuantizationReport, detect_isa, quantize

__all__ = ["QuantizationReport", "detect_isa", "export_onnx", "load_ort_model", "quantize"]
