"""fer_core: every piece of the facial-emotion-recognition system that is not UI.

Data loading and cleaning, the model zoo, training, evaluation, face detection and
inference live here; ``train.py`` and the Streamlit pages are thin layers over it.
"""

EMOTIONS: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
"""FER-2013's own class order (label index -> name); every tensor of labels uses it."""

IMAGE_SIZE = 48

__all__ = ["EMOTIONS", "IMAGE_SIZE"]
