"""Data: real videos (decord), the clip dataset for training, synthetic videos, DAVIS and YouTube-VOS.

    video      decord reading at 8 fps, image files and frame folders
"""

from .video import read_clip, read_frame_folder, read_image, resample_indices

__all__ = ["read_clip", "read_frame_folder", "read_image", "resample_indices"]
