"""`tfbonemet evaluate`: figures of merit on one split (task), figures (plots) and report.md (report)."""
from tfbonemet.tasks.evaluate.task import (SplitPredictions, evaluate, predict_split, predictions_csv,
                                           run_evaluation)

__all__ = ["SplitPredictions", "evaluate", "predict_split", "predictions_csv", "run_evaluation"]
