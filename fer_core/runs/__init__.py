"""Training runs as the app sees them: the run store, the background launcher and worker, the
deployment settings, and shipping a run as a model.
"""
