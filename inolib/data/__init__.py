"""Data: real videos (decord), the training clip dataset, synthetic videos, DAVIS and YouTube-VOS.

    video      decord reading at 8 fps, probing, image files and frame folders, a tiny MJPEG AVI writer
    index      video sources (folder, list, Charades csv) and the cached, parallel video index
    clips      clip sampler (distributed), clip dataset with broken-file replacement, loader, SkipLog
    synthetic  seeded synthetic videos with ground-truth masks, written as DAVIS / YouTube-VOS / AVI
    vos        DAVIS-2017 and YouTube-VOS 2018 readers
"""

from .clips import (ClipDataset, ClipSampler, SkipLog, UnusableVideos, collate_clips, decode_size,
                    load_clip_views, make_clip_loader)
from .index import VideoIndex, find_videos, read_video_list, resolve_sources
from .synthetic import (SyntheticVideo, make_synthetic_video, write_davis_layout, write_video_file,
                        write_ytvos_layout)
from .video import (VideoInfo, probe_video, read_clip, read_frame_folder, read_frames, read_image,
                    resample_indices, write_avi)
from .vos_datasets import (VOSSequence, davis_palette, list_davis_sequences, list_ytvos_videos, load_davis, load_ytvos, read_davis_sequence, read_ytvos_sequence)

__all__ = [
    "ClipDataset", "ClipSampler", "SkipLog", "UnusableVideos", "collate_clips", "decode_size", "load_clip_views",
    "make_clip_loader",
    "VideoIndex", "find_videos", "read_video_list", "resolve_sources",
    "SyntheticVideo", "make_synthetic_video", "write_davis_layout", "write_video_file", "write_ytvos_layout",
    "VideoInfo", "probe_video", "read_clip", "read_frame_folder", "read_frames", "read_image", "resample_indices",
    "write_avi",
    "VOSSequence", "davis_palette", "list_davis_sequences", "list_ytvos_videos", "load_davis", "load_ytvos",
    "read_davis_sequence", "read_ytvos_sequence",
]
