"""From a photo, video or camera frame to labelled faces: decoding, face detection, alignment, the
recognizer, tracking, drawing, Grad-CAM, and their CLIs and benchmarks.
"""
