"""Monocular depth priors: an interface and a transformers implementation.

A ``DepthPrior`` maps images (B,H,W,3) in [0,1] to relative depth (B,H,W,1) in *depth order* (larger =
farther), at the images' resolution. Its values are only trusted up to scale and shift: use them through
``depth_losses``.

``TransformersDepthPrior`` runs any ``AutoModelForDepthEstimation`` (Depth Anything V2, DPT/MiDaS, ...)
from a local folder or a hub id. transformers is imported only when a prior is built, never when this
module is imported. Results are cached per image (content hash + model name) as .npy files, e.g. in the
run folder, so a resumed or repeated run does not recompute them.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Literal, Optional, Protocol, Sequence, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F

from sparsesplat.rasterizer.fileio import atomic_path


@runtime_checkable
class DepthPrior(Protocol):
    """Relative monocular depth for a batch of images."""

    name: str

    def __call__(self, images: torch.Tensor, names: Optional[Sequence[str]] = None) -> torch.Tensor:
        """images (B,H,W,3) float in [0,1] -> (B,H,W,1) relative depth in depth order (larger = farther)."""
        ...


class MissingDependency(ImportError):
    """An optional package (transformers, diffusers) that a prior needs is not installed."""


def require(package: str, what: str):
    """Import ``package`` or raise an error that says how to install it."""
    import importlib

    try:
        return importlib.import_module(package)
    except ImportError as e:
        raise MissingDependency(
            f"{what} needs the Python package '{package}', which is not installed; "
            f"install the priors extra: pip install 'sparsesplat[priors]' (or pip install {package})"
        ) from e


def resolve_model_path(model: str, what: str) -> tuple[str, bool]:
    """(path or hub id, local_files_only). A string that looks like a path must exist; otherwise it is
    taken as a hub id (downloaded by the hub client, or read from its cache when offline)."""
    p = Path(model).expanduser()
    looks_like_path = p.exists() or model.startswith((".", "/", "~")) or model.count("/") > 1
    if looks_like_path:
        if not p.is_dir():
            raise FileNotFoundError(
                f"{what} folder {p} does not exist; give a folder written by save_pretrained() or a hub id "
                "such as depth-anything/Depth-Anything-V2-Small-hf"
            )
        return str(p), True
    return model, False


class TransformersDepthPrior:
    """Depth from a transformers depth-estimation model.

    model: local folder (from ``save_pretrained``) or hub id. output: whether the model predicts
    ``disparity`` (relative inverse depth: DPT, Depth Anything relative), ``depth`` (metric models), or
    ``auto`` (from the config's ``depth_estimation_type``: ``metric`` -> depth, else disparity).
    Disparity is negated to depth order (an order-preserving map; the losses ignore scale and shift).
    """

    def __init__(self, model: str, device: str | torch.device = "cpu", batch_size: int = 4,
                 cache_dir: Optional[Path] = None, output: Literal["auto", "disparity", "depth"] = "auto"):
        transformers = require("transformers", "the depth prior")
        path, local = resolve_model_path(model, "depth model")
        transformers.utils.logging.disable_progress_bar()
        transformers.utils.logging.set_verbosity_error()
        try:
            self.processor = transformers.AutoImageProcessor.from_pretrained(path, local_files_only=local)
            self.model = transformers.AutoModelForDepthEstimation.from_pretrained(path, local_files_only=local)
        except (OSError, ValueError) as e:
            raise FileNotFoundError(
                f"could not load the depth model '{model}': {e}. Give a folder with config.json, the weights and "
                "preprocessor_config.json, or a hub id (needs internet or the hub cache)"
            ) from e
        self.device = torch.device(device)
        self.model.to(self.device).eval()
        self.batch_size = batch_size
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.name = model
        if output == "auto":
            kind = getattr(self.model.config, "depth_estimation_type", None)
            output = "depth" if kind == "metric" else "disparity"
        self.output = output

    def _key(self, image: np.ndarray) -> str:
        h = hashlib.sha1(self.name.encode())
        h.update(str(image.shape).encode())
        h.update(image.tobytes())
        return h.hexdigest()[:16]

    def _cache_file(self, key: str, name: Optional[str]) -> Optional[Path]:
        """Only named images are cached (photos); unnamed ones (renders, pseudo views) change every call."""
        if self.cache_dir is None or not name:
            return None
        return self.cache_dir / f"{Path(name).stem}_{key}.npy"

    @torch.no_grad()
    def _predict(self, batch: list[np.ndarray]) -> list[np.ndarray]:
        inputs = self.processor(images=batch, return_tensors="pt")
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        pred = self.model(**inputs).predicted_depth  # (B,h,w)
        if pred.ndim == 4:
            pred = pred[:, 0]
        H, W = batch[0].shape[:2]
        pred = F.interpolate(pred[:, None].float(), size=(H, W), mode="bilinear", align_corners=False)[:, 0]
        if self.output == "disparity":
            pred = -pred
        return list(pred.cpu().numpy().astype(np.float32))

    def __call__(self, images: torch.Tensor, names: Optional[Sequence[str]] = None) -> torch.Tensor:
        imgs = (images.detach().clamp(0, 1).cpu().numpy() * 255 + 0.5).astype(np.uint8)
        result: list[Optional[np.ndarray]] = [None] * len(imgs)
        todo = []
        for i, img in enumerate(imgs):
            f = self._cache_file(self._key(img), names[i] if names else None)
            if f is not None and f.exists():
                result[i] = np.load(f)
            else:
                todo.append((i, f))
        by_size: dict[tuple, list] = {}
        for i, f in todo:  # the processor batches images of one size
            by_size.setdefault(imgs[i].shape, []).append((i, f))
        for group in by_size.values():
            for s in range(0, len(group), self.batch_size):
                chunk = group[s: s + self.batch_size]
                for (i, f), depth in zip(chunk, self._predict([imgs[i] for i, _ in chunk])):
                    result[i] = depth
                    if f is not None:
                        f.parent.mkdir(parents=True, exist_ok=True)
                        with atomic_path(f) as tmp:
                            with open(tmp, "wb") as fh:
                                np.save(fh, depth)
        return torch.from_numpy(np.stack(result))[..., None].to(images.device)
