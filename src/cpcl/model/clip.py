"""CLIP (ViT image tower + causal text transformer) in plain PyTorch, OpenAI's parameter layout.

Parameter names and shapes equal those of OpenAI's ViT CLIP, so an OpenAI state dict loads
as is: `visual.{conv1, class_embedding, positional_embedding, ln_pre, transformer, ln_post,
proj}`, text `token_embedding, positional_embedding, transformer, ln_final, text_projection`,
and `logit_scale`. Each residual block is `x + attn(ln_1(x))`, then `x + mlp(ln_2(x))` with
`attn.{in_proj_weight, in_proj_bias, out_proj}` laid out as in `nn.MultiheadAttention` and
`mlp.{c_fc, c_proj}`.

Backbone (docs/method.md): image feature = projected CLS token, text feature = projected EOT token.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, replace
from functools import partial
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from cpcl.utils.errors import ConfigError


class QuickGELU(nn.Module):
    """OpenAI CLIP's activation: x * sigmoid(1.702 x)."""

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.sigmoid(1.702 * x)


ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "quick_gelu": QuickGELU,  # OpenAI checkpoints (HF hidden_act "quick_gelu")
    "gelu": nn.GELU,  # exact erf GELU (HF "gelu")
    "gelu_tanh": partial(nn.GELU, approximate="tanh"),  # HF "gelu_new" / "gelu_pytorch_tanh"
}


@dataclass(frozen=True)
class VisionConfig:
    width: int = 768  # transformer width (channels per token)
    layers: int = 12  # residual attention blocks
    heads: int = 12  # attention heads; width must divide by it
    patch_size: int = 16  # square patch side in pixels (conv1 kernel and stride)
    image_size: tuple[int, int] = (224, 224)  # input (H, W); each a multiple of patch_size
    mlp_ratio: float = 4.0  # MLP hidden width / width
    act: str = "quick_gelu"  # MLP activation, a key of ACTIVATIONS
    ln_eps: float = 1e-5  # LayerNorm epsilon

    @property
    def grid(self) -> tuple[int, int]:
        """Patch grid (H / patch, W / patch)."""
        return self.image_size[0] // self.patch_size, self.image_size[1] // self.patch_size


@dataclass(frozen=True)
class TextConfig:
    width: int = 512  # transformer width
    layers: int = 12  # residual attention blocks
    heads: int = 8  # attention heads; width must divide by it
    vocab_size: int = 49408  # token embedding rows (CLIP BPE: 49,408)
    context_length: int = 77  # positions of the text positional embedding
    mlp_ratio: float = 4.0  # MLP hidden width / width
    act: str = "quick_gelu"  # MLP activation, a key of ACTIVATIONS
    ln_eps: float = 1e-5  # LayerNorm epsilon
    eot_token_id: int | None = None  # pooled token: None = argmax id (OpenAI), an id = its first occurrence (HF)


@dataclass(frozen=True)
class ClipConfig:
    embed_dim: int = 512  # joint embedding size (output of visual.proj and text_projection)
    image: VisionConfig = VisionConfig()  # image tower
    text: TextConfig = TextConfig()  # text tower
    init_temperature: float = 0.07  # softmax temperature at init: logit_scale = log(1 / T)
    max_logit_scale: float = 100.0  # exp(logit_scale) is clamped to this in forward

    def __post_init__(self) -> None:
        _check_positive(self, "embed_dim", "init_temperature", "max_logit_scale")
        for tower_name in ("image", "text"):
            tower = getattr(self, tower_name)
            _check_positive(tower, "width", "layers", "heads", "mlp_ratio", "ln_eps", prefix=tower_name)
            if tower.width % tower.heads:
                raise ConfigError(f"{tower_name}.width {tower.width} must divide by {tower_name}.heads {tower.heads}")
            if tower.act not in ACTIVATIONS:
                raise ConfigError(f"{tower_name}.act {tower.act!r} unknown; valid: {', '.join(ACTIVATIONS)}")
        _check_positive(self.image, "patch_size", prefix="image")
        _check_positive(self.text, "vocab_size", "context_length", prefix="text")
        height, width = self.image.image_size
        if height <= 0 or width <= 0 or height % self.image.patch_size or width % self.image.patch_size:
            raise ConfigError(f"image.image_size {height}x{width} must be positive multiples of "
                              f"image.patch_size {self.image.patch_size}")
        eot = self.text.eot_token_id
        if eot is not None and not 0 <= eot < self.text.vocab_size:
            raise ConfigError(f"text.eot_token_id {eot} outside the vocabulary 0..{self.text.vocab_size - 1}")

    def with_sizes(self, image_size: tuple[int, int] | None = None,
                   context_length: int | None = None) -> ClipConfig:
        """The same architecture at another input size and/or text context length."""
        image = self.image if image_size is None else replace(self.image, image_size=tuple(image_size))
        text = self.text if context_length is None else replace(self.text, context_length=context_length)
        return replace(self, image=image, text=text)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ClipConfig:
        """Inverse of `dataclasses.asdict`; unknown fields raise `ConfigError`, missing ones take defaults."""
        top = _checked_fields(cls, data, "model")
        image = _checked_fields(VisionConfig, top.pop("image", {}), "model.image")
        if "image_size" in image:
            image["image_size"] = tuple(int(side) for side in image["image_size"])
        text = _checked_fields(TextConfig, top.pop("text", {}), "model.text")
        return cls(**top, image=VisionConfig(**image), text=TextConfig(**text))


def _check_positive(obj: object, *names: str, prefix: str = "") -> None:
    for name in names:
        value = getattr(obj, name)
        if not value > 0:
            raise ConfigError(f"{prefix + '.' if prefix else ''}{name} must be > 0, got {value}")


def _checked_fields(cls: type, data: Mapping[str, Any], where: str) -> dict[str, Any]:
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where} must be a mapping, got {type(data).__name__}")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"unknown field(s) in {where}: {', '.join(unknown)}; valid: {', '.join(sorted(known))}")
    return dict(data)


CLIP_PRESETS: dict[str, ClipConfig] = {
    # OpenAI ViT-B/16 at its native 224x224 (the method trains it at 384x128)
    "vit-b-16": ClipConfig(),
    # unit tests: milliseconds per forward on CPU
    "tiny": ClipConfig(
        embed_dim=64,
        image=VisionConfig(width=128, layers=2, heads=2, patch_size=8, image_size=(32, 16)),
        text=TextConfig(width=128, layers=2, heads=2)),
    # from-scratch pretraining on 2 CPU cores, 128x48 crops: 8x3 = 24 patches + CLS
    "small": ClipConfig(
        embed_dim=256,
        image=VisionConfig(width=256, layers=6, heads=4, patch_size=16, image_size=(128, 48)),
        text=TextConfig(width=256, layers=4, heads=4)),
    # as "small" with 8-pixel patches: 16x6 = 96 patches + CLS, about 3x slower to train
    "small-p8": ClipConfig(
        embed_dim=256,
        image=VisionConfig(width=256, layers=6, heads=4, patch_size=8, image_size=(128, 48)),
        text=TextConfig(width=256, layers=4, heads=4)),
}


def clip_preset(name: str, image_size: tuple[int, int] | None = None,
                context_length: int | None = None) -> ClipConfig:
    """The preset `name` of `CLIP_PRESETS`, optionally at another image size / context length."""
    if name not in CLIP_PRESETS:
        raise ConfigError(f"unknown CLIP preset {name!r}; valid: {', '.join(CLIP_PRESETS)}")
    return CLIP_PRESETS[name].with_sizes(image_size, context_length)


class SelfAttention(nn.Module):
    """Multi-head self-attention with `nn.MultiheadAttention`'s parameter names and layout.

    `in_proj_weight: [3C, C]` stacks the q, k, v projections in that order; `out_proj: C -> C`.
    """

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * width))
        self.out_proj = nn.Linear(width, width)

    def forward(self, x: Tensor, causal: bool) -> Tensor:
        """x: [B, N, C] -> [B, N, C]; `causal`: token i attends to tokens <= i only."""
        batch, tokens, width = x.shape
        qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias)
        q, k, v = qkv.view(batch, tokens, 3, self.heads, width // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        out = F.scaled_dot_product_attention(q, k, v, is_causal=causal)  # [B, heads, N, C / heads]
        return self.out_proj(out.transpose(1, 2).reshape(batch, tokens, width))


class Mlp(nn.Module):
    """c_fc -> activation -> c_proj."""

    def __init__(self, width: int, hidden: int, act: str) -> None:
        super().__init__()
        self.c_fc = nn.Linear(width, hidden)
        self.act = ACTIVATIONS[act]()
        self.c_proj = nn.Linear(hidden, width)

    def forward(self, x: Tensor) -> Tensor:
        return self.c_proj(self.act(self.c_fc(x)))


class ResidualBlock(nn.Module):
    """Pre-norm block: x + attn(ln_1(x)), then x + mlp(ln_2(x)); [B, N, C] -> [B, N, C]."""

    def __init__(self, width: int, heads: int, mlp_ratio: float, act: str, ln_eps: float) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(width, eps=ln_eps)
        self.attn = SelfAttention(width, heads)
        self.ln_2 = nn.LayerNorm(width, eps=ln_eps)
        self.mlp = Mlp(width, int(round(width * mlp_ratio)), act)

    def forward(self, x: Tensor, causal: bool) -> Tensor:
        x = x + self.attn(self.ln_1(x), causal)
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    """A stack of `ResidualBlock`s (`resblocks.N`); causal masking is fixed at construction.

    With `grad_checkpointing` on, training forwards keep only each block's input and recompute
    its activations in backward (same outputs and gradients, less memory, one more forward).
    """

    def __init__(self, tower: VisionConfig | TextConfig, causal: bool) -> None:
        super().__init__()
        self.causal = causal
        self.grad_checkpointing = False  # a run setting, not architecture: see CLIP.set_grad_checkpointing
        self.resblocks = nn.ModuleList(
            ResidualBlock(tower.width, tower.heads, tower.mlp_ratio, tower.act, tower.ln_eps)
            for _ in range(tower.layers))

    def forward(self, x: Tensor) -> Tensor:
        """x: [B, N, C] -> [B, N, C]."""
        recompute = self.grad_checkpointing and self.training and torch.is_grad_enabled()
        for block in self.resblocks:
            x = checkpoint(block, x, self.causal, use_reentrant=False) if recompute else block(x, self.causal)
        return x


class VisionTransformer(nn.Module):
    """ViT image tower: patches + CLS -> transformer -> ln_post(CLS) @ proj."""

    def __init__(self, tower: VisionConfig, embed_dim: int) -> None:
        super().__init__()
        self.image_size = tuple(tower.image_size)
        grid_h, grid_w = tower.grid
        self.conv1 = nn.Conv2d(3, tower.width, tower.patch_size, stride=tower.patch_size, bias=False)
        self.class_embedding = nn.Parameter(torch.empty(tower.width))
        self.positional_embedding = nn.Parameter(torch.empty(1 + grid_h * grid_w, tower.width))
        self.ln_pre = nn.LayerNorm(tower.width, eps=tower.ln_eps)
        self.transformer = Transformer(tower, causal=False)
        self.ln_post = nn.LayerNorm(tower.width, eps=tower.ln_eps)
        self.proj = nn.Parameter(torch.empty(tower.width, embed_dim))

    def forward(self, images: Tensor) -> Tensor:
        """images: [B, 3, H, W] with (H, W) = config image_size -> [B, embed_dim], unnormalised."""
        if tuple(images.shape[-2:]) != self.image_size:
            raise ValueError(f"images are {tuple(images.shape[-2:])} (H, W); this model was built "
                             f"for {self.image_size}")
        x = self.conv1(images).flatten(2).transpose(1, 2)  # [B, gh * gw, C], row-major grid
        cls = self.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding.to(x.dtype)  # [B, 1 + gh * gw, C]
        x = self.transformer(self.ln_pre(x))
        return self.ln_post(x[:, 0]) @ self.proj


class ClipOutput(NamedTuple):
    image_features: Tensor  # [B, D], L2-normalised
    text_features: Tensor  # [B, D], L2-normalised
    logit_scale: Tensor  # [], exp(logit_scale) clamped to config.max_logit_scale


class CLIP(nn.Module):
    """OpenAI-layout CLIP. `encode_image`/`encode_text` give unnormalised [B, D] features."""

    def __init__(self, config: ClipConfig) -> None:
        super().__init__()
        self.config = config
        text = config.text
        self.visual = VisionTransformer(config.image, config.embed_dim)
        self.transformer = Transformer(text, causal=True)
        self.token_embedding = nn.Embedding(text.vocab_size, text.width)
        self.positional_embedding = nn.Parameter(torch.empty(text.context_length, text.width))
        self.ln_final = nn.LayerNorm(text.width, eps=text.ln_eps)
        self.text_projection = nn.Parameter(torch.empty(text.width, config.embed_dim))
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / config.init_temperature)))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """CLIP's initialisation: scaled normals, attention/MLP stds shrinking with depth."""
        vis, text = self.visual, self.config.text
        vis_scale = self.config.image.width ** -0.5
        for param in (vis.class_embedding, vis.positional_embedding, vis.proj):
            nn.init.normal_(param, std=vis_scale)
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)
        nn.init.normal_(self.text_projection, std=text.width ** -0.5)
        for tower, transformer in ((self.config.image, vis.transformer), (text, self.transformer)):
            attn_std = tower.width ** -0.5
            proj_std = attn_std * (2 * tower.layers) ** -0.5
            for block in transformer.resblocks:
                nn.init.normal_(block.attn.in_proj_weight, std=attn_std)
                nn.init.normal_(block.attn.out_proj.weight, std=proj_std)
                nn.init.zeros_(block.attn.out_proj.bias)
                nn.init.normal_(block.mlp.c_fc.weight, std=(2 * tower.width) ** -0.5)
                nn.init.normal_(block.mlp.c_proj.weight, std=proj_std)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Activation checkpointing per residual block in both towers, in training forwards with
        grad enabled only (evaluation and extraction are unchanged)."""
        self.visual.transformer.grad_checkpointing = enable
        self.transformer.grad_checkpointing = enable

    def encode_image(self, images: Tensor) -> Tensor:
        """images: [B, 3, H, W] -> [B, D] projected CLS feature, unnormalised."""
        return self.visual(images)

    def eot_positions(self, tokens: Tensor) -> Tensor:
        """tokens: [B, L] int -> [B] index of the pooled (EOT) token of each row."""
        eot = self.config.text.eot_token_id
        if eot is None:
            return tokens.argmax(dim=-1)
        return (tokens == eot).int().argmax(dim=-1)

    def encode_text(self, tokens: Tensor, trim: bool = True) -> Tensor:
        """tokens: [B, L] int, L <= context_length -> [B, D] projected EOT feature, unnormalised.

        The mask is causal, so tokens after the last EOT of the batch cannot change any EOT
        feature: with `trim` (eager training and inference) they are cut off before the
        transformer (exact, and faster on short captions). Export passes trim=False: every one of
        the L positions then runs, and no length is read from the data into the graph.
        """
        if tokens.shape[-1] > self.config.text.context_length:
            raise ValueError(f"tokens have length {tokens.shape[-1]}; the context length is "
                             f"{self.config.text.context_length}")
        eot = self.eot_positions(tokens)  # [B]
        if trim:
            tokens = tokens[:, :int(eot.max()) + 1 if eot.numel() else 0]
        length = tokens.shape[1]
        x = self.token_embedding(tokens) + self.positional_embedding[:length]  # [B, n, C]
        x = self.transformer(x)
        x = self.ln_final(x[torch.arange(x.shape[0], device=x.device), eot])  # [B, C]
        return x @ self.text_projection

    def forward(self, images: Tensor, tokens: Tensor) -> ClipOutput:
        """images: [B, 3, H, W], tokens: [B', L] -> L2-normalised [B, D], [B', D] and the logit scale."""
        image_features = F.normalize(self.encode_image(images), dim=-1)
        text_features = F.normalize(self.encode_text(tokens), dim=-1)
        scale = self.logit_scale.exp().clamp(max=self.config.max_logit_scale)
        return ClipOutput(image_features, text_features, scale)
