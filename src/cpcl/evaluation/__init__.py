"""Evaluation: text-to-image retrieval metrics (pure functions) and the evaluation driver."""
