"""Published sparse-view splits and their mapping onto scenes."""

from pathlib import Path

import numpy as np
import pytest

from sparsesplat.datasets import protocols
from sparsesplat.datasets.scene import SceneListing, ViewRecord


def _listing(n, splits=None, fmt="llff"):
    views = [ViewRecord(f"{i:03d}.png", Path(f"{i:03d}.png"), np.eye(3), np.eye(4), 4, 3) for i in range(n)]
    return SceneListing(views=views, source_format=fmt, path=Path("/scene"), splits=splits or {})


def test_llff_fern_three_views():
    assert protocols.llff(3, 20) == ([1, 10, 19], [0, 8, 16])


def test_llff_six_and_nine_views_avoid_test_ids():
    for k in (6, 9):
        train, test = protocols.llff(k, 20)
        assert len(train) == k and len(set(train)) == k
        assert not set(train) & set(test)
        assert train[0] == 1 and train[-1] == 19


def test_mip360_matches_llff():
    assert protocols.mip360(12, 200) == protocols.llff(12, 200)
    train, test = protocols.mip360(24, 185)
    assert len(train) == 24 and test == list(range(0, 185, 8))


def test_blender8_ids():
    train, test = protocols.blender8()
    assert train == [26, 86, 2, 55, 75, 93, 16, 73]
    assert test == list(range(0, 200, 8)) and len(test) == 25 and test[-1] == 192


def test_dtu_ids():
    train, test = protocols.dtu(3)
    assert train == [25, 22, 28]
    assert len(test) == 25
    assert test == [1, 2, 9, 10, 11, 12, 14, 15, 23, 24, 26, 27, 29, 30, 31, 32, 33, 34, 35, 41, 42, 43, 45, 46, 47]
    assert protocols.dtu(9)[0] == [25, 22, 28, 40, 44, 48, 0, 8, 13]
    assert protocols.dtu(6)[1] == test  # the test set does not depend on the number of views


@pytest.mark.parametrize("name", protocols.PROTOCOLS)
def test_parse_accepts_all_names(name):
    family, k = protocols.parse(name)
    assert family in ("llff", "blender", "dtu", "mip360") and k in (3, 6, 9, 8, 12, 24)


def test_parse_rejects_unknown():
    with pytest.raises(ValueError, match="unknown protocol 'llff4'.*llff3"):
        protocols.parse("llff4")


def test_split_for_blender_maps_split_ids():
    listing = _listing(300, {"train": list(range(100)), "test": list(range(100, 300))}, "blender")
    train, test = protocols.split_for("blender8", listing)
    assert train == [26, 86, 2, 55, 75, 93, 16, 73]
    assert test == [100 + i for i in range(0, 200, 8)]


def test_split_for_missing_ids_names_protocol_scene_and_ids():
    with pytest.raises(ValueError, match=r"dtu3.*dtu scene /scene has 20 images, missing ids \[22, 23, 24, 25, 26"):
        protocols.split_for("dtu3", _listing(20, fmt="dtu"))
    with pytest.raises(ValueError, match=r"blender8.*missing train ids \[86, 55, 75, 93, 73\]"):
        protocols.split_for("blender8", _listing(80, {"train": list(range(50)), "test": list(range(50, 80))}))
    with pytest.raises(ValueError, match="blender8 needs a train and a test split"):
        protocols.split_for("blender8", _listing(20))
    with pytest.raises(ValueError, match="llff9.*has 8 images"):
        protocols.split_for("llff9", _listing(8))
