"""Training a model: the loop and its config, resumable state, distillation and the optimizer x learning-rate study."""
