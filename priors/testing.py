"""Tiny random models that stand in for downloaded weights: built, saved with save_pretrained to a folder,
and then loaded by path through the same code users run (no network, no real weights). Used by the tests
and by ``benchmarks/priors_cost.py``; transformers and diffusers are imported only when a model is built."""

from __future__ import annotations

import json
from pathlib import Path

import torch


def make_tiny_dpt(path: Path) -> Path:
    """A random DPT depth model (~60k parameters) and its image processor (32x32 input) in ``path``."""
    import transformers

    torch.manual_seed(0)
    cfg = transformers.DPTConfig(
        hidden_size=16, num_hidden_layers=4, num_attention_heads=2, intermediate_size=32, image_size=32,
        patch_size=8, neck_hidden_sizes=[8, 8, 8, 8], fusion_hidden_size=8, backbone_out_indices=[0, 1, 2, 3],
        reassemble_factors=[4, 2, 1, 0.5])
    transformers.DPTForDepthEstimation(cfg).eval().save_pretrained(path)
    transformers.DPTImageProcessor(size={"height": 32, "width": 32}, keep_aspect_ratio=False).save_pretrained(path)
    return path


def _byte_symbols() -> list[str]:
    """The 256 printable stand-ins for bytes that byte-level BPE vocabularies (CLIP's, GPT-2's) use."""
    printable = set(range(33, 127)) | set(range(161, 173)) | set(range(174, 256))
    out, extra = [], 0
    for b in range(256):
        if b in printable:
            out.append(chr(b))
        else:
            out.append(chr(256 + extra))
            extra += 1
    return out


def make_tiny_img2img(path: Path) -> Path:
    """A random Stable-Diffusion image-to-image pipeline (UNet, VAE with 2 levels, 1-layer CLIP text encoder,
    a byte-level tokenizer without merges, Euler scheduler with trailing spacing as SD-Turbo) in ``path``."""
    import diffusers
    import transformers

    torch.manual_seed(0)
    unet = diffusers.UNet2DConditionModel(
        block_out_channels=(8, 16), layers_per_block=1, sample_size=16, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=16, norm_num_groups=4, attention_head_dim=2)
    vae = diffusers.AutoencoderKL(
        block_out_channels=[8, 16], in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * 2,
        up_block_types=["UpDecoderBlock2D"] * 2, latent_channels=4, norm_num_groups=4, sample_size=32)
    symbols = _byte_symbols()
    vocab = {s: i for i, s in enumerate(symbols + [s + "</w>" for s in symbols])}
    vocab["<|startoftext|>"], vocab["<|endoftext|>"] = len(vocab), len(vocab) + 1
    tok_dir = Path(path) / "_tokenizer_src"
    tok_dir.mkdir(parents=True, exist_ok=True)
    (tok_dir / "vocab.json").write_text(json.dumps(vocab))
    (tok_dir / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = transformers.CLIPTokenizer(str(tok_dir / "vocab.json"), str(tok_dir / "merges.txt"), model_max_length=77)
    text_encoder = transformers.CLIPTextModel(transformers.CLIPTextConfig(
        bos_token_id=0, eos_token_id=2, hidden_size=16, intermediate_size=16, num_attention_heads=2,
        num_hidden_layers=1, pad_token_id=1, vocab_size=len(vocab), max_position_embeddings=77, projection_dim=16))
    scheduler = diffusers.EulerDiscreteScheduler(timestep_spacing="trailing", num_train_timesteps=1000, steps_offset=1)
    pipe = diffusers.StableDiffusionImg2ImgPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(path)
    return path
