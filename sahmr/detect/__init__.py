"""2-D person boxes and body keypoints from mediapipe's shipped pose model (docs/detection.md).

mediapipe runs in a child process from a private site folder (`sahmr.detect.runtime`);
importing this package never imports mediapipe.
"""
