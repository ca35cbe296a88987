"""The sharded medians store as the loader sees it: index-only construction, bounded open shards,
DataLoader workers, clear errors."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from cropseg.nn.dataset import BlockSampler, DatasetError, SubPatchDataset
from cropseg.fetch.stage import fetch_s4a
from cropseg.split.labels import load_label_set
from cropseg.medians.stage import run_medians
from cropseg.core.params import Medians
from cropseg.medians.store_reader import Store, open_patch
from cropseg.medians.store_writer import plan_store

from conftest import tiny_data

REPO = Path(__file__).resolve().parents[1]
LABELS = REPO / "configs" / "labels"


@pytest.fixture(scope="module")
def store_root(tmp_path_factory) -> tuple[Path, list[str]]:
    """8 tiny patches (122 px: 2 x 2 sub-patches) over 4 tile-years, 2 patches per shard."""
    root = tmp_path_factory.mktemp("store")
    fetch_s4a(tiny_data(patches=8, patch_size=122, acquisitions=14, parcels=12, background=0.6), root / "netcdf", workers=1)
    run_medians(root / "netcdf", root / "medians", Medians(workers=1), progress=False, shard_bytes=6_000_000)
    paths = sorted(p.relative_to(root / "netcdf").as_posix() for p in (root / "netcdf").rglob("*.nc"))
    return root / "medians", paths


def _brute_force(root: Path, paths: list[str], label_set, skip_empty: bool) -> tuple[np.ndarray, np.ndarray]:
    """Parcel pixels per sample and class pixels over the kept samples, from the label maps."""
    store = Store(root)
    parcel, total = [], np.zeros(label_set.n_classes, np.int64)
    for row in store.rows_of(paths):
        _, labels = open_patch(root, store.record(int(row)))
        mapped = label_set.map(np.asarray(labels)).reshape(4, -1)
        for sample in mapped:
            parcel.append(int((sample > 0).sum()))
            if parcel[-1] or not skip_empty:
                total += np.bincount(sample, minlength=label_set.n_classes)
    return np.array(parcel), total


@pytest.mark.parametrize("labels", ["s4a11", "crop_presence"])
@pytest.mark.parametrize("skip_empty", [True, False])
def test_construction_and_class_counts_read_the_index_only(store_root, monkeypatch, labels, skip_empty):
    root, paths = store_root
    label_set = load_label_set(labels, LABELS)
    split = paths[1::2]  # patches of several shards, not in store order only
    expected_parcel, expected_total = _brute_force(root, split, label_set, skip_empty)

    def no_label_maps(*args, **kwargs):
        raise AssertionError("a shard was opened at dataset construction")

    monkeypatch.setattr(Store, "arrays", no_label_maps)
    dataset = SubPatchDataset(root, split, label_set, months=[4, 9], normalize=1e4, skip_empty=skip_empty)
    np.testing.assert_array_equal(dataset.parcel_pixels, expected_parcel)
    np.testing.assert_array_equal(dataset.class_pixel_counts(), expected_total)
    kept = np.flatnonzero(expected_parcel > 0) if skip_empty else np.arange(len(expected_parcel))
    np.testing.assert_array_equal(dataset.indices, kept)
    assert expected_total[1:].sum() > 0 and (expected_parcel == 0).any()  # both kinds of sample occur


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _open_shards(dataset: SubPatchDataset) -> int:
    """Shard files the dataset's store holds open in this process now (at most its ``max_open``)."""
    return len(dataset.store.cache)


def test_open_shards_stay_bounded_and_batches_are_unchanged(store_root):
    root, paths = store_root
    label_set = load_label_set("s4a11", LABELS)
    assert len(Store(root).meta["shards"]) == 4
    wide = SubPatchDataset(root, paths, label_set, months=[4, 9], normalize=1e4, skip_empty=False)
    narrow = SubPatchDataset(root, paths, label_set, months=[4, 9], normalize=1e4, skip_empty=False, max_open=1)
    before = _fds()
    order = np.random.default_rng(0).permutation(len(narrow))
    most = 0
    for start in range(0, len(order), 3):
        positions = order[start:start + 3]
        a, b = wide[positions], narrow[positions]
        torch.testing.assert_close(a.x, b.x, rtol=0, atol=0)
        torch.testing.assert_close(a.y, b.y, rtol=0, atol=0)
        assert _open_shards(narrow) <= 1
        most = max(most, _fds() - before)
    assert _open_shards(wide) == 4
    assert narrow.store.cache.opened > 4  # it did evict and reopen
    assert most <= 4 + 1  # the wide dataset's 4 maps and the narrow one's single map, one fd each
    narrow.store.cache.close()
    wide.store.cache.close()
    assert _fds() == before  # closed maps give their descriptors back


def test_loader_workers_open_their_own_maps_and_match_the_main_process(store_root):
    root, paths = store_root
    label_set = load_label_set("s4a11", LABELS)
    dataset = SubPatchDataset(root, paths, label_set, months=[4, 9], normalize=1e4, skip_empty=True, max_open=2)
    dataset[[0, len(dataset) - 1]]  # the parent holds maps before the workers fork
    assert _open_shards(dataset) == 2
    state = pickle.dumps(dataset)
    assert len(state) < 200_000  # no memory map or shard bytes travel to a spawned worker
    again = pickle.loads(state)
    assert _open_shards(again) == 0
    sampler = BlockSampler(len(dataset), 5, seed=1)
    loader = DataLoader(dataset, sampler=sampler, batch_size=None, num_workers=2,
                        multiprocessing_context="fork")
    inline = DataLoader(dataset, sampler=sampler, batch_size=None, num_workers=0)
    got, expected = list(loader), list(inline)
    assert len(got) == len(expected) == -(-len(dataset) // 5)
    for a, b in zip(got, expected):
        assert a.index.tolist() == b.index.tolist()
        torch.testing.assert_close(a.x, b.x, rtol=0, atol=0)
        torch.testing.assert_close(a.y, b.y, rtol=0, atol=0)


def test_store_errors_name_the_file_and_what_to_do(store_root, tmp_path):
    root, paths = store_root
    label_set = load_label_set("s4a11", LABELS)
    with pytest.raises(DatasetError, match=r"1 patch\(es\) are not in .*patches.npy, e.g. 2018/XXXXX/missing.nc"):
        SubPatchDataset(root, [paths[0], "2018/XXXXX/missing.nc"], label_set, months=[4, 9], normalize=1e4,
                        skip_empty=True)
    with pytest.raises(DatasetError, match="not in"):  # a longer path must not match a prefix
        SubPatchDataset(root, [paths[0] + "x" * 200], label_set, months=[4, 9], normalize=1e4, skip_empty=True)
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    (legacy / "meta.json").write_text("{}")
    with pytest.raises(DatasetError, match=r"store.json: not found \(a per-patch store of an older version"):
        SubPatchDataset(legacy, paths, label_set, months=[4, 9], normalize=1e4, skip_empty=True)


def test_plan_splits_tile_years_at_the_cap_and_aligns_blocks():
    patches = [(f"2020/T{t}/p{i:02d}.nc", 2020, f"T{t}", 122) for t in (1, 2) for i in range(5)]
    plan = plan_store(patches, bands=4, window=61, periods_of_year={2020: 12}, dtype="float32",
                      shard_bytes=3 * 2_920_448)
    # a 122 px patch: 2*2*12*4*61*61*4 = 2,857,728 bytes of medians -> 2,859,008 aligned, + 61,440 of labels
    assert [s["patches"] for s in plan.shards] == [3, 2, 3, 2]
    assert [s["name"] for s in plan.shards] == ["shards/2020_T1_000.bin", "shards/2020_T1_001.bin",
                                                "shards/2020_T2_000.bin", "shards/2020_T2_001.bin"]
    first, second = plan.slots[0], plan.slots[1]
    assert (first.offset, first.labels_offset, second.offset) == (0, 2_859_008, 2_920_448)
    assert all(s.offset % 4096 == 0 and s.labels_offset % 4096 == 0 for s in plan.slots)
    assert [s.path for s in plan.slots] == sorted(p[0] for p in patches)


def test_thread_loader_gives_the_dataloader_batches_in_order_with_a_cache_per_thread(store_root):
    from cropseg.nn.prefetch import ThreadLoader

    root, paths = store_root
    label_set = load_label_set("s4a11", LABELS)
    # max_open=1: every thread evicts and reopens all the time; a shared cache would close descriptors
    # under another thread's read
    dataset = SubPatchDataset(root, paths, label_set, months=[4, 9], normalize=1e4, skip_empty=False, max_open=1)
    sampler = BlockSampler(len(dataset), 3, seed=2)
    expected = list(DataLoader(dataset, sampler=sampler, batch_size=None, num_workers=0))
    main_cache = dataset.store.cache
    for _ in range(3):  # several passes: thread timing differs, order and bytes must not
        got = list(ThreadLoader(dataset, sampler, threads=4, pin_memory=False, ahead=6))
        assert len(got) == len(expected) == -(-len(dataset) // 3)
        for a, b in zip(got, expected):
            assert a.index.tolist() == b.index.tolist()
            torch.testing.assert_close(a.x, b.x, rtol=0, atol=0)
            torch.testing.assert_close(a.y, b.y, rtol=0, atol=0)
    assert dataset.store.cache is main_cache and len(main_cache) <= 1  # the main thread's own cache
    stopped = ThreadLoader(dataset, sampler, threads=2, pin_memory=False)
    first = next(iter(stopped))  # a consumer that stops early leaves nothing running
    assert first.index.tolist() == expected[0].index.tolist()
