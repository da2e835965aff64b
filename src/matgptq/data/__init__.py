"""Text sources, tokenization, deterministic calibration sampling and its cache."""

from .sources import HF_DATASETS, check_source, known_sources, load_documents
from .tokens import CalibrationSpec, calibration_tokens, eval_tokens, sample_windows, tokenize_text

__all__ = [
    "HF_DATASETS", "check_source", "known_sources", "load_documents",
    "CalibrationSpec", "calibration_tokens", "eval_tokens", "sample_windows", "tokenize_text",
]
