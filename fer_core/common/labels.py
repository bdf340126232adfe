"""The label space every layer shares."""

EMOTIONS: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
"""FER-2013's own class order (label index -> name); every tensor of labels uses it."""

IMAGE_SIZE = 48
"""FER-2013's faces are 48x48 grey; every network reads that."""
