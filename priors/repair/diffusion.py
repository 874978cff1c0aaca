"""Single-step diffusion repair (SD-Turbo / Difix style) through diffusers image-to-image.

The render is noised to a low timestep (~199 of 1000) and denoised in one step with the prompt "remove
degradation" and no classifier-free guidance: the structure of the render survives, the artifacts that a
denoiser finds unlikely (floaters, blur, holes) are replaced. With ``use_reference`` the nearest training
photo is placed beside the render in the same canvas, so self-attention can copy its appearance (a
model-agnostic stand-in for Difix's reference-view attention); only the render's half is kept.

Images larger than ``tile`` pixels are processed in overlapping tiles blended with linear ramps. diffusers
is imported only when a repairer is built; the weights come from a local folder (``save_pretrained``
layout) or a hub id such as ``stabilityai/sd-turbo``. fp16 on CUDA, fp32 on CPU.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn.functional as F

from sparsesplat.rasterizer import Cameras

from ..depth import require, resolve_model_path


def _ramp(n: int, overlap: int, first: bool, last: bool, device) -> torch.Tensor:
    """1-D blending weights of a tile: rising over ``overlap`` pixels unless at the border."""
    w = torch.ones(n, device=device)
    k = min(overlap, n // 2)
    if k > 0:
        r = (torch.arange(k, device=device, dtype=torch.float32) + 1) / (k + 1)
        if not first:
            w[:k] = r
        if not last:
            w[n - k:] = r.flip(0)
    return w


def _starts(size: int, tile: int, overlap: int) -> list[int]:
    if size <= tile:
        return [0]
    stride = tile - overlap
    starts = list(range(0, size - tile, stride)) + [size - tile]
    return sorted(set(starts))


def tiled(fn: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, tile: int, overlap: int) -> torch.Tensor:
    """Apply ``fn`` ((B,C,h,w) -> (B,C',h,w)) to overlapping ``tile`` x ``tile`` crops of (B,C,H,W) images
    and blend the results with linear ramps over the overlaps (weights sum to 1 at every pixel)."""
    B, C, H, W = images.shape
    if H <= tile and W <= tile:
        return fn(images)
    out = None
    total = torch.zeros(1, 1, H, W, device=images.device)
    ys, xs = _starts(H, tile, overlap), _starts(W, tile, overlap)
    for yi, y in enumerate(ys):
        for xi, x in enumerate(xs):
            h, w = min(tile, H), min(tile, W)
            res = fn(images[:, :, y: y + h, x: x + w]).float()
            if out is None:
                out = torch.zeros(B, res.shape[1], H, W, device=images.device)
            wy = _ramp(h, overlap, yi == 0, yi == len(ys) - 1, images.device)
            wx = _ramp(w, overlap, xi == 0, xi == len(xs) - 1, images.device)
            wt = (wy[:, None] * wx[None, :])[None, None]
            out[:, :, y: y + h, x: x + w] += res * wt
            total[:, :, y: y + h, x: x + w] += wt
    return out / total


class DiffusionRepairer:
    """Repair with a diffusers image-to-image pipeline in one denoising step.

    model: local folder or hub id of an image-to-image capable pipeline (e.g. ``stabilityai/sd-turbo``).
    timestep: the noise level of the single step (of 1000 training timesteps). tile/overlap: tiling of
    large images in pixels. use_reference: put the reference photo beside the render (doubles the work).
    """

    name = "diffusion"

    def __init__(self, model: str, device: str | torch.device = "cpu", timestep: int = 199,
                 prompt: str = "remove degradation", tile: int = 512, overlap: int = 64,
                 use_reference: bool = True, seed: int = 0):
        diffusers = require("diffusers", "the diffusion repair prior")
        require("transformers", "the diffusion repair prior")
        path, local = resolve_model_path(model, "diffusion model")
        self.device = torch.device(device)
        self.dtype = torch.float16 if self.device.type == "cuda" else torch.float32
        diffusers.utils.logging.set_verbosity_error()
        diffusers.utils.logging.disable_progress_bar()
        try:
            try:
                pipe = diffusers.AutoPipelineForImage2Image.from_pretrained(
                    path, torch_dtype=self.dtype, local_files_only=local, safety_checker=None)
            except TypeError:
                pipe = diffusers.AutoPipelineForImage2Image.from_pretrained(path, torch_dtype=self.dtype,
                                                                            local_files_only=local)
        except (OSError, ValueError, EnvironmentError) as e:
            raise FileNotFoundError(
                f"could not load the diffusion model '{model}': {e}. Give a diffusers pipeline folder "
                "(model_index.json, unet/, vae/, text_encoder/, tokenizer/, scheduler/) or a hub id such as "
                "stabilityai/sd-turbo (needs internet or the hub cache)"
            ) from e
        self.pipe = pipe.to(self.device)
        self.pipe.set_progress_bar_config(disable=True)
        # one step at `timestep`: n steps spaced 1000/n apart, of which strength 1/n runs only the last
        train_steps = int(getattr(self.pipe.scheduler.config, "num_train_timesteps", 1000))
        self.num_steps = max(1, round(train_steps / (timestep + 1)))
        self.strength = 1.0 / self.num_steps
        self.timestep, self.prompt, self.seed = timestep, prompt, seed
        self.tile, self.overlap, self.use_reference = tile, overlap, use_reference
        vae_factor = getattr(self.pipe, "vae_scale_factor", 8)
        levels = len(getattr(self.pipe.unet.config, "block_out_channels", (0,) * 4)) if hasattr(self.pipe, "unet") else 4
        self.multiple = int(vae_factor * 2 ** max(levels - 1, 0))

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        """(B,3,h,w) in [0,1] -> one denoising step, same size (padded to the model's multiple, cropped)."""
        B, _, h, w = x.shape
        m = self.multiple
        ph, pw = (-h) % m, (-w) % m
        xp = F.pad(x, (0, pw, 0, ph), mode="replicate") if (ph or pw) else x
        g = torch.Generator(device="cpu").manual_seed(self.seed)
        out = self.pipe(prompt=[self.prompt] * B, image=xp.to(self.device, self.dtype), strength=self.strength,
                        num_inference_steps=self.num_steps, guidance_scale=0.0, output_type="pt", generator=g)
        return out.images.float()[:, :, :h, :w].to(x.device)

    @torch.no_grad()
    def repair(self, render: torch.Tensor, references: Optional[torch.Tensor] = None,
               cameras: Optional[Cameras] = None) -> torch.Tensor:
        """render (B,H,W,3) in [0,1], references (B,H,W,3) or None -> (B,H,W,3) in [0,1]."""
        x = render.detach().float().clamp(0, 1).permute(0, 3, 1, 2)
        if self.use_reference and references is not None:
            ref = references.detach().float().clamp(0, 1).permute(0, 3, 1, 2).to(x.device)
            if ref.shape[-2:] != x.shape[-2:]:
                ref = F.interpolate(ref, size=x.shape[-2:], mode="bilinear", align_corners=False)
            # each tile of the render is denoised beside the same tile of the reference
            def beside(z: torch.Tensor) -> torch.Tensor:
                return self._run(torch.cat([z[:, :3], z[:, 3:]], dim=3))[..., : z.shape[-1]]

            out = tiled(beside, torch.cat([x, ref], dim=1), self.tile, self.overlap)
        else:
            out = tiled(self._run, x, self.tile, self.overlap)
        return out.clamp(0, 1).permute(0, 2, 3, 1).to(render.device)
