"""The raw dataset: one on-disk format whatever the source.

Every source (TFDS, the official archives, the synthetic generator) writes
the same layout, so nothing downstream can tell them apart:

    <raw>/images/<id>.jpg        encoded image bytes as delivered
    <raw>/trimaps/<id>.png       trimap PNG: 1 pet, 2 background, 3 border
    <raw>/examples.csv           id, split, image, trimap, class_id, breed, species
    <raw>/download.json          source, counts, checksums, repaired and dropped files

`split` is the official one: `trainval` or `test`. `class_id` is the official
1-37 breed id (0 when unknown), `species` is `cat`, `dog` or empty.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
from dataclasses import dataclass
from pathlib import Path

from petseg.components.core.errors import PetsegError

SPLITS = ("trainval", "test")
INDEX_FILE = "examples.csv"
DOWNLOAD_FILE = "download.json"

# The 37 Oxford-IIIT Pet breeds in official class-id order (1-based); capitalised names are cats.
BREEDS = (
    "Abyssinian",
    "american_bulldog",
    "american_pit_bull_terrier",
    "basset_hound",
    "beagle",
    "Bengal",
    "Birman",
    "Bombay",
    "boxer",
    "British_Shorthair",
    "chihuahua",
    "Egyptian_Mau",
    "english_cocker_spaniel",
    "english_setter",
    "german_shorthaired",
    "great_pyrenees",
    "havanese",
    "japanese_chin",
    "keeshond",
    "leonberger",
    "Maine_Coon",
    "miniature_pinscher",
    "newfoundland",
    "Persian",
    "pomeranian",
    "pug",
    "Ragdoll",
    "Russian_Blue",
    "saint_bernard",
    "samoyed",
    "scottish_terrier",
    "shiba_inu",
    "Siamese",
    "Sphynx",
    "staffordshire_bull_terrier",
    "wheaten_terrier",
    "yorkshire_terrier",
)

ID_PATTERN = re.compile(r"[A-Za-z0-9_.-]{1,200}")  # use with fullmatch: an id is a safe file name
INDEX_COLUMNS = ("id", "split", "image", "trimap", "class_id", "breed", "species")


def species_of_breed(breed: str) -> str:
    """`cat` or `dog`, by the dataset's own convention (cat breeds are capitalised)."""
    return "cat" if breed[:1].isupper() else "dog"


@dataclass(frozen=True)
class RawExample:
    """One row of examples.csv; paths are relative to the raw dataset folder."""

    id: str
    split: str
    image: str
    trimap: str
    class_id: int
    breed: str
    species: str


@dataclass(frozen=True)
class RawRecord:
    """One example as a source yields it, before it is written."""

    id: str
    split: str
    image_bytes: bytes
    trimap_bytes: bytes
    class_id: int = 0
    breed: str = ""
    species: str = ""


class RawDatasetWriter:
    """Writes records into a (staging) folder in the raw layout."""

    def __init__(self, root: Path):
        self.root = Path(root)
        (self.root / "images").mkdir(parents=True, exist_ok=True)
        (self.root / "trimaps").mkdir(parents=True, exist_ok=True)
        self.examples: list[RawExample] = []
        self._ids: set[tuple[str, str]] = set()

    def add(self, record: RawRecord) -> RawExample:
        """Write one record's files and index row.

        An id already written under another split gets a second index row pointing at the
        same files (the source listed it in both splits; validation's leakage check names it).
        """
        if not ID_PATTERN.fullmatch(record.id):
            raise ValueError(f"example id {record.id!r} is not a safe file name")
        if record.split not in SPLITS:
            raise ValueError(f"split {record.split!r} is not one of {SPLITS}")
        if (record.id, record.split) in self._ids:
            raise ValueError(f"example id {record.id!r} written twice to split {record.split}")
        example = RawExample(
            id=record.id,
            split=record.split,
            image=f"images/{record.id}.jpg",
            trimap=f"trimaps/{record.id}.png",
            class_id=record.class_id,
            breed=record.breed,
            species=record.species,
        )
        if not any(written_id == record.id for written_id, _ in self._ids):
            (self.root / example.image).write_bytes(record.image_bytes)
            (self.root / example.trimap).write_bytes(record.trimap_bytes)
        self._ids.add((record.id, record.split))
        self.examples.append(example)
        return example

    def write_index(self) -> None:
        write_index(self.root, self.examples)


def write_index(root: Path, examples: list[RawExample]) -> None:
    """Write examples.csv (used by the writer, and by tests that build bad datasets)."""
    names = list(INDEX_COLUMNS)
    with open(Path(root) / INDEX_FILE, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=names)
        writer.writeheader()
        for ex in examples:
            writer.writerow({n: getattr(ex, n) for n in names})


def read_index(root: str | Path) -> list[RawExample]:
    """The examples of a raw dataset folder, or PetsegError (one line, naming the row) if it is not one.

    The index is user-controlled input to validate and preprocess, so every row is checked:
    the exact header, one value per column, a safe id, a whole-number class id in 0-37, and
    image/trimap paths that stay inside `root` (no absolute path, no `..`, no symlink out).
    Duplicate ids and unknown splits are left for validation to name.
    """
    root = Path(root)
    index = root / INDEX_FILE
    if not index.is_file():
        raise PetsegError(f"{root}: not a raw dataset (no {INDEX_FILE}); run `petseg download` first")
    redo = "run `petseg download` again"
    try:
        text = index.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PetsegError(f"{index}: not UTF-8 text (byte at offset {exc.start}); {redo}") from None
    except OSError as exc:
        raise PetsegError(f"{index}: cannot read ({exc.strerror or exc}); {redo}") from None
    try:
        rows = list(csv.reader(io.StringIO(text, newline="")))
    except csv.Error as exc:
        raise PetsegError(f"{index}: malformed CSV ({exc}); {redo}") from None
    if not rows:
        raise PetsegError(f"{index}: empty (no header row); {redo}")
    if tuple(rows[0]) != INDEX_COLUMNS:
        raise PetsegError(
            f"{index} line 1: header is {_cut(','.join(rows[0]))!r}, expected {','.join(INDEX_COLUMNS)}; {redo}"
        )
    resolved_root = root.resolve()
    return [
        _index_row(row, f"{index} row {number}", root, resolved_root, redo)
        for number, row in enumerate(rows[1:], start=2)
        if row
    ]


def _index_row(row: list[str], where: str, root: Path, resolved_root: Path, redo: str) -> RawExample:
    if len(row) != len(INDEX_COLUMNS):
        raise PetsegError(f"{where}: {len(row)} values, expected {len(INDEX_COLUMNS)}; {redo}")
    values = dict(zip(INDEX_COLUMNS, row, strict=True))
    if not ID_PATTERN.fullmatch(values["id"]):
        raise PetsegError(f"{where}: id {_cut(values['id'])!r} is not a safe file name; {redo}")
    class_text = values["class_id"] or "0"
    if not (class_text.isascii() and class_text.isdecimal() and int(class_text) <= len(BREEDS)):
        raise PetsegError(f"{where}: class_id {_cut(class_text)!r} is not a whole number in 0-{len(BREEDS)}; {redo}")
    for column in ("image", "trimap"):
        _check_inside(values[column], column, where, root, resolved_root, redo)
    return RawExample(
        id=values["id"],
        split=values["split"],
        image=values["image"],
        trimap=values["trimap"],
        class_id=int(class_text),
        breed=values["breed"],
        species=values["species"],
    )


def _check_inside(rel: str, column: str, where: str, root: Path, resolved_root: Path, redo: str) -> None:
    """PetsegError unless `rel` is a relative path that stays inside the raw folder, symlinks resolved."""
    path = Path(rel)
    if not rel or path.is_absolute() or ".." in path.parts:
        raise PetsegError(f"{where}: {column} path {_cut(rel)!r} must be relative, inside the raw folder; {redo}")
    try:
        (root / path).resolve().relative_to(resolved_root)
    except (ValueError, OSError, RuntimeError):
        raise PetsegError(f"{where}: {column} {_cut(rel)!r} resolves outside {root} (a symlink?); {redo}") from None


def _cut(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[:limit] + "…"


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def dataset_fingerprint(root: str | Path) -> str:
    """A hash of the index and every file's content: validation and preprocessing must see the same one."""
    root = Path(root)
    examples = read_index(root)
    h = hashlib.sha256()
    h.update((root / INDEX_FILE).read_bytes())
    for ex in examples:
        for rel in (ex.image, ex.trimap):
            path = root / rel
            h.update(rel.encode())
            h.update(sha256_file(path).encode() if path.is_file() else b"missing")
    return h.hexdigest()
