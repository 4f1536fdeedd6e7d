"""ImageNetDataModule on a tiny ImageFolder of PNG and JPEG files written by the test (3 classes).

Every image is 40 pixels wide and 50 high: its left half one color that identifies the file, its
right half white. Evaluation (resize the shorter side to 36, center crop 32) keeps both halves in
place, so the output's left columns give the file back and its right columns are white.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lit_robust.data.imagenet import ImageNetDataModule, class_folders, per_class_subset

WNIDS = ["n01440764", "n01443537", "n01484850"]
TRAIN_PER_CLASS = 6
TEST_PER_CLASS = 4
NUM_TRAIN = len(WNIDS) * TRAIN_PER_CLASS
NUM_TEST = len(WNIDS) * TEST_PER_CLASS
VAL_SIZE = 5
SIZE = {"image_size": 32, "resize_size": 36}
JPEG_TOLERANCE = 0.05  # flat JPEG regions decode within a few levels; file colors differ by >= 0.11


def file_color(label: int, index: int, split: str) -> tuple[int, int, int]:
    """The color of the left half of one file: distinct for every (class, index, split)."""
    return 20 + 80 * label, 10 + 30 * index, 40 if split == "train" else 200


def write_image(path: Path, color: tuple[int, int, int]) -> None:
    pixels = np.full((50, 40, 3), 255, dtype=np.uint8)  # height 50, width 40
    pixels[:, :20] = color
    Image.fromarray(pixels).save(path, quality=95)


@pytest.fixture
def fake_imagenet(tmp_path) -> tuple[Path, dict[str, tuple[int, int, int]]]:
    """``tmp_path/train/<wnid>/`` (6 images) and ``tmp_path/val/<wnid>/`` (4): even index PNG, odd JPEG."""
    colors = {}
    for split, count in (("train", TRAIN_PER_CLASS), ("val", TEST_PER_CLASS)):
        for label, wnid in enumerate(WNIDS):
            folder = tmp_path / split / wnid
            folder.mkdir(parents=True)
            for index in range(count):
                path = folder / f"{wnid}_{index}.{'png' if index % 2 == 0 else 'JPEG'}"
                colors[str(path)] = file_color(label, index, split)
                write_image(path, colors[str(path)])
    return tmp_path, colors


def make_datamodule(data_dir, **kwargs) -> ImageNetDataModule:
    kwargs = {**SIZE, "val_size": VAL_SIZE, "batch_size": 4, "num_workers": 0, **kwargs}
    return ImageNetDataModule(data_dir=str(data_dir), **kwargs)


def assert_evaluation_image(subset, position: int, colors) -> None:
    """Item ``position`` of a validation/test subset is its own file, resized and center cropped."""
    image, label = subset[position]
    path, expected_label = subset.dataset.samples[subset.indices[position]]
    assert label == expected_label == WNIDS.index(Path(path).parent.name)
    assert image.shape == (3, 32, 32) and image.dtype == torch.float32
    assert image.min() >= 0.0 and image.max() <= 1.0
    color = torch.tensor(colors[path], dtype=torch.float32).view(3, 1, 1) / 255
    tolerance = 1e-6 if path.endswith(".png") else JPEG_TOLERANCE
    assert (image[:, :, :12] - color).abs().max() <= tolerance  # the left half: the file's color
    assert (image[:, :, -12:] - 1.0).abs().max() <= tolerance  # the right half: white
    assert torch.equal(subset[position][0], image)  # deterministic


def test_splits_shapes_range_and_files(fake_imagenet):
    data_dir, colors = fake_imagenet
    datamodule = make_datamodule(data_dir)
    datamodule.setup()
    assert len(datamodule.train_set) == NUM_TRAIN - VAL_SIZE
    assert len(datamodule.val_set) == VAL_SIZE
    assert len(datamodule.test_set) == NUM_TEST
    for position in range(VAL_SIZE):
        assert_evaluation_image(datamodule.val_set, position, colors)
    for position in range(NUM_TEST):
        assert_evaluation_image(datamodule.test_set, position, colors)
    assert {Path(path).parent.parent.name for path, _ in datamodule.test_set.dataset.samples} == {"val"}
    assert {Path(path).parent.parent.name for path, _ in datamodule.val_set.dataset.samples} == {"train"}


def test_training_images_are_random_crops_and_flips(fake_imagenet):
    data_dir, colors = fake_imagenet
    datamodule = make_datamodule(data_dir, val_size=0)
    datamodule.setup("fit")
    torch.manual_seed(0)
    flipped, draws = 0, []
    for position in range(NUM_TRAIN):
        path, expected_label = datamodule.train_set.dataset.samples[datamodule.train_set.indices[position]]
        color = torch.tensor(colors[path], dtype=torch.float32).view(3, 1) / 255
        for _ in range(3):
            image, label = datamodule.train_set[position]
            assert label == expected_label
            assert image.shape == (3, 32, 32) and image.min() >= 0.0 and image.max() <= 1.0
            left, right = image[:, :, 0], image[:, :, -1]
            white_left = (left - 1.0).abs().max() < JPEG_TOLERANCE
            colored_right = (right - color).abs().max() < JPEG_TOLERANCE
            flipped += bool(white_left and colored_right)  # white can be on the left only if flipped
            draws.append(image)
    assert flipped >= 3
    distinct = {tuple(image.flatten()[::97].tolist()) for image in draws}
    assert len(distinct) == len(draws)  # random crops: no two draws alike


def test_attributes_and_num_classes_from_the_folders(fake_imagenet):
    data_dir, _ = fake_imagenet
    datamodule = make_datamodule(data_dir, image_size=48, resize_size=56)
    assert datamodule.num_classes == 3  # right after __init__, for the CLI's link to the model
    assert datamodule.input_shape == (3, 48, 48)
    assert datamodule.mean == (0.485, 0.456, 0.406) and datamodule.std == (0.229, 0.224, 0.225)
    datamodule.setup("test")
    assert datamodule.test_set.dataset.classes == WNIDS
    assert datamodule.test_set[0][0].shape == (3, 48, 48)


def test_without_data_num_classes_is_the_imagenet_default(tmp_path):
    datamodule = ImageNetDataModule(data_dir=str(tmp_path / "nowhere"))
    assert datamodule.num_classes == 1000 and datamodule.input_shape == (3, 224, 224)
    assert (datamodule.image_size, datamodule.resize_size, datamodule.val_size) == (224, 256, 10000)
    assert (datamodule.batch_size, datamodule.num_workers) == (256, 8)


def test_train_and_val_partition_the_training_folder(fake_imagenet):
    data_dir, _ = fake_imagenet
    datamodule = make_datamodule(data_dir)
    datamodule.setup("fit")
    assert datamodule.test_set is None
    train, val = set(datamodule.train_set.indices), set(datamodule.val_set.indices)
    assert not train & val
    assert train | val == set(range(NUM_TRAIN))
    assert datamodule.train_set.dataset is datamodule.val_set.dataset  # the folder is scanned once


def test_split_and_subsets_are_seeded(fake_imagenet):
    data_dir, _ = fake_imagenet

    def splits(seed):
        datamodule = make_datamodule(data_dir, seed=seed, train_samples_per_class=4, test_samples_per_class=2)
        datamodule.setup()
        return [datamodule.train_set.indices, datamodule.val_set.indices, datamodule.test_set.indices]

    first = splits(0)
    assert first == splits(0)
    others = [splits(seed) for seed in (1, 2)]
    for part in range(3):
        assert any(other[part] != first[part] for other in others)


def test_per_class_subsets(fake_imagenet):
    data_dir, _ = fake_imagenet
    datamodule = make_datamodule(data_dir, val_size=3, train_samples_per_class=4, test_samples_per_class=2)
    datamodule.setup()
    assert len(datamodule.train_set) == 4 * 3 - 3 and len(datamodule.val_set) == 3
    targets = torch.tensor(datamodule.train_set.dataset.targets)
    pool = datamodule.train_set.indices + datamodule.val_set.indices
    assert len(set(pool)) == 12
    assert targets[pool].bincount().tolist() == [4, 4, 4]
    test_targets = torch.tensor(datamodule.test_set.dataset.targets)
    assert test_targets[datamodule.test_set.indices].bincount().tolist() == [2, 2, 2]
    assert datamodule.test_set.indices == sorted(datamodule.test_set.indices)  # file order, class by class


def _reference_per_class_subset(targets: list[int], per_class: int, seed: int) -> list[int]:
    """Walk a seeded random order of the items; keep each one whose class has fewer than ``per_class``."""
    kept, taken = [], {}
    for index in torch.randperm(len(targets), generator=torch.Generator().manual_seed(seed)).tolist():
        label = targets[index]
        if taken.get(label, 0) < per_class:
            taken[label] = taken.get(label, 0) + 1
            kept.append(index)
    return sorted(kept)


@pytest.mark.parametrize(("per_class", "seed"), [(1, 0), (3, 0), (3, 7), (9, 2)])
def test_per_class_subset_matches_the_reference(per_class, seed):
    generator = torch.Generator().manual_seed(100 + seed)
    targets = torch.cat([torch.full((n,), c) for c, n in enumerate([9, 15, 12, 30, 10])])
    targets = targets[torch.randperm(len(targets), generator=generator)].tolist()
    chosen = per_class_subset(targets, per_class, seed)
    assert chosen.dtype == torch.int64
    assert chosen.tolist() == _reference_per_class_subset(targets, per_class, seed)
    assert torch.tensor(targets)[chosen].bincount().tolist() == [per_class] * 5


def test_per_class_subset_is_not_just_the_first_items():
    targets = torch.arange(1000) % 10
    chosen = {tuple(per_class_subset(targets, 5, seed).tolist()) for seed in range(3)}
    assert len(chosen) == 3
    assert tuple(range(50)) not in chosen


def test_per_class_subset_rejects_too_many():
    with pytest.raises(ValueError, match=r"per_class must be in \[1, 2\].*got 3"):
        per_class_subset([0, 0, 1, 1, 1], 3, seed=0)
    with pytest.raises(ValueError, match="per_class"):
        per_class_subset([0, 1], 0, seed=0)


@pytest.mark.parametrize(("name", "value"), [("train_samples_per_class", 7), ("test_samples_per_class", 5)])
def test_subset_larger_than_a_class_is_a_clear_error(fake_imagenet, name, value):
    data_dir, _ = fake_imagenet
    with pytest.raises(ValueError, match=rf"{name}.*got {value}.*'n01440764'"):
        make_datamodule(data_dir, val_size=0, **{name: value}).setup()


def test_val_size_larger_than_the_training_images(fake_imagenet):
    data_dir, _ = fake_imagenet
    with pytest.raises(ValueError, match=r"val_size must be in \[0, 6\).*got 6"):
        make_datamodule(data_dir, val_size=6, train_samples_per_class=2).setup("fit")


def test_dataloaders_yield_batches(fake_imagenet):
    data_dir, _ = fake_imagenet
    datamodule = make_datamodule(data_dir, batch_size=4)
    datamodule.setup()
    images, labels = next(iter(datamodule.train_dataloader()))
    assert images.shape == (4, 3, 32, 32) and images.dtype == torch.float32
    assert labels.shape == (4,) and labels.dtype == torch.int64
    labels = torch.cat([y for _, y in datamodule.test_dataloader()])
    assert labels.tolist() == [c for c in range(3) for _ in range(TEST_PER_CLASS)]  # not shuffled
    assert sum(len(y) for _, y in datamodule.val_dataloader()) == VAL_SIZE


def break_layout(data_dir: Path, problem: str) -> str:
    """Spoils the fake ImageNet in one way; returns what the error must say."""
    if problem == "no root":
        for path in sorted(data_dir.rglob("*"), reverse=True):
            path.rmdir() if path.is_dir() else path.unlink()
        data_dir.rmdir()
        return "does not exist"
    if problem in ("no train", "no val"):
        split = problem.split()[1]
        (data_dir / split).rename(data_dir / f"{split}_elsewhere")
        return f"no {split}/ folder"
    if problem == "flat val":
        for path in list((data_dir / "val").rglob("*.*")):
            path.rename(data_dir / "val" / path.name)
        for wnid in WNIDS:
            (data_dir / "val" / wnid).rmdir()
        return "val/ holds no class folders"
    (data_dir / "val" / WNIDS[2]).rename(data_dir / "val" / "n99999999")  # "other classes"
    return r"different class folders \(only in train/: \['n01484850'\], only in val/: \['n99999999'\]\)"


@pytest.mark.parametrize("problem", ["no root", "no train", "no val", "flat val", "other classes"])
@pytest.mark.parametrize("stage", ["fit", "test"])
def test_bad_layout_states_the_expected_one(fake_imagenet, problem, stage):
    data_dir, _ = fake_imagenet
    datamodule = make_datamodule(data_dir)
    expected = break_layout(data_dir, problem)
    with pytest.raises(FileNotFoundError, match=expected) as info:
        datamodule.setup(stage)
    message = str(info.value)
    assert str(data_dir.resolve()) in message
    assert "<data_dir>/train/<wnid>/*.JPEG" in message and "<data_dir>/val/<wnid>/*.JPEG" in message
    assert "image-net.org" in message


def test_class_folders_added_after_init_are_an_error(fake_imagenet):
    data_dir, _ = fake_imagenet
    datamodule = make_datamodule(data_dir)
    for split in ("train", "val"):
        (data_dir / split / "n99999999").mkdir()
    with pytest.raises(ValueError, match="4 class folders.*num_classes=3"):
        datamodule.setup("fit")


def test_class_folders(tmp_path):
    assert class_folders(tmp_path / "nowhere") == []
    for name in ("b", "a", "c"):
        (tmp_path / name).mkdir()
    (tmp_path / "file.JPEG").write_bytes(b"")
    assert class_folders(tmp_path) == ["a", "b", "c"]


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"image_size": 0}, "image_size"),
        ({"image_size": 64, "resize_size": 63}, "resize_size"),
        ({"val_size": -1}, "val_size"),
        ({"train_samples_per_class": 0}, "train_samples_per_class"),
        ({"test_samples_per_class": 0}, "test_samples_per_class"),
        ({"batch_size": 0}, "batch_size"),
        ({"num_workers": -1}, "num_workers"),
    ],
)
def test_bad_arguments_raise(tmp_path, kwargs, name):
    with pytest.raises(ValueError, match=name):
        ImageNetDataModule(data_dir=str(tmp_path), **kwargs)
