"""Evaluation for genrekit: metrics (top-k, F1, confusion, ROC/AUC, per-genre), clip-to-track
aggregation, plots and reports. Never imports ``genrekit``.
"""
from genrekit.evaluation.errors import EvaluationError

__all__ = ["EvaluationError"]
