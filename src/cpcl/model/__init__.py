"""CLIP backbone in plain PyTorch (OpenAI layout) and loading of OpenAI, Hugging Face and cpcl weights."""

from cpcl.model.architecture import ArchitectureHints, resize_pos_embed
from cpcl.model.checkpoints import ClipCheckpoint, build_clip, load_clip, read_checkpoint, save_clip
from cpcl.model.clip import CLIP, CLIP_PRESETS, ClipConfig, ClipOutput, TextConfig, VisionConfig, clip_preset
from cpcl.model.inference import LoadedModel, embed_images, embed_texts, load_for_inference

__all__ = [
    "ArchitectureHints",
    "CLIP",
    "CLIP_PRESETS",
    "ClipCheckpoint",
    "ClipConfig",
    "ClipOutput",
    "LoadedModel",
    "TextConfig",
    "VisionConfig",
    "build_clip",
    "clip_preset",
    "embed_images",
    "embed_texts",
    "load_clip",
    "load_for_inference",
    "read_checkpoint",
    "resize_pos_embed",
    "save_clip",
]
