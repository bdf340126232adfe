"""How good and how fast a model is: scores, classification report, confusion matrix, TTA,
calibration, the evaluation cache and the speed bench.
"""
