"""Foundations every layer may use: the label space, file paths and settings, atomic file writes, the compute device."""
