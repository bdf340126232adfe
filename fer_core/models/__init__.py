"""The model zoo (a registry by name), weights on disk (safetensors + config), the inference form,
model cards and the active model.
"""
