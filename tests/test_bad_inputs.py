"""The catalogue of bad inputs: each gets one error line, a non-zero exit and nothing written.

Every case runs the real `petseg` command (in process, or in a subprocess where a resource
limit or a mount is involved) on a tiny input built in a temporary folder, and checks:
- stderr has exactly one `petseg <command>: error: ...` line, holding the expected words,
  and no traceback (progress bars may also be on stderr);
- the exit code (1 for data and I/O errors, 2 for params errors);
- the output folder was not created, or was left exactly as it was, and no staging folder remains.
docs/bad-inputs.md lists the same cases.
"""

from __future__ import annotations

import contextlib
import filecmp
import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import yaml
from helpers import tiny_params_dict

from petseg.cli import main
from petseg.components.contracts.rawdata import INDEX_FILE


# ------------------------------------------------------------------ helpers
def _write_params(folder: Path, extra: dict | None = None) -> Path:
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump(tiny_params_dict(extra)))
    return path


def _one_error_line(err: str, command: str) -> str:
    """The single `petseg <command>: error:` line of stderr; fails on a traceback or several lines."""
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith(f"petseg {command}: error: ")]
    assert len(lines) == 1, err
    return lines[0]


def _tree_digest(path: Path) -> str | None:
    """A hash of every file name and content under `path` (None when it does not exist)."""
    if not path.exists():
        return None
    h = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*")):
        h.update(str(file.relative_to(path)).encode())
        if file.is_file():
            h.update(file.read_bytes())
    return h.hexdigest()


def _assert_nothing_written(out: Path, before: str | None = None) -> None:
    assert _tree_digest(out) == before, f"{out} changed"
    leftovers = list(out.parent.glob(f".{out.name}.partial-*")) + list(out.parent.glob(f".{out.name}.old-*"))
    assert not leftovers, leftovers


def _run_cli(capsys, command: str, args: list[str], params: Path) -> tuple[int, str]:
    code = main([command, *args, "--params", str(params)])
    return code, capsys.readouterr().err


@pytest.fixture
def archives(tmp_path, sample_dir) -> Path:
    """A writable copy of the 26 real samples, as extracted folders."""
    root = tmp_path / "archives"
    for folder in ("images", "annotations"):
        shutil.copytree(sample_dir / folder, root / folder)
    for path in [root, *root.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return root


def _archive_params(tmp_path: Path, archives: Path, **archive_params) -> Path:
    return _write_params(
        tmp_path, {"data": {"source": "archives", "archives": {"path": str(archives), **archive_params}}}
    )


def _edit_list(archives: Path, name: str, old: str, new: str) -> None:
    path = archives / "annotations" / name
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


# ------------------------------------------------------- download: list files
LIST_CASES = {  # trainval.txt line 2 is Bombay_182, test.txt line 2 Bengal_185, list.txt line 9 Bengal_185
    "too few fields": (
        "trainval.txt",
        "Bombay_182 8 1 4",
        "Bombay_182 8 1",
        "annotations/trainval.txt line 2: 3 fields, expected 4",
    ),
    "too many fields": (
        "test.txt",
        "Bengal_185 6 1 2",
        "Bengal_185 6 1 2 9",
        "annotations/test.txt line 2: 5 fields, expected 4",
    ),
    "class id not a number": (
        "trainval.txt",
        "Bombay_182 8 1 4",
        "Bombay_182 eight 1 4",
        "annotations/trainval.txt line 2: class id 'eight' is not a whole number",
    ),
    "class id 0": ("trainval.txt", "Bombay_182 8 1 4", "Bombay_182 0 1 4", "class id 0 of Bombay_182 is outside 1-37"),
    "class id 38": ("test.txt", "Bengal_185 6 1 2", "Bengal_185 38 1 2", "class id 38 of Bengal_185 is outside 1-37"),
    "negative class id": (
        "trainval.txt",
        "Bombay_182 8 1 4",
        "Bombay_182 -1 1 4",
        "class id '-1' is not a whole number",
    ),
    "species disagrees with class": (
        "trainval.txt",
        "Bombay_182 8 1 4",
        "Bombay_182 8 2 4",
        "species 2 of Bombay_182 does not match class id 8 (Bombay, a cat",
    ),
    "breed id disagrees with class": (
        "trainval.txt",
        "Bombay_182 8 1 4",
        "Bombay_182 8 1 3",
        "breed id 3 of Bombay_182 does not match class id 8",
    ),
    "unsafe id": (
        "trainval.txt",
        "Bombay_182 8 1 4",
        "../Bombay_182 8 1 4",
        "id '../Bombay_182' is not a safe file name",
    ),
    "duplicate line": (
        "trainval.txt",
        "Bombay_182 8 1 4\n",
        "Bombay_182 8 1 4\nBombay_182 8 1 4\n",
        "annotations/trainval.txt line 3: id Bombay_182 already listed on line 2",
    ),
    "class differs between lists": (
        "test.txt",
        "Bengal_185 6 1 2",
        "Bombay_182 6 1 2",
        "annotations/test.txt line 2: Bombay_182 has class id 6 here but 8 in annotations/trainval.txt line 2",
    ),
    "list.txt malformed": (
        "list.txt",
        "Bengal_185 6 1 2",
        "Bengal_185 6 1 two",
        "annotations/list.txt line 9: breed id 'two' is not a whole number",
    ),
    "list.txt disagrees": (
        "list.txt",
        "Bengal_185 6 1 2",
        "Bengal_185 8 1 4",
        "annotations/list.txt line 9: Bengal_185 has class id 8 here but 6",
    ),
}


@pytest.mark.parametrize("case", sorted(LIST_CASES))
def test_malformed_list_file_is_one_line(case, archives, tmp_path, capsys):
    name, old, new, expected = LIST_CASES[case]
    _edit_list(archives, name, old, new)
    code, err = _run_cli(capsys, "download", ["--out", str(tmp_path / "raw")], _archive_params(tmp_path, archives))
    assert code == 1
    assert expected in _one_error_line(err, "download")
    _assert_nothing_written(tmp_path / "raw")


def test_non_utf8_list_file_is_one_line(archives, tmp_path, capsys):
    path = archives / "annotations" / "test.txt"
    path.write_bytes(path.read_bytes().replace(b"Bengal_185", b"Beng\xe9l_185"))
    code, err = _run_cli(capsys, "download", ["--out", str(tmp_path / "raw")], _archive_params(tmp_path, archives))
    assert code == 1
    assert "annotations/test.txt line 2: not UTF-8 text (byte 0xe9" in _one_error_line(err, "download")
    _assert_nothing_written(tmp_path / "raw")


def test_missing_split_list_is_one_line(archives, tmp_path, capsys):
    (archives / "annotations" / "test.txt").unlink()
    code, err = _run_cli(capsys, "download", ["--out", str(tmp_path / "raw")], _archive_params(tmp_path, archives))
    assert code == 1
    assert "annotations/test.txt: missing" in _one_error_line(err, "download")
    _assert_nothing_written(tmp_path / "raw")


# ------------------------------------------------ download: files and folders
def test_symlink_out_of_the_source_folder_is_refused(archives, tmp_path, capsys):
    outside = tmp_path / "elsewhere.jpg"
    shutil.copy(archives / "images" / "Bengal_185.jpg", outside)
    (archives / "images" / "Bengal_185.jpg").unlink()
    (archives / "images" / "Bengal_185.jpg").symlink_to(outside)
    code, err = _run_cli(capsys, "download", ["--out", str(tmp_path / "raw")], _archive_params(tmp_path, archives))
    assert code == 1
    line = _one_error_line(err, "download")
    assert "Bengal_185.jpg: a symlink to" in line and "outside data.archives.path" in line
    _assert_nothing_written(tmp_path / "raw")


def test_symlinked_list_file_out_of_the_source_folder_is_refused(archives, tmp_path, capsys):
    outside = tmp_path / "trainval.txt"
    shutil.move(archives / "annotations" / "trainval.txt", outside)
    (archives / "annotations" / "trainval.txt").symlink_to(outside)
    code, err = _run_cli(capsys, "download", ["--out", str(tmp_path / "raw")], _archive_params(tmp_path, archives))
    assert code == 1
    assert "trainval.txt: a symlink to" in _one_error_line(err, "download")
    _assert_nothing_written(tmp_path / "raw")


def test_symlink_inside_the_source_folder_is_allowed(archives, tmp_path, capsys):
    image = archives / "images" / "Bengal_185.jpg"
    shutil.move(image, archives / "Bengal_185-original.jpg")
    image.symlink_to(archives / "Bengal_185-original.jpg")
    code, err = _run_cli(capsys, "download", ["--out", str(tmp_path / "raw")], _archive_params(tmp_path, archives))
    assert code == 0, err


def test_link_member_in_a_tarball_is_refused(archives, tmp_path, capsys):
    work = tmp_path / "tarred"
    work.mkdir()
    with tarfile.open(work / "annotations.tar.gz", "w:gz") as tar:
        tar.add(archives / "annotations", arcname="annotations")
        link = tarfile.TarInfo("annotations/trimaps/Bengal_185.png")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
    shutil.copytree(archives / "images", work / "images")
    params = _archive_params(tmp_path, work, verify_checksums=False)
    code, err = _run_cli(capsys, "download", ["--out", str(tmp_path / "raw")], params)
    assert code == 1
    assert "member annotations/trimaps/Bengal_185.png is a link (to /etc/passwd)" in _one_error_line(err, "download")
    _assert_nothing_written(tmp_path / "raw")


@pytest.mark.parametrize("damage", ["truncated", "not an archive"])
def test_damaged_tarball_is_one_line(damage, archives, tmp_path, capsys):
    work = tmp_path / "tarred"
    work.mkdir()
    with tarfile.open(work / "images.tar.gz", "w:gz") as tar:
        tar.add(archives / "images", arcname="images")
    data = (work / "images.tar.gz").read_bytes()
    (work / "images.tar.gz").write_bytes(data[: len(data) // 2] if damage == "truncated" else b"hello" * 100)
    shutil.copytree(archives / "annotations", work / "annotations")
    code, err = _run_cli(
        capsys, "download", ["--out", str(tmp_path / "raw")], _archive_params(tmp_path, work, verify_checksums=False)
    )
    assert code == 1
    assert "images.tar.gz: not a readable tar archive" in _one_error_line(err, "download")
    _assert_nothing_written(tmp_path / "raw")


def test_pinned_checksums_catch_a_changed_extracted_file(archives, tmp_path, capsys):
    lines = []
    for path in sorted(p for p in archives.rglob("*") if p.is_file()):
        lines.append(f"{hashlib.sha256(path.read_bytes()).hexdigest()}  {path.relative_to(archives)}")
    (archives / "SHA256SUMS").write_text("\n".join(lines) + "\n")
    params = _archive_params(tmp_path, archives)
    assert main(["download", "--out", str(tmp_path / "ok"), "--params", str(params)]) == 0
    record = json.loads((tmp_path / "ok" / "download.json").read_text())
    assert len(record["source_files"]) == 55

    trimap = archives / "annotations" / "trimaps" / "Bengal_185.png"
    trimap.write_bytes(trimap.read_bytes() + b"\0")
    capsys.readouterr()
    code, err = _run_cli(capsys, "download", ["--out", str(tmp_path / "raw")], params)
    assert code == 1
    line = _one_error_line(err, "download")
    assert "trimaps/Bengal_185.png: sha256" in line and "does not match" in line and "SHA256SUMS" in line
    _assert_nothing_written(tmp_path / "raw")


@pytest.mark.parametrize("kind", ["file", "foreign folder", "symlink"])
def test_out_that_download_did_not_write_is_refused(kind, tmp_path, capsys):
    out = tmp_path / "mine"
    if kind == "file":
        out.write_text("my notes")
    elif kind == "foreign folder":
        out.mkdir()
        (out / "thesis.tex").write_text("years of work")
    else:
        (tmp_path / "target").mkdir()
        out.symlink_to(tmp_path / "target")
    before = _tree_digest(out)
    code, err = _run_cli(capsys, "download", ["--out", str(out)], _write_params(tmp_path))
    assert code == 1
    assert f"--out {out}" in _one_error_line(err, "download")
    _assert_nothing_written(out, before)


def test_archives_path_that_is_a_file_is_one_line(tmp_path, capsys):
    (tmp_path / "archives").write_text("not a folder")
    code, err = _run_cli(
        capsys, "download", ["--out", str(tmp_path / "raw")], _archive_params(tmp_path, tmp_path / "archives")
    )
    assert code == 1
    assert "is a file, not a folder" in _one_error_line(err, "download")
    _assert_nothing_written(tmp_path / "raw")


# ------------------------------------------------------------------- params
PARAMS_CASES = {
    "NaN learning rate": ("train:\n  learning_rate: .nan\n", "'train.learning_rate' must be a finite number"),
    "NaN poll interval": ("serve:\n  poll_seconds: .NaN\n", "'serve.poll_seconds' must be a finite number"),
    "infinite fraction": ("validate:\n  max_pet_fraction: .inf\n", "'validate.max_pet_fraction' must be a finite"),
    "huge float": ("train:\n  learning_rate: 1.0e+999\n", "'train.learning_rate' must be a finite number"),
    "huge integer": ("train:\n  epochs: " + "9" * 40 + "\n", "'train.epochs' is too large"),
    "empty file": ("", "empty; it must set at least data.source"),
    "only comments": ("# nothing here\n", "empty; it must set at least data.source"),
    "duplicate key": ("train:\n  epochs: 2\n  epochs: 3\n", "line 3: duplicate key 'epochs' (first on line 2)"),
    "duplicate section": ("data:\n  seed: 1\ndata:\n  seed: 2\n", "line 3: duplicate key 'data' (first on line 1)"),
    "non-string key": ("train:\n  1: 2\n", "unknown key 'train.1'"),
    "not a mapping": ("- 1\n- 2\n", "'the top level' must be a mapping"),
    "NUL in a path": ('data:\n  archives:\n    path: "a\\0b"\n', "'data.archives.path' holds a NUL character"),
    "empty path": ('data:\n  tfds:\n    data_dir: ""\n', "'data.tfds.data_dir' must be a folder path"),
    "bad YAML": ("train: [1,\n", "not valid YAML"),
}


@pytest.mark.parametrize("case", sorted(PARAMS_CASES))
def test_bad_params_are_one_line_exit_2(case, tmp_path, capsys):
    text, expected = PARAMS_CASES[case]
    (tmp_path / "params.yaml").write_text(text)
    code, err = _run_cli(capsys, "download", ["--out", str(tmp_path / "raw")], tmp_path / "params.yaml")
    assert code == 2
    line = _one_error_line(err, "download")
    assert expected in line and str(tmp_path / "params.yaml") in line
    _assert_nothing_written(tmp_path / "raw")


def test_non_utf8_params_is_one_line(tmp_path, capsys):
    (tmp_path / "params.yaml").write_bytes(b"data:\n  source: synth\xe9tic\n")
    code, err = _run_cli(capsys, "download", ["--out", str(tmp_path / "raw")], tmp_path / "params.yaml")
    assert code == 2
    assert "line 2: not UTF-8 text (byte 0xe9 at offset 21)" in _one_error_line(err, "download")


def test_params_folder_is_one_line(tmp_path, capsys):
    code, err = _run_cli(capsys, "download", ["--out", str(tmp_path / "raw")], tmp_path)
    assert code == 2
    assert "is a folder, not a params file" in _one_error_line(err, "download")


def test_tfds_data_dir_that_is_a_file_is_refused_before_any_network(tmp_path, capsys):
    (tmp_path / "tfds").write_text("")
    params = _write_params(tmp_path, {"data": {"source": "tfds", "tfds": {"data_dir": str(tmp_path / "tfds")}}})
    code, err = _run_cli(capsys, "download", ["--out", str(tmp_path / "raw")], params)
    assert code == 2
    assert f"'data.tfds.data_dir' {tmp_path / 'tfds'}: is a file, not a folder" in _one_error_line(err, "download")


# ----------------------------------------------------- a damaged examples.csv
def _damage_index(raw: Path, how: str) -> None:
    index = raw / INDEX_FILE
    lines = index.read_bytes().split(b"\n")
    if how == "non-UTF-8":
        lines[3] = lines[3].replace(b"synthetic", b"synth\xffetic", 1)
    elif how == "wrong header":
        lines[0] = b"id,split,image,trimap,class,breed,species"
    elif how == "short row":
        lines[3] = b",".join(lines[3].split(b",")[:5])
    elif how == "class id not a number":
        parts = lines[3].split(b",")
        parts[4] = b"abc"
        lines[3] = b",".join(parts)
    elif how == "path outside":
        parts = lines[3].split(b",")
        parts[2] = b"../../../etc/passwd"
        lines[3] = b",".join(parts)
    elif how == "empty":
        lines = []
    elif how == "unterminated quote":
        lines[3] = lines[3] + b',"'
    index.write_bytes(b"\n".join(lines))


INDEX_CASES = {
    "non-UTF-8": "not UTF-8 text",
    "wrong header": "line 1: header is 'id,split,image,trimap,class,breed,species'",
    "short row": "row 4: 5 values, expected 7",
    "class id not a number": "row 4: class_id 'abc' is not a whole number in 0-37",
    "path outside": "row 4: image path '../../../etc/passwd' must be relative, inside the raw folder",
    "empty": "empty (no header row)",
    "unterminated quote": "values, expected 7",
}


@pytest.mark.parametrize("case", sorted(INDEX_CASES))
@pytest.mark.parametrize("command", ["validate", "preprocess"])
def test_damaged_examples_csv_is_one_line(case, command, synthetic_raw, tmp_path, capsys):
    _damage_index(synthetic_raw, case)
    args = ["--raw", str(synthetic_raw), "--out", str(tmp_path / "out")]
    if command == "preprocess":
        args += ["--validation", str(tmp_path / "validation")]
    code, err = _run_cli(capsys, command, args, _write_params(tmp_path))
    assert code == 1
    line = _one_error_line(err, command)
    assert f"{synthetic_raw / INDEX_FILE}" in line and INDEX_CASES[case] in line
    assert "run `petseg download` again" in line
    _assert_nothing_written(tmp_path / "out")


def test_index_symlink_out_of_the_raw_folder_is_refused(synthetic_raw, tmp_path, capsys):
    first = synthetic_raw / "images" / sorted(os.listdir(synthetic_raw / "images"))[0]
    shutil.move(first, tmp_path / "outside.jpg")
    first.symlink_to(tmp_path / "outside.jpg")
    code, err = _run_cli(
        capsys, "validate", ["--raw", str(synthetic_raw), "--out", str(tmp_path / "out")], _write_params(tmp_path)
    )
    assert code == 1
    assert "resolves outside" in _one_error_line(err, "validate")
    _assert_nothing_written(tmp_path / "out")


# ------------------------------------------------------------------ leakage
def test_id_in_both_lists_stops_at_validation_naming_it(archives, tmp_path, capsys):
    # Abyssinian_1 is in trainval.txt; listing it in test.txt too must not be silently resolved.
    _edit_list(archives, "test.txt", "Abyssinian_11 1 1 1\n", "Abyssinian_11 1 1 1\nAbyssinian_1 1 1 1\n")
    params = _archive_params(tmp_path, archives)
    assert main(["download", "--out", str(tmp_path / "raw"), "--params", str(params)]) == 0
    record = json.loads((tmp_path / "raw" / "download.json").read_text())
    assert record["split_conflicts"] == {"Abyssinian_1": ["trainval", "test"]}
    assert record["counts"] == {"trainval": 18, "test": 9}
    capsys.readouterr()

    code, err = _run_cli(
        capsys, "validate", ["--raw", str(tmp_path / "raw"), "--out", str(tmp_path / "report")], params
    )
    assert code == 1
    line = _one_error_line(err, "validate")
    assert "no_train_test_leakage (1 example: Abyssinian_1)" in line
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    assert summary["success"] is False and "no_train_test_leakage" in summary["failed_critical"]

    code, err = _run_cli(
        capsys,
        "preprocess",
        ["--raw", str(tmp_path / "raw"), "--validation", str(tmp_path / "report"), "--out", str(tmp_path / "records")],
        params,
    )
    assert code == 1
    assert "failed validation" in _one_error_line(err, "preprocess")
    _assert_nothing_written(tmp_path / "records")


# ------------------------------------------------------------ deterministic
def test_two_identical_runs_write_identical_records(archives, tmp_path, capsys):
    # A broken image gives download and validation an error text to record (it once held a memory address).
    broken = archives / "images" / "Bombay_182.jpg"
    broken.write_bytes(b"not a jpeg at all")
    params = _archive_params(tmp_path, archives)
    for run in ("a", "b"):
        assert main(["download", "--out", str(tmp_path / run / "raw"), "--params", str(params)]) == 0
    first, second = tmp_path / "a" / "raw", tmp_path / "b" / "raw"
    record = (first / "download.json").read_text()
    assert "Bombay_182" in json.loads(record)["dropped"] and " at 0x" not in record
    assert record == (second / "download.json").read_text()
    assert (first / INDEX_FILE).read_bytes() == (second / INDEX_FILE).read_bytes()

    # validation of a raw folder holding an undecodable image (bypassing download's drop)
    reports = []
    for run in ("a", "b"):
        raw = tmp_path / run / "raw"
        shutil.copy(broken, raw / "images" / "Bengal_185.jpg")
        code = main(["validate", "--raw", str(raw), "--out", str(tmp_path / run / "report"), "--params", str(params)])
        assert code == 1  # image_decodes is critical
        reports.append(tmp_path / run / "report")
    table = (reports[0] / "examples.csv").read_text()
    assert "cannot identify image file" in table and " at 0x" not in table
    for name in ("examples.csv", "summary.json"):
        assert filecmp.cmp(reports[0] / name, reports[1] / name, shallow=False), name
    assert _without_timestamps(reports[0] / "gx_result.json") == _without_timestamps(reports[1] / "gx_result.json")


def _without_timestamps(path: Path) -> dict:
    from petseg.components.checks.suite import GX_TIMESTAMP_FIELDS

    data = json.loads(path.read_text())
    for dotted in GX_TIMESTAMP_FIELDS:
        *parents, leaf = dotted.split(".")
        node = data
        for part in parents:
            node = node[part]
        assert leaf in node, dotted
        del node[leaf]
    return data


# ------------------------------------------------------------- I/O errors
PYTHON_CLI = [sys.executable, "-m", "petseg"]


def _cli_subprocess(args: list[str], cwd: Path, preexec=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*PYTHON_CLI, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
        preexec_fn=preexec,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
    )


def _file_size_limit(limit: int):
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


@contextlib.contextmanager
def _tmpfs(tmp_path: Path, options: str):
    """A small tmpfs mounted under tmp_path (root only), unmounted afterwards."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    point = tmp_path / "mnt"
    point.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(point)], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
    try:
        yield point
    finally:
        subprocess.run(["umount", "-l", str(point)], check=False)


def _prepare_step(step: str, tmp_path: Path, synthetic_raw: Path) -> list[str]:
    """The CLI arguments (without --out) for `step`, with its inputs ready under tmp_path."""
    if step == "download":
        return ["download"]
    if step == "validate":
        return ["validate", "--raw", str(synthetic_raw)]
    from petseg.components.contracts.rawdata import dataset_fingerprint
    from petseg.components.contracts.validation import ValidationSummary, write_summary

    write_summary(
        tmp_path / "validation", ValidationSummary(success=True, fingerprint=dataset_fingerprint(synthetic_raw))
    )
    return ["preprocess", "--raw", str(synthetic_raw), "--validation", str(tmp_path / "validation")]


def _assert_io_error(proc: subprocess.CompletedProcess, step: str, reason: str, out: Path) -> None:
    assert proc.returncode == 1, proc.stderr
    line = _one_error_line(proc.stderr, step)
    assert "I/O error on" in line and reason in line and f"{out} left as it was" in line, line
    _assert_nothing_written(out)


STEPS = ["download", "validate", "preprocess"]


@pytest.mark.slow
@pytest.mark.parametrize("step", STEPS)
def test_file_size_limit_is_one_line(step, synthetic_raw, tmp_path):
    _write_params(tmp_path)
    args = _prepare_step(step, tmp_path, synthetic_raw)
    out = tmp_path / "out"
    proc = _cli_subprocess([*args, "--out", str(out)], tmp_path, preexec=_file_size_limit(4000))
    _assert_io_error(proc, step, "File too large", out)


@pytest.mark.slow
@pytest.mark.parametrize("step", STEPS)
def test_disk_full_is_one_line(step, synthetic_raw, tmp_path):
    _write_params(tmp_path)
    args = _prepare_step(step, tmp_path, synthetic_raw)
    with _tmpfs(tmp_path, "size=64k") as disk:
        out = disk / "out"
        proc = _cli_subprocess([*args, "--out", str(out)], tmp_path)
        _assert_io_error(proc, step, "No space left on device", out)
        assert os.listdir(disk) == []


@pytest.mark.slow
@pytest.mark.parametrize("step", STEPS)
def test_read_only_target_is_one_line(step, synthetic_raw, tmp_path):
    _write_params(tmp_path)
    args = _prepare_step(step, tmp_path, synthetic_raw)
    with _tmpfs(tmp_path, "ro,size=1m") as disk:
        out = disk / "out"
        proc = _cli_subprocess([*args, "--out", str(out)], tmp_path)
        _assert_io_error(proc, step, "Read-only file system", out)


@pytest.mark.slow
def test_permission_denied_is_one_line(tmp_path):
    """A target folder this user may not write. Root ignores file modes, so as root the command
    runs without the capabilities that let it (setpriv drops CAP_DAC_OVERRIDE)."""
    _write_params(tmp_path)
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    prefix = []
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("running as root without setpriv: root can write any folder")
        prefix = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", "--"]
    proc = subprocess.run(
        [*prefix, *PYTHON_CLI, "download", "--out", str(locked / "raw")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    _assert_io_error(proc, "download", "Permission denied", locked / "raw")
    assert os.listdir(locked) == []
