class EvaluationError(Exception):
    """An evaluation problem the user can fix (leakage, mismatched labels, empty split): one line."""
