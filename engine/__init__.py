"""pix2dance engine: dataset building, training, evaluation, serving and headless rendering.

Heavy modules (torch, cv2, mediapipe, bpy) are imported by the modules that need them, never here,
so that `engine.joints`, `engine.protocol` and `engine.client` stay importable inside Blender.
"""

__version__ = "0.1.0"
