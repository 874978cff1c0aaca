"""Sparse-view protocols: the published train/test view ids of the standard benchmarks.

Each function returns ``(train_ids, test_ids)``. ``split_for`` maps a protocol name ("llff3", "blender8",
"dtu3", "mip360-24", ...) onto a scene listing and checks the scene has the ids it needs.
"""

from __future__ import annotations

import re

import numpy as np

from .scene import SceneListing

BLENDER8_TRAIN = [26, 86, 2, 55, 75, 93, 16, 73]
DTU_TRAIN = [25, 22, 28, 40, 44, 48, 0, 8, 13]
DTU_EXCLUDE = [3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 36, 37, 38, 39]
PROTOCOLS = ("llff3", "llff6", "llff9", "blender8", "dtu3", "dtu6", "dtu9", "mip360-12", "mip360-24")


def llff(n_views: int, n_images: int) -> tuple[list[int], list[int]]:
    """RegNeRF/FreeNeRF LLFF split over sorted image names: test = every 8th image (0, 8, ...);
    train = ``n_views`` chosen evenly (rounded linspace) over the others."""
    test = [i for i in range(n_images) if i % 8 == 0]
    rest = [i for i in range(n_images) if i % 8 != 0]
    if n_views > len(rest):
        raise ValueError(f"llff{n_views} needs {n_views} non-test images, the scene has {len(rest)}")
    picks = np.round(np.linspace(0, len(rest) - 1, n_views)).astype(int)
    return [rest[j] for j in picks], test


def mip360(n_views: int, n_images: int) -> tuple[list[int], list[int]]:
    """Mip-NeRF360 sparse split: the same rule as ``llff``."""
    return llff(n_views, n_images)


def blender8(n_test: int = 200) -> tuple[list[int], list[int]]:
    """DietNeRF 8 views: train ids of the train split, test = every 8th image of the test split
    (0, 8, ..., 192 for the usual 200: 25 images). Ids are split-local."""
    return list(BLENDER8_TRAIN), list(range(0, n_test, 8))


def dtu(n_views: int) -> tuple[list[int], list[int]]:
    """RegNeRF DTU split over the 49 sorted views: train = the first ``n_views`` of 25, 22, 28, 40, 44,
    48, 0, 8, 13; test = the 25 views in neither that list nor the excluded 3-7, 16-21, 36-39."""
    if not 1 <= n_views <= len(DTU_TRAIN):
        raise ValueError(f"dtu protocol has 1 to {len(DTU_TRAIN)} training views, got {n_views}")
    test = [i for i in range(49) if i not in DTU_TRAIN and i not in DTU_EXCLUDE]
    return DTU_TRAIN[:n_views], test


def parse(protocol: str) -> tuple[str, int]:
    """"llff3" -> ("llff", 3), "mip360-24" -> ("mip360", 24); ValueError for unknown names."""
    m = re.fullmatch(r"(llff|blender|dtu|mip360-?)(\d+)", protocol.strip().lower())
    if m is None or protocol.strip().lower() not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}")
    return m.group(1).rstrip("-"), int(m.group(2))


def split_for(protocol: str, listing: SceneListing) -> tuple[list[int], list[int]]:
    """(train, test) indices into ``listing.views`` for ``protocol``.

    Raises ValueError naming the protocol, the scene and the missing ids when the scene lacks views.
    """
    family, k = parse(protocol)
    n = len(listing.views)
    where = f"{listing.source_format} scene {listing.path}"
    if family == "blender":
        if "train" not in listing.splits or "test" not in listing.splits:
            raise ValueError(
                f"protocol {protocol} needs a train and a test split (transforms_train.json and "
                f"transforms_test.json); the {where} has splits {sorted(listing.splits) or 'none'}"
            )
        tr_split, te_split = listing.splits["train"], listing.splits["test"]
        train, test = blender8(len(te_split))
        missing = [i for i in train if i >= len(tr_split)]
        if missing:
            raise ValueError(
                f"protocol {protocol}: the {where} has {len(tr_split)} train-split images, "
                f"missing train ids {missing}"
            )
        return [tr_split[i] for i in train], [te_split[i] for i in test]
    if family == "dtu":
        train, test = dtu(k)
    else:
        try:
            train, test = llff(k, n)
        except ValueError as e:
            raise ValueError(f"protocol {protocol}: the {where} has {n} images: {e}") from None
    missing = sorted(i for i in set(train) | set(test) if i >= n)
    if missing:
        raise ValueError(f"protocol {protocol}: the {where} has {n} images, missing ids {missing}")
    return train, test
