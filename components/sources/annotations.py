"""The official Oxford-IIIT Pet list files (`trainval.txt`, `test.txt`, `list.txt`), read strictly.

Each non-comment line is `<id> <class id> <species> <breed id>`:

- `id`: a safe file name (letters, digits, `_`, `.`, `-`); the image is `images/<id>.jpg`;
- `class id`: 1-37, the breed in official order (see rawdata.BREEDS);
- `species`: 1 cat, 2 dog, and it must agree with the class id's breed;
- `breed id`: the breed's rank among its species' breeds in class-id order (1-12 cats, 1-25 dogs).

Nothing is guessed or fixed here: a line that breaks any rule, a non-UTF-8 byte, or an id
listed twice in one file stops the download with one line naming the file, the line and
the rule. An id listed in both `trainval.txt` and `test.txt` is not decided here either:
download keeps both memberships so that validation's critical `no_train_test_leakage`
expectation names it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from petseg.components.contracts.rawdata import BREEDS, ID_PATTERN, species_of_breed
from petseg.components.core.errors import PetsegError, utf8_text

SPECIES_CODES = {1: "cat", 2: "dog"}
_INTEGER = re.compile(r"[0-9]{1,6}")  # ASCII digits only: int() would also take '+1', '1_0' and other scripts' digits


@dataclass(frozen=True)
class ListEntry:
    """One line of a list file."""

    id: str
    class_id: int
    species: str
    breed_id: int
    line: int

    @property
    def breed(self) -> str:
        return BREEDS[self.class_id - 1]


def breed_rank(class_id: int) -> int:
    """The official breed id: the breed's 1-based rank among its species' breeds, in class-id order."""
    species = species_of_breed(BREEDS[class_id - 1])
    return sum(species_of_breed(b) == species for b in BREEDS[:class_id])


def decode_text(data: bytes, name: str) -> str:
    """`data` as UTF-8 text, or PetsegError naming the line and offset of the first bad byte."""
    return utf8_text(data, name, "the list files are plain ASCII")


def parse_list_file(data: bytes, name: str) -> list[ListEntry]:
    """The entries of one list file, in file order; PetsegError (one line) on the first bad line."""
    entries: list[ListEntry] = []
    first_line_of: dict[str, int] = {}
    for number, raw_line in enumerate(decode_text(data, name).split("\n"), start=1):
        line = raw_line.strip()
        if not line or line.startswith("#"):
            continue
        entry = _parse_line(line, f"{name} line {number}", number)
        if entry.id in first_line_of:
            raise PetsegError(
                f"{name} line {number}: id {entry.id} already listed on line "
                f"{first_line_of[entry.id]}; remove the duplicate line"
            )
        first_line_of[entry.id] = number
        entries.append(entry)
    return entries


def _parse_line(line: str, where: str, number: int) -> ListEntry:
    fields = line.split()
    if len(fields) != 4:
        raise PetsegError(
            f"{where}: {len(fields)} fields, expected 4 (id, class id, species, breed id): {_shown(line)}"
        )
    example_id, class_text, species_text, breed_text = fields
    if not ID_PATTERN.fullmatch(example_id):
        raise PetsegError(f"{where}: id {_shown(example_id)} is not a safe file name (letters, digits, _ . - only)")
    class_id = _integer(class_text, "class id", where)
    if not 1 <= class_id <= len(BREEDS):
        raise PetsegError(f"{where}: class id {class_id} of {example_id} is outside 1-{len(BREEDS)}")
    breed = BREEDS[class_id - 1]
    species_code = _integer(species_text, "species", where)
    if SPECIES_CODES.get(species_code) != species_of_breed(breed):
        raise PetsegError(
            f"{where}: species {species_code} of {example_id} does not match class id {class_id} "
            f"({breed}, a {species_of_breed(breed)}; species is 1 cat, 2 dog)"
        )
    breed_id = _integer(breed_text, "breed id", where)
    if breed_id != breed_rank(class_id):
        raise PetsegError(
            f"{where}: breed id {breed_id} of {example_id} does not match class id {class_id} "
            f"({breed} is {species_of_breed(breed)} breed {breed_rank(class_id)})"
        )
    return ListEntry(example_id, class_id, species_of_breed(breed), breed_id, number)


def _integer(text: str, what: str, where: str) -> int:
    if not _INTEGER.fullmatch(text):
        raise PetsegError(f"{where}: {what} {_shown(text)} is not a whole number")
    return int(text)


def _shown(text: str, limit: int = 60) -> str:
    """`text` quoted for a one-line message: escaped, and cut short when long."""
    shown = ascii(text[:limit])
    return shown + ("…" if len(text) > limit else "")
