"""ImageFolder loading: layouts, class names, held-out split, unreadable images, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests_support import make_image_folder

from pfeddc.client.data import align_to, load_client_data
from pfeddc.client.folders import DataError, choose_test_split, scan
from pfeddc.client.model.images import FileImageSet, ImageSet, batches


def test_split_layout_is_used_as_given(tmp_path: Path) -> None:
    root = make_image_folder(tmp_path / "d", ["ankle_boot", "t-shirt"], 4, seed=0, split=True)
    data, test_paths = load_client_data(root, 16, None)
    assert data.classnames == ["ankle boot", "t shirt"]
    assert (len(data.train), len(data.test), test_paths) == (8, 4, [])
    assert isinstance(data.train, ImageSet)
    assert data.train.images.shape == (8, 3, 16, 16) and data.train.images.dtype.is_floating_point is False


def test_held_out_split_is_seeded_per_class_and_reusable(tmp_path: Path) -> None:
    root = make_image_folder(tmp_path / "d", ["a", "b"], 10, seed=0)
    data, test_paths = load_client_data(root, 8, None, test_fraction=0.2, seed=3)
    assert len(data.test) == 4 and len(data.train) == 16
    _, again = scan(root)
    assert isinstance(again, list)
    assert choose_test_split(again, root, 0.2, 3) == test_paths
    assert choose_test_split(again, root, 0.2, 4) != test_paths
    data2, same = load_client_data(root, 8, test_paths)
    assert same == test_paths and len(data2.test) == 4


def test_classnames_files_override_folder_names(tmp_path: Path) -> None:
    root = make_image_folder(tmp_path / "d", ["c0", "c1"], 3, seed=0)
    (root / "classnames.txt").write_text("cat\ndog\n")
    assert load_client_data(root, 8, None)[0].classnames == ["cat", "dog"]
    (root / "classnames.json").write_text(json.dumps({"c0": "tabby cat", "c1": "beagle"}))
    assert load_client_data(root, 8, None)[0].classnames == ["tabby cat", "beagle"]


def test_unreadable_images_are_skipped_and_counted(tmp_path: Path) -> None:
    root = make_image_folder(tmp_path / "d", ["a", "b"], 5, seed=0)
    (root / "a" / "broken.png").write_bytes(b"not an image")
    (root / "b" / "empty.jpg").write_bytes(b"")
    data, _ = load_client_data(root, 8, None)
    assert data.skipped == 2 and len(data.train) + len(data.test) == 10


@pytest.mark.parametrize(
    ("layout", "message"),
    [("missing", "is not a directory"), ("no_classes", "no class folders"), ("empty_class", "without images"),
     ("no_images", "no images in any of the 30 folders .*'f07' and 22 more.*one folder of images per class")],
)
def test_bad_layouts_fail_with_clear_errors(tmp_path: Path, layout: str, message: str) -> None:
    root = tmp_path / "d"
    if layout != "missing":
        root.mkdir()
    if layout == "empty_class":
        make_image_folder(root, ["a"], 2, seed=0)
        (root / "b").mkdir()
    if layout == "no_images":  # --data pointed at the wrong folder: names a few folders, counts the rest
        for i in range(30):
            (root / f"f{i:02d}").mkdir()
    with pytest.raises(DataError, match=message):
        load_client_data(root, 8, None)


def test_large_sets_stream_from_disk_and_give_the_same_batches(tmp_path: Path) -> None:
    import torch

    root = make_image_folder(tmp_path / "d", ["a", "b", "c"], 6, seed=0, split=True)
    (root / "train" / "a" / "broken.png").write_bytes(b"not a png")
    small, _ = load_client_data(root, 16, None)
    streamed, _ = load_client_data(root, 16, None, in_memory_bytes=1)  # nothing fits: stay on disk
    assert isinstance(streamed.train, FileImageSet) and isinstance(small.train, ImageSet)
    assert small.skipped == 1 and len(small.train) == 18 and len(streamed.train) == 19  # found when read
    order = torch.arange(len(streamed.train))
    for workers in (0, 2):
        got = list(batches(streamed.train, order, 5, workers))
        assert sum(len(y) for _, _, y in got) == 18  # the broken file is left out of its batch
        pixels = torch.cat([x for _, x, _ in got])
        assert torch.equal(pixels, small.train.images) and torch.equal(torch.cat([y for _, _, y in got]),
                                                                        small.train.labels)


def test_align_to_labels_by_the_federation_list_and_names_folders_it_lacks(tmp_path: Path) -> None:
    root = make_image_folder(tmp_path / "d", ["ankle_boot", "T-Shirt"], 3, seed=0, split=True)
    data, _ = load_client_data(root, 8, None)
    before = [data.classnames[int(y)] for y in data.train.labels]
    federation = ["bag", "t shirt", "ankle-boot"]
    aligned = align_to(data, federation)
    assert [data.classnames[int(y)] for y in data.train.labels] == before  # the site's own labels are left as they are
    assert aligned.classnames == federation
    assert [federation[int(y)] for y in aligned.train.labels] == [n.replace("ankle boot", "ankle-boot").lower()
                                                                  for n in before]
    with pytest.raises(DataError, match=r"\['ankle boot'\] are not among the federation's classes \(bag, t shirt\)"):
        align_to(load_client_data(root, 8, None)[0], ["bag", "t shirt"])
