"""Step 1, download: bring Oxford-IIIT Pet (or its synthetic stand-in) into the raw layout.

Sources (params `data.source`):
- `tfds`: TFDS `oxford_iiit_pet` 4.x, downloaded and checksummed by TFDS itself.
- `archives`: the official images.tar.gz + annotations.tar.gz (or their extracts) on disk,
  checked against the published sha256 sums, for air-gapped users.
- `synthetic`: a seeded generator, for offline demos and CI.

Real images are normalised on the way in, so one policy covers both real sources:
an image that decodes but is not an RGB JPEG (grayscale, CMYK, RGBA, a PNG named .jpg;
TFDS lists a dozen such files) is re-encoded as an RGB JPEG and listed as `repaired`;
an image or trimap that does not decode, or is missing, is dropped and listed as
`dropped`. Both lists are in download.json. Nothing else is fixed (docs/dvc.md, "Repair policy"):
the list files are parsed strictly (components/sources/annotations.py), an id listed in both
trainval.txt and test.txt is kept in both splits and recorded as a split conflict for
validation's leakage check to stop on, and a symlink out of the source folder is refused.
Extracted files are recorded by sha256 (and checked against an optional SHA256SUMS);
for TFDS, the dataset version and the download checksums it pins are recorded.
Validation then checks that what remains is sound.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import hashlib
import inspect
import io
import lzma
import re
import socket
import tarfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from petseg.components.contracts.rawdata import (
    BREEDS,
    DOWNLOAD_FILE,
    RawDatasetWriter,
    RawRecord,
    sha256_file,
    species_of_breed,
)
from petseg.components.core.errors import PetsegError, first_line, stable_text
from petseg.components.core.fsutil import atomic_directory, check_output_dir, io_errors_named, write_json
from petseg.components.core.params import (
    ArchivesParams,
    DataParams,
    TfdsParams,
    params_to_dict,
    require_writable_folder,
)
from petseg.components.core.progress import progress_bar
from petseg.components.sources.annotations import ListEntry, decode_text, parse_list_file
from petseg.components.sources.synthetic import synthetic_records

TFDS_HOST = "thor.robots.ox.ac.uk"
# The official archives' sizes and sha256, as TFDS 4.9 records them for oxford_iiit_pet 4.0.0.
OFFICIAL_ARCHIVES = {
    "images.tar.gz": (791918971, "67195c5e1c01f1ab5f9b6a5d22b8c27a580d896ece458917e61d459337fa318d"),
    "annotations.tar.gz": (19173078, "52425fb6de5c424942b7626b428656fcbd798db970a937df61750c0f1d358e91"),
}
# What download changes on its own (docs/dvc.md, "Repair policy"); anything else wrong stops it or validation.
REPAIR_POLICY = (
    "an image that decodes but is not an RGB JPEG is re-encoded as RGB JPEG (listed in repaired); "
    "an example whose image or trimap is missing or does not decode is dropped (listed in dropped)"
)
OFFLINE_HINT = "for offline use set data.source: archives (with data.archives.path) or data.source: synthetic"


@dataclass
class DownloadResult:
    """What a download produced: counts per split and the files repaired or dropped on the way."""

    out_dir: Path
    source: str
    counts: dict[str, int] = field(default_factory=dict)
    repaired: list[str] = field(default_factory=list)
    dropped: dict[str, str] = field(default_factory=dict)
    checksums: dict[str, str] = field(default_factory=dict)
    source_files: dict[str, str] = field(default_factory=dict)  # extracted file -> sha256 (archives folders)
    split_conflicts: dict[str, list[str]] = field(default_factory=dict)  # id -> the splits listing it
    tfds: dict = field(default_factory=dict)  # dataset name, version, the download checksums TFDS pins


def download(params: DataParams, out_dir: str | Path) -> DownloadResult:
    """Write the dataset chosen by `params.source` to `out_dir` in the raw layout, atomically.

    A bad input (a malformed list file, a symlink out of the source folder, a checksum
    mismatch) or an I/O error ends in one PetsegError line and leaves `out_dir` as it was.
    """
    out_dir = Path(out_dir)
    check_output_dir(out_dir, DOWNLOAD_FILE, "download")
    result = DownloadResult(out_dir=out_dir, source=params.source)
    with io_errors_named(out_dir, "download"):
        total: int | None
        if params.source == "synthetic":
            records = synthetic_records(params.synthetic, params.seed)
            total = params.synthetic.train_examples + params.synthetic.test_examples
        elif params.source == "archives":
            records, total = archive_records(params.archives, result)
        else:
            records, total = tfds_records(params.tfds, result)
        with atomic_directory(out_dir) as staging:
            writer = RawDatasetWriter(staging)
            for record in progress_bar(records, total=total, desc=f"download ({params.source})", unit="ex"):
                if params.source != "synthetic":
                    record = _normalised(record, result)
                    if record is None:
                        continue
                writer.add(record)
                result.counts[record.split] = result.counts.get(record.split, 0) + 1
            writer.write_index()
            if not writer.examples:
                raise PetsegError(f"the {params.source} source yielded no examples")
            write_json(staging / DOWNLOAD_FILE, download_record(params, result))
    return result


def download_record(params: DataParams, result: DownloadResult) -> dict:
    """download.json: what was read, from where, with which checksums, and every repair or drop.

    Holds no timestamps or run-specific text, so two downloads of the same input write the same bytes.
    """
    return {
        "source": params.source,
        "params": params_to_dict(params),
        "counts": result.counts,
        "repaired": sorted(set(result.repaired)),
        "dropped": dict(sorted(result.dropped.items())),
        "split_conflicts": dict(sorted(result.split_conflicts.items())),
        "checksums": result.checksums,
        "source_files": dict(sorted(result.source_files.items())),
        "tfds": result.tfds,
        "repair_policy": REPAIR_POLICY,
    }


def _normalised(record: RawRecord, result: DownloadResult) -> RawRecord | None:
    """The record with an RGB JPEG image, or None (and a reason in result.dropped) if it cannot be read."""
    try:
        with Image.open(io.BytesIO(record.trimap_bytes)) as trimap:
            trimap.load()
    except Exception as exc:  # PIL raises many types for a broken file
        result.dropped[record.id] = f"trimap does not decode: {stable_text(exc)}"
        return None
    try:
        with Image.open(io.BytesIO(record.image_bytes)) as image:
            image.load()
            if image.format == "JPEG" and image.mode == "RGB":
                return record
            buf = io.BytesIO()
            image.convert("RGB").save(buf, format="JPEG", quality=95)
    except Exception as exc:
        result.dropped[record.id] = f"image does not decode: {stable_text(exc)}"
        return None
    if record.id not in result.repaired:
        result.repaired.append(record.id)
    return dataclasses.replace(record, image_bytes=buf.getvalue())


# ------------------------------------------------------------------------- tfds
def require_network(host: str, port: int = 443, timeout: float = 5.0) -> None:
    """Fail fast, in one line, when `host` cannot be reached."""
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as exc:
        raise PetsegError(f"cannot reach {host}:{port} ({exc.strerror or exc}); {OFFLINE_HINT}") from None


def tfds_records(params: TfdsParams, result: DownloadResult) -> tuple[Iterator[RawRecord], int | None]:
    """Records from TFDS oxford_iiit_pet, downloading and preparing it first when needed."""
    import absl.logging
    import tensorflow_datasets as tfds

    require_writable_folder(params.data_dir, "data.tfds.data_dir")
    verbosity = absl.logging.get_verbosity()
    absl.logging.set_verbosity(absl.logging.ERROR)  # TFDS warns about the not-yet-prepared folder it probes
    try:
        builder = tfds.builder(f"oxford_iiit_pet:{params.version}", data_dir=params.data_dir)
        prepared = builder.is_prepared()
    except Exception as exc:  # tfds raises its own error types for unknown versions
        raise PetsegError(f"data.tfds.version {params.version!r}: {first_line(exc)}") from None
    finally:
        absl.logging.set_verbosity(verbosity)
    if not prepared:
        require_network(TFDS_HOST)
        builder.download_and_prepare()
    result.checksums = {"tfds": f"oxford_iiit_pet {builder.version} (checksums verified by TFDS)"}
    result.tfds = tfds_record(builder)
    total = sum(builder.info.splits[s].num_examples for s in ("train", "test"))
    return _iterate_tfds(builder), total


def tfds_record(builder) -> dict:
    """The TFDS dataset, its version and the download checksums TFDS verifies, for download.json.

    The checksums are read from the builder's own checksums.tsv (url, size, sha256, file name);
    TFDS refuses a download that does not match them.
    """
    import tensorflow_datasets as tfds

    record = {
        "name": builder.name,
        "version": str(builder.version),
        "tensorflow_datasets": tfds.__version__,
        "download_checksums": {},
    }
    try:
        tsv = Path(inspect.getfile(type(builder))).with_name("checksums.tsv")
        lines = tsv.read_text().splitlines()
    except (OSError, TypeError):
        record["download_checksums"] = "not found in the installed tensorflow_datasets"
        return record
    for line in lines:
        fields = line.split("\t")
        if len(fields) >= 3 and not line.startswith("#"):
            record["download_checksums"][fields[0]] = {"size": int(fields[1]), "sha256": fields[2]}
    return record


def _iterate_tfds(builder) -> Iterator[RawRecord]:
    import tensorflow_datasets as tfds

    skip = tfds.decode.SkipDecoding()
    for tfds_split, split in (("train", "trainval"), ("test", "test")):
        ds = builder.as_dataset(split=tfds_split, decoders={"image": skip, "segmentation_mask": skip})
        for ex in tfds.as_numpy(ds):
            breed = BREEDS[int(ex["label"])]
            yield RawRecord(
                id=ex["file_name"].decode().rsplit(".", 1)[0],
                split=split,
                image_bytes=bytes(ex["image"]),
                trimap_bytes=bytes(ex["segmentation_mask"]),
                class_id=int(ex["label"]) + 1,
                breed=breed,
                species=species_of_breed(breed),
            )


# --------------------------------------------------------------------- archives
LIST_FILES = (("trainval", "annotations/trainval.txt"), ("test", "annotations/test.txt"))
ALL_LIST = "annotations/list.txt"  # optional; when present it must agree with the split lists
PINNED_SUMS = "SHA256SUMS"  # optional, in data.archives.path: `sha256sum` lines pinning the extracted files


@dataclass(frozen=True)
class ArchiveIndex:
    """What the list files say: each id's splits (file order; two when it is in both) and class entry."""

    splits: dict[str, list[str]]
    entries: dict[str, ListEntry]

    @property
    def total(self) -> int:
        return sum(len(s) for s in self.splits.values())


def archive_records(params: ArchivesParams, result: DownloadResult) -> tuple[Iterator[RawRecord], int]:
    """Records from the official archives (or their extracted folders) under params.path."""
    root = Path(params.path)
    if root.exists() and not root.is_dir():
        raise PetsegError(
            f"data.archives.path {root}: is a file, not a folder "
            "(put images.tar.gz and annotations.tar.gz, or images/ and annotations/, in a folder)"
        )
    if not root.is_dir():
        raise PetsegError(f"data.archives.path {root}: no such folder (put images.tar.gz and annotations.tar.gz there)")
    source = ArchiveSource(root, params, result)
    index = read_archive_index(source.read_annotation)
    result.split_conflicts = {i: s for i, s in index.splits.items() if len(s) > 1}
    return _archive_examples(source, index, result), index.total


def read_archive_index(read: Callable[[str], bytes | None]) -> ArchiveIndex:
    """Parse trainval.txt and test.txt (and list.txt when present) strictly; see components/sources/annotations.py."""
    splits: dict[str, list[str]] = {}
    entries: dict[str, ListEntry] = {}
    where: dict[str, str] = {}
    for split, name in LIST_FILES:
        data = read(name)
        if data is None:
            raise PetsegError(f"{name}: missing from the annotations (it is in the official annotations.tar.gz)")
        for entry in parse_list_file(data, name):
            if entry.id in entries and entries[entry.id].class_id != entry.class_id:
                raise PetsegError(
                    f"{name} line {entry.line}: {entry.id} has class id {entry.class_id} here but "
                    f"{entries[entry.id].class_id} in {where[entry.id]}; fix one of the lists"
                )
            splits.setdefault(entry.id, []).append(split)
            entries.setdefault(entry.id, entry)
            where.setdefault(entry.id, f"{name} line {entry.line}")
    everything = read(ALL_LIST)
    if everything is not None:
        for entry in parse_list_file(everything, ALL_LIST):
            known = entries.get(entry.id)
            if known is not None and known.class_id != entry.class_id:
                raise PetsegError(
                    f"{ALL_LIST} line {entry.line}: {entry.id} has class id {entry.class_id} here but "
                    f"{known.class_id} in {where[entry.id]}; fix one of the lists"
                )
    return ArchiveIndex(splits, entries)


class ArchiveSource:
    """Reads the archives source: tarballs (checked against the official sha256) or extracted folders.

    Extracted files are read only from inside `root` (a symlink resolving outside it is refused),
    each one's sha256 is recorded in result.source_files, and, when `root/SHA256SUMS` exists and
    verify_checksums is on, each must match its line there.
    """

    def __init__(self, root: Path, params: ArchivesParams, result: DownloadResult):
        self.root, self.params, self.result = root, params, result
        self.resolved_root = root.resolve()
        self.pinned = self._read_pinned() if params.verify_checksums else None
        self.annotation_members: dict[str, bytes] | None = None
        tarball = root / "annotations.tar.gz"
        if self._is_inside_file(tarball):
            _verify_archive(tarball, params, result)
            self.annotation_members = _tar_members(tarball, "annotations/")
        elif not (root / "annotations").is_dir():
            raise PetsegError(f"data.archives.path {root}: neither annotations.tar.gz nor annotations/ found")

    def read_annotation(self, name: str) -> bytes | None:
        """A file under annotations/ (from the tarball or the folder), or None when it is not there."""
        if self.annotation_members is not None:
            return self.annotation_members.get(name)
        return self.read_file(name)

    def read_file(self, name: str) -> bytes | None:
        """An extracted file under root, checked and recorded; None when missing."""
        path = self.root / name
        if not self._is_inside_file(path):
            return None
        data = path.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        self.result.source_files[name] = digest
        if self.pinned is not None:
            expected = self.pinned.get(name)
            if expected is None:
                raise PetsegError(f"{path}: not listed in {self.root / PINNED_SUMS}; add its line or remove the file")
            if expected != digest:
                raise PetsegError(
                    f"{path}: sha256 {digest[:12]}… does not match {expected[:12]}… pinned in "
                    f"{self.root / PINNED_SUMS}; restore the file, or set "
                    "data.archives.verify_checksums: false for a modified copy"
                )
        return data

    def _is_inside_file(self, path: Path) -> bool:
        """Whether `path` is a file; PetsegError when it (through a symlink) lies outside root."""
        if not (path.is_symlink() or path.exists()):
            return False
        try:
            resolved = path.resolve()
        except (OSError, RuntimeError) as exc:  # a symlink loop
            raise PetsegError(f"{path}: cannot be resolved ({exc}); replace the link with the file") from None
        if not resolved.is_relative_to(self.resolved_root):
            raise PetsegError(
                f"{path}: a symlink to {resolved}, outside data.archives.path {self.root}; "
                "copy the file into the folder instead"
            )
        return resolved.is_file()

    def _read_pinned(self) -> dict[str, str] | None:
        path = self.root / PINNED_SUMS
        if not self._is_inside_file(path):
            return None
        pinned = {}
        text = decode_text(path.read_bytes(), str(path))
        for number, line in enumerate(text.split("\n"), start=1):
            if not line.strip():
                continue
            match = _SUMS_LINE.fullmatch(line.rstrip("\r"))
            if match is None:
                raise PetsegError(f"{path} line {number}: expected '<sha256>  <path>' as `sha256sum` writes it")
            pinned[match["path"].removeprefix("./")] = match["digest"].lower()
        return pinned


_SUMS_LINE = re.compile(r"(?P<digest>[0-9a-fA-F]{64}) [ *](?P<path>\S.*)")


def _tar_members(tarball: Path, prefix: str) -> dict[str, bytes]:
    """The regular files under `prefix` in a tarball, by name; a link there is refused."""
    members = {}
    with _tar_errors_named(tarball), tarfile.open(tarball) as tar:
        for member in tar:
            name = member.name.removeprefix("./")
            if not name.startswith(prefix):
                continue
            _refuse_link(member, name, tarball)
            if member.isfile():
                members[name] = _member_bytes(tar, member)
    return members


@contextlib.contextmanager
def _tar_errors_named(tarball: Path) -> Iterator[None]:
    """A damaged or truncated tarball (only possible with verify_checksums off) as one line."""
    try:
        yield
    except (tarfile.TarError, EOFError, zlib.error, lzma.LZMAError, gzip.BadGzipFile) as exc:
        raise PetsegError(
            f"{tarball}: not a readable tar archive ({stable_text(exc)}); "
            "re-download it or extract it into images/ and annotations/"
        ) from None


def _member_bytes(tar: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    """A regular file's bytes from an open tarball (members are checked to be files first)."""
    data = tar.extractfile(member)
    if data is None:
        raise PetsegError(f"{member.name}: not a regular file in the archive")
    return data.read()


def _refuse_link(member: tarfile.TarInfo, name: str, tarball: Path) -> None:
    if member.issym() or member.islnk():
        raise PetsegError(
            f"{tarball}: member {name} is a link (to {member.linkname}); the official archives hold only regular files"
        )


def _verify_archive(path: Path, params: ArchivesParams, result: DownloadResult) -> None:
    digest = sha256_file(path)
    result.checksums[path.name] = digest
    _expected_size, expected_sha = OFFICIAL_ARCHIVES[path.name]
    if params.verify_checksums and digest != expected_sha:
        raise PetsegError(
            f"{path}: sha256 {digest[:12]}… is not the official {expected_sha[:12]}… "
            "(re-download it, or set data.archives.verify_checksums: false for a modified copy)"
        )


def _archive_examples(source: ArchiveSource, index: ArchiveIndex, result: DownloadResult) -> Iterator[RawRecord]:
    """One record per (id, split) the lists name, images from the tarball (in its order) or the folder."""

    def records(example_id: str, image_bytes: bytes | None) -> Iterator[RawRecord]:
        if image_bytes is None:
            result.dropped[example_id] = "image missing"
            return
        trimap_bytes = source.read_annotation(f"annotations/trimaps/{example_id}.png")
        if trimap_bytes is None:
            result.dropped[example_id] = "trimap missing"
            return
        entry = index.entries[example_id]
        for split in index.splits[example_id]:
            yield RawRecord(example_id, split, image_bytes, trimap_bytes, entry.class_id, entry.breed, entry.species)

    tarball = source.root / "images.tar.gz"
    if source._is_inside_file(tarball):
        _verify_archive(tarball, source.params, result)
        seen = set()
        with _tar_errors_named(tarball), tarfile.open(tarball, mode="r|*") as tar:
            for member in tar:
                name = member.name.removeprefix("./")
                if not name.startswith("images/"):
                    continue
                _refuse_link(member, name, tarball)
                example_id = name.removeprefix("images/").rsplit(".", 1)[0]
                if not (member.isfile() and name == f"images/{example_id}.jpg" and example_id in index.splits):
                    continue
                seen.add(example_id)
                image_bytes = _member_bytes(tar, member)
                yield from records(example_id, image_bytes)
        for example_id in sorted(set(index.splits) - seen):
            result.dropped[example_id] = "image missing"
        return
    if not (source.root / "images").is_dir():
        raise PetsegError(f"data.archives.path {source.root}: neither images.tar.gz nor images/ found")
    for example_id in index.splits:
        yield from records(example_id, source.read_file(f"images/{example_id}.jpg"))
