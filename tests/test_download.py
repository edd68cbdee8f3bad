import hashlib
import io
import json
import shutil
import tarfile
import time

import numpy as np
import pytest
from helpers import tiny_params_dict
from PIL import Image

from petseg.cli import main
from petseg.components import download as download_module
from petseg.components.contracts.rawdata import dataset_fingerprint, read_index
from petseg.components.core.errors import PetsegError
from petseg.components.core.params import params_from_dict
from petseg.components.download import download
from petseg.components.sources.synthetic import synthetic_record


def _data_params(**data):
    return params_from_dict(tiny_params_dict({"data": data})).data


def _decode(path):
    with Image.open(path) as im:
        return np.asarray(im)


def test_synthetic_is_seeded_and_shaped(tmp_path):
    params = _data_params()
    first = download(params, tmp_path / "a")
    download(params, tmp_path / "b")
    assert first.counts == {"trainval": 24, "test": 8}
    assert dataset_fingerprint(tmp_path / "a") == dataset_fingerprint(tmp_path / "b")
    other = download(_data_params(seed=7), tmp_path / "c")
    assert other.counts == first.counts
    assert dataset_fingerprint(tmp_path / "c") != dataset_fingerprint(tmp_path / "a")

    for ex in read_index(tmp_path / "a"):
        image, trimap = _decode(tmp_path / "a" / ex.image), _decode(tmp_path / "a" / ex.trimap)
        assert image.shape[2] == 3 and image.shape[:2] == trimap.shape
        assert min(trimap.shape) >= 96 and max(trimap.shape) <= 160
        assert set(np.unique(trimap)) == {1, 2, 3}
        assert ex.species in ("cat", "dog") and 1 <= ex.class_id <= 37


def test_synthetic_scene_looks_like_a_pet_trimap():
    record = synthetic_record(_data_params(synthetic={"min_side": 300, "max_side": 400}).synthetic, 42, "trainval", 3)
    trimap = np.asarray(Image.open(io.BytesIO(record.trimap_bytes)))
    fractions = np.bincount(trimap.ravel(), minlength=4)[1:] / trimap.size
    pet, background, border = fractions
    assert 0.03 < pet < 0.6 and background > 0.3
    assert 0.002 < border < pet, "the border is a thin band around the pet"


def test_archives_source_reads_the_real_sample_folder(sample_dir, tmp_path):
    result = download(_data_params(source="archives", archives={"path": str(sample_dir)}), tmp_path / "raw")
    examples = read_index(tmp_path / "raw")
    assert result.counts == {"trainval": 18, "test": 8}
    by_id = {ex.id: ex for ex in examples}
    assert by_id["Abyssinian_1"].split == "trainval" and by_id["Abyssinian_11"].split == "test"
    assert (by_id["great_pyrenees_174"].breed, by_id["great_pyrenees_174"].species) == ("great_pyrenees", "dog")
    assert by_id["Bengal_185"].class_id == 6
    original = (sample_dir / "images" / "Abyssinian_1.jpg").read_bytes()
    if "Abyssinian_1" not in result.repaired:
        assert (tmp_path / "raw" / by_id["Abyssinian_1"].image).read_bytes() == original


def test_archives_source_reads_tarballs_repairs_and_drops(sample_dir, tmp_path):
    work = tmp_path / "archives"
    shutil.copytree(sample_dir, work / "extract")
    # A grayscale JPEG is repaired (converted to RGB); a truncated one is dropped.
    gray = work / "extract" / "images" / "Bengal_185.jpg"
    Image.open(gray).convert("L").save(gray, format="JPEG")
    broken = work / "extract" / "images" / "Bombay_182.jpg"
    broken.write_bytes(broken.read_bytes()[:200])
    with tarfile.open(work / "images.tar.gz", "w:gz") as tar:
        tar.add(work / "extract" / "images", arcname="images")
    with tarfile.open(work / "annotations.tar.gz", "w:gz") as tar:
        tar.add(work / "extract" / "annotations", arcname="annotations")
    shutil.rmtree(work / "extract")

    with pytest.raises(PetsegError, match="is not the official"):
        download(_data_params(source="archives", archives={"path": str(work)}), tmp_path / "raw")
    assert not (tmp_path / "raw").exists()

    params = _data_params(source="archives", archives={"path": str(work), "verify_checksums": False})
    result = download(params, tmp_path / "raw")
    assert result.repaired == ["Bengal_185"]
    assert list(result.dropped) == ["Bombay_182"] and "does not decode" in result.dropped["Bombay_182"]
    assert result.counts == {"trainval": 17, "test": 8}
    with Image.open(tmp_path / "raw" / "images" / "Bengal_185.jpg") as im:
        assert im.mode == "RGB"


def test_archives_missing_folder_is_one_clear_error(tmp_path):
    with pytest.raises(PetsegError, match="no such folder"):
        download(_data_params(source="archives", archives={"path": str(tmp_path / "nope")}), tmp_path / "raw")


def test_tfds_without_network_fails_fast_in_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(download_module, "TFDS_HOST", "tfds-host.invalid")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text("data:\n  source: tfds\n")
    start = time.monotonic()
    assert main(["download", "--out", "data/raw"]) == 1
    assert time.monotonic() - start < 30
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert "cannot reach tfds-host.invalid" in err[0] and "data.source: synthetic" in err[0]
    assert not (tmp_path / "data" / "raw").exists()


def test_failed_download_keeps_the_previous_output(tmp_path, monkeypatch):
    params = _data_params()
    download(params, tmp_path / "raw")
    before = dataset_fingerprint(tmp_path / "raw")

    def exploding(*args, **kwargs):
        yield synthetic_record(params.synthetic, 0, "trainval", 0)
        raise OSError("disk full")

    monkeypatch.setattr(download_module, "synthetic_records", exploding)
    with pytest.raises(PetsegError, match=r"I/O error on .*raw: disk full; .*raw left as it was"):
        download(params, tmp_path / "raw")
    assert dataset_fingerprint(tmp_path / "raw") == before
    assert [p.name for p in tmp_path.iterdir()] == ["raw"]


def test_tfds_record_names_the_version_and_pinned_download_checksums(tmp_path):
    import tensorflow_datasets as tfds

    builder = tfds.builder("oxford_iiit_pet", data_dir=str(tmp_path / "tfds"))  # offline: nothing is downloaded
    record = download_module.tfds_record(builder)
    assert record["name"] == "oxford_iiit_pet" and record["version"].startswith("4.")
    sums = {url.rsplit("/", 1)[1]: entry for url, entry in record["download_checksums"].items()}
    for name, (size, sha256) in download_module.OFFICIAL_ARCHIVES.items():
        assert sums[name] == {"size": size, "sha256": sha256}


def test_extracted_sources_are_recorded_file_by_file(sample_dir, tmp_path):
    download(_data_params(source="archives", archives={"path": str(sample_dir)}), tmp_path / "raw")
    record = json.loads((tmp_path / "raw" / "download.json").read_text())
    image = "images/Abyssinian_1.jpg"
    assert record["source_files"][image] == hashlib.sha256((sample_dir / image).read_bytes()).hexdigest()
    assert {"annotations/trainval.txt", "annotations/test.txt", "annotations/list.txt"} <= set(record["source_files"])
    assert record["split_conflicts"] == {} and record["repair_policy"] == download_module.REPAIR_POLICY
