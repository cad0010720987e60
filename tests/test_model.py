"""CLIP model: configs and presets, shapes, pooling, attention layout, autocast."""

from __future__ import annotations

from dataclasses import asdict, replace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cpcl.model import CLIP, CLIP_PRESETS, ClipConfig, clip_preset
from cpcl.model.clip import SelfAttention
from cpcl.utils.errors import ConfigError

EOT = 49407  # CLIP BPE end-of-text id (the largest id)


def tokens_with_eot(batch: int, length: int, positions: list[int], seed: int = 0) -> torch.Tensor:
    """[batch, length] random ids below EOT, EOT at `positions[i]`, zero padding after it."""
    gen = torch.Generator().manual_seed(seed)
    tokens = torch.randint(1, EOT - 1, (batch, length), generator=gen)
    for row, pos in enumerate(positions):
        tokens[row, pos] = EOT
        tokens[row, pos + 1:] = 0
    return tokens


@pytest.fixture
def tiny() -> CLIP:
    torch.manual_seed(0)
    return CLIP(clip_preset("tiny")).eval()


def test_presets_and_unknown_name() -> None:
    assert {"vit-b-16", "tiny", "small"} <= set(CLIP_PRESETS)
    with pytest.raises(ConfigError, match="valid: .*vit-b-16"):
        clip_preset("vit-b-32")
    vit = clip_preset("vit-b-16", image_size=(384, 128))
    assert vit.image.grid == (24, 8) and vit.embed_dim == 512 and vit.text.heads == 8
    with torch.device("meta"):
        model = CLIP(clip_preset("vit-b-16"))
    assert sum(p.numel() for p in model.parameters()) == 149_620_737  # OpenAI ViT-B/16


def test_config_validation_and_dict_round_trip() -> None:
    config = clip_preset("tiny")
    assert ClipConfig.from_dict(asdict(config)) == config
    with pytest.raises(ConfigError, match="heads"):
        replace(config, image=replace(config.image, heads=3))
    with pytest.raises(ConfigError, match="multiples of image.patch_size"):
        config.with_sizes(image_size=(30, 16))
    with pytest.raises(ConfigError, match="act"):
        replace(config, text=replace(config.text, act="relu6"))
    with pytest.raises(ConfigError, match="unknown field.*depth"):
        ClipConfig.from_dict({**asdict(config), "depth": 3})


def test_shapes_and_normalised_forward(tiny: CLIP) -> None:
    images = torch.randn(3, 3, 32, 16)
    tokens = tokens_with_eot(4, 77, [5, 10, 76, 1])
    assert tiny.encode_image(images).shape == (3, 64)
    assert tiny.encode_text(tokens).shape == (4, 64)
    out = tiny(images, tokens)
    assert torch.allclose(out.image_features.norm(dim=-1), torch.ones(3), atol=1e-5)
    assert torch.allclose(out.text_features.norm(dim=-1), torch.ones(4), atol=1e-5)
    assert out.logit_scale.item() == pytest.approx(1 / 0.07, rel=1e-5)
    with pytest.raises(ValueError, match="built for"):
        tiny.encode_image(torch.randn(1, 3, 16, 32))
    with pytest.raises(ValueError, match="context length"):
        tiny.encode_text(torch.zeros(1, 78, dtype=torch.long))


def reference_encode_text(model: CLIP, tokens: torch.Tensor) -> torch.Tensor:
    """Slow reference: full-length sequence, explicit -inf causal mask, nn.MultiheadAttention."""
    x = model.token_embedding(tokens) + model.positional_embedding[:tokens.shape[1]]
    length = tokens.shape[1]
    mask = torch.full((length, length), float("-inf")).triu(1)
    for block in model.transformer.resblocks:
        x = x + multihead_reference(block.attn, block.ln_1(x), mask)
        x = x + block.mlp(block.ln_2(x))
    x = model.ln_final(x)
    return x[torch.arange(len(tokens)), tokens.argmax(-1)] @ model.text_projection


def multihead_reference(attn: SelfAttention, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    width = x.shape[-1]
    mha = nn.MultiheadAttention(width, attn.heads, batch_first=True)
    mha.load_state_dict(attn.state_dict())  # same parameter names and layout
    return mha(x, x, x, attn_mask=mask, need_weights=False)[0]


def test_attention_matches_multihead_attention(tiny: CLIP) -> None:
    attn = tiny.visual.transformer.resblocks[0].attn
    x = torch.randn(2, 7, 128)
    mask = torch.full((7, 7), float("-inf")).triu(1)
    with torch.no_grad():
        torch.testing.assert_close(attn(x, causal=False), multihead_reference(attn, x, None), atol=1e-5, rtol=0)
        torch.testing.assert_close(attn(x, causal=True), multihead_reference(attn, x, mask), atol=1e-5, rtol=0)


def test_text_pools_at_eot_and_trimming_is_exact(tiny: CLIP) -> None:
    tokens = tokens_with_eot(4, 77, [3, 20, 76, 9])
    with torch.no_grad():
        torch.testing.assert_close(tiny.encode_text(tokens), reference_encode_text(tiny, tokens),
                                   atol=1e-5, rtol=0)
        # the padding after the EOT cannot matter (causal mask)
        noisy = tokens.clone()
        noisy[0, 4:] = 7
        assert torch.allclose(tiny.encode_text(noisy)[0], tiny.encode_text(tokens)[0], atol=1e-6)


def test_first_occurrence_pooling_with_eot_token_id() -> None:
    config = clip_preset("tiny")
    torch.manual_seed(0)
    argmax_model = CLIP(config).eval()
    eos_model = CLIP(replace(config, text=replace(config.text, eot_token_id=5))).eval()
    eos_model.load_state_dict(argmax_model.state_dict())
    tokens = tokens_with_eot(2, 12, [4, 8])
    tokens[:, 2] = 5  # first 5 at position 2
    tokens[0, 6] = 5
    assert eos_model.eot_positions(tokens).tolist() == [2, 2]
    assert argmax_model.eot_positions(tokens).tolist() == [4, 8]
    with torch.no_grad():
        direct = argmax_model.ln_final(argmax_model.transformer(
            argmax_model.token_embedding(tokens[:, :3]) + argmax_model.positional_embedding[:3]))[:, 2]
        torch.testing.assert_close(eos_model.encode_text(tokens), direct @ argmax_model.text_projection)


def test_backward_reaches_both_towers(tiny: CLIP) -> None:
    tiny.train()
    out = tiny(torch.randn(2, 3, 32, 16), tokens_with_eot(2, 77, [4, 6]))
    logits = out.logit_scale * out.image_features @ out.text_features.T
    loss = F.cross_entropy(logits, torch.arange(2))
    loss.backward()
    for name in ("visual.conv1.weight", "visual.proj", "text_projection", "logit_scale",
                 "transformer.resblocks.0.attn.in_proj_weight"):
        grad = tiny.get_parameter(name).grad
        assert grad is not None and grad.abs().sum() > 0, name


def test_bf16_autocast_close_to_fp32(tiny: CLIP) -> None:
    images = torch.randn(4, 3, 32, 16)
    tokens = tokens_with_eot(4, 77, [5, 9, 30, 2])
    with torch.no_grad():
        ref = tiny(images, tokens)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = tiny(images, tokens)
    assert tiny.visual.conv1.weight.dtype == torch.float32  # autocast, not a cast of the model
    for name in ("image_features", "text_features"):
        a, b = getattr(low, name).float(), getattr(ref, name)
        assert torch.isfinite(a).all()
        assert F.cosine_similarity(a, b, dim=-1).min() > 0.99, name


def _loss_and_grads(model: CLIP, images: torch.Tensor, tokens: torch.Tensor,
                    dtype: torch.dtype | None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """InfoNCE of one forward (autocast to dtype, or fp32 for None) and every parameter's gradient."""
    model.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
        out = model(images, tokens)
    logits = out.logit_scale * out.image_features.float() @ out.text_features.float().T
    loss = F.cross_entropy(logits, torch.arange(len(images)))
    loss.backward()
    return loss.detach(), {name: p.grad.clone() for name, p in model.named_parameters()}


@pytest.mark.parametrize("dtype", [None, torch.bfloat16])
def test_grad_checkpointing_gives_the_same_outputs_and_gradients(tiny: CLIP, dtype) -> None:
    images, tokens = torch.randn(3, 3, 32, 16), tokens_with_eot(3, 77, [4, 9, 6])
    tiny.train()
    calls = {"n": 0}
    for block in (*tiny.visual.transformer.resblocks, *tiny.transformer.resblocks):  # counts block forwards
        block.ln_1.register_forward_hook(lambda *_: calls.__setitem__("n", calls["n"] + 1))
    blocks = len(tiny.visual.transformer.resblocks) + len(tiny.transformer.resblocks)
    ref_loss, ref_grads = _loss_and_grads(tiny, images, tokens, dtype)
    assert calls["n"] == blocks
    tiny.set_grad_checkpointing(True)
    calls["n"] = 0
    loss, grads = _loss_and_grads(tiny, images, tokens, dtype)
    assert calls["n"] == 2 * blocks  # each block's forward ran again in backward
    torch.testing.assert_close(loss, ref_loss, rtol=0, atol=0)
    for name, grad in grads.items():
        torch.testing.assert_close(grad, ref_grads[name], rtol=1e-6, atol=1e-7, msg=name)
    calls["n"] = 0
    with torch.no_grad():  # extraction and evaluation never recompute
        tiny(images, tokens)
    tiny.eval()
    _loss_and_grads(tiny, images, tokens, dtype)
    assert calls["n"] == 2 * blocks
