"""pix2dance engine: dataset building, training, evaluation, serving and headless rendering.

Heavy modules (torch, cv2, mediapipe, bpy) are imported by the modules that need them, never here,
so that `engine.wire.joints`, `engine.wire.protocol` and `engine.wire.client` stay importable inside Blender.
"""

__version__ = "0.1.0"
