"""Reading a REST request body as JSON with bounded work: a nesting limit, numeric arrays straight into numpy, a cost.

A JSON parser that builds Python objects spends 10 to 30 bytes of memory per
byte of body (orjson: ~1.1 GB for a 60 MiB image batch, one list object per
pixel). This module parses a body in three passes, none of which recurses:

1. `scan_structure`: one vectorised pass over the bytes, in chunks, that
   follows strings (and their escapes) and brackets. It refuses a body nested
   deeper than the limit before anything is parsed, and finds the long runs
   of characters that can only be a numeric array (digits, signs, '.', 'e',
   brackets, commas, whitespace) outside strings.
2. `numeric_array`: each such run that is a well-formed rectangular array of
   JSON numbers is read straight into one int64 or float64 array (its shape
   proven by comparing its bracket-and-comma skeleton with the one that shape
   must have, every number checked against JSON's number grammar). A run that
   is anything else (ragged, a malformed number, an empty list) is left as
   text, for the JSON parser to refuse with its own message.
3. What is left (keys, strings, small lists) goes to orjson with a unique
   placeholder where each array was; the placeholders are then swapped for
   `ParsedArray`s.

The caller's `afford(bytes)` is told what each step will take in memory
before the step allocates it (an array's numbers once its shape is known, the
Python objects of the rest before orjson builds them), so it can refuse a
body its budget cannot afford.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
import numpy as np
import orjson

from petseg.serving.errors import ServingError

MIN_ARRAY_BYTES = 64 * 1024  # shorter numeric runs cost little as Python objects; orjson parses them
CHUNK_BYTES = 4 * 2**20  # the scans work on this much of the body at a time, bounding their temporaries
# Memory orjson takes per structural character (, [ { : ") of the JSON it turns into Python objects.
# Measured on 2,000,000-element bodies of [], {}, "a", 0.5, {"a":[]}, {"a":"b","c":"d"}, [[1]]:
# 23 to 56 bytes; this is the worst, rounded up.
OBJECT_BYTES_PER_TOKEN = 64
NUMBER_BYTES = 8  # a numeric array is read as int64 or float64
_INVALID = grpc.StatusCode.INVALID_ARGUMENT


def _table(chars: bytes) -> np.ndarray:
    table = np.zeros(256, bool)
    table[list(chars)] = True
    return table


_NUMBER_CHAR = _table(b"0123456789-+.eE")
_DIGIT = _table(b"0123456789")
_EXPONENT = _table(b"eE")
_OBJECT_TOKEN = _table(b',[{:"')
_BACKSLASH, _QUOTE = ord("\\"), ord('"')


# Over a whole chunk, comparisons are ~30x faster than a table lookup (w[...] indexing), so the
# classes the scans need on every byte are written as comparisons; the tables serve small arrays.
def _numeric_run_chars(w: np.ndarray) -> np.ndarray:
    """+ , - . 0-9 (43..57 but '/'), brackets, e, E and JSON whitespace."""
    mask = (w >= 43) & (w <= 57) & (w != 47)
    for char in b"[]eE \n\r\t":
        mask |= w == char
    return mask


def _number_chars(w: np.ndarray) -> np.ndarray:
    """+ - . 0-9 e E."""
    mask = (w >= 43) & (w <= 57) & (w != 47) & (w != 44)
    return mask | (w == ord("e")) | (w == ord("E"))


def _any_of(w: np.ndarray, chars: bytes) -> np.ndarray:
    mask = w == chars[0]
    for char in chars[1:]:
        mask |= w == char
    return mask


_OPENS = _table(b"[{")
_BRACKETS_TO_SPACES = bytes.maketrans(b"[]", b"  ")
_SECRET = secrets.token_hex(16)  # placeholders a client cannot forge
_NUMBER_START = re.compile(rb"[-0-9]")
_NUMBER_TEXT = re.compile(rb"[-+0-9.eE]{1,64}")  # a number as quoted in a message (at most 64 characters)
_LONG_INTEGER = re.compile(rb"-?[0-9]{19}")


@dataclass(frozen=True)
class ParsedArray:
    """A JSON array of numbers, already read into numpy (int64, or float64 when it has a fraction or exponent)."""

    values: np.ndarray
    first_token: str  # the first number as written, for messages
    first_float: str | None  # the first number written with '.', 'e' or 'E' (an integer input refuses it)
    first_long_int: str | None  # the first integer too long for int64 (read as float)
    excerpt: str  # the start of the array as written, for messages

    def debug_text(self) -> str:
        return self.excerpt


@dataclass
class BodyScan:
    """What one pass over the body found: its depth, and where numeric arrays may be."""

    max_depth: int = 0
    runs: list[tuple[int, int]] = field(default_factory=list)  # [start, end) of long numeric runs outside strings


@dataclass
class ParsedBody:
    """A body split into its numeric arrays and the rest, with what parsing the rest will cost."""

    arrays: dict[str, ParsedArray]
    rest: bytes | bytearray  # the body with each array replaced by a placeholder string
    cost_bytes: int  # memory the arrays hold plus what orjson will take for `rest`


# ------------------------------------------------------------------ structure
def scan_structure(body: bytes | bytearray, max_depth: int) -> BodyScan:
    """The body's nesting depth and its long numeric runs; ServingError when it nests deeper than max_depth.

    Valid JSON is followed exactly (strings, escaped quotes); for invalid
    JSON the result may be off, which is harmless: the JSON parser refuses it.
    """
    data = np.frombuffer(body, np.uint8)
    scan = BodyScan()
    depth = 0
    in_string = False
    escape_next = False  # the previous chunk ended in an odd run of backslashes, inside a string
    open_run: tuple[int, bool] | None = None  # a numeric run still open at the end of the previous chunk
    for offset in range(0, len(data), CHUNK_BYTES):
        chunk = data[offset : offset + CHUNK_BYTES]
        quotes, escape_next = _unescaped_quotes(chunk, escape_next)
        # a character is inside a string when an odd number of real quotes precede it (plus the carried state)
        brackets = np.flatnonzero(_any_of(chunk, b"[]{}"))
        if quotes.size or in_string:
            brackets = brackets[(np.searchsorted(quotes, brackets) % 2 == 1) == in_string]
        steps = np.where(_OPENS[chunk[brackets]], 1, -1).astype(np.int32)
        depths = depth + np.cumsum(steps, dtype=np.int32)
        if depths.size and int(depths.max()) > max_depth:
            at = offset + int(brackets[int(np.argmax(depths > max_depth))])
            raise ServingError(
                _INVALID,
                f"JSON Parse error: nested deeper than {max_depth} levels at offset: {at}; a tensor needs one "
                "level per dimension, so no request needs more",
            )
        if depths.size:
            scan.max_depth = max(scan.max_depth, int(depths.max()))
            depth = int(depths[-1])
        open_run = _collect_runs(chunk, offset, quotes, in_string, open_run, scan.runs)
        in_string ^= len(quotes) % 2 == 1
    if open_run is not None:
        _keep_run(open_run, len(data), scan.runs)
    return scan


def _unescaped_quotes(chunk: np.ndarray, escape_first: bool) -> tuple[np.ndarray, bool]:
    """Positions of the quotes in chunk that are not escaped, and whether the next chunk's first byte is escaped."""
    backslashes = np.flatnonzero(chunk == _BACKSLASH)
    escaped = np.zeros(0, np.int64)
    escape_next = False
    if escape_first:
        escaped = np.array([0])
    if backslashes.size:
        breaks = np.flatnonzero(np.diff(backslashes) != 1)
        starts = backslashes[np.concatenate(([0], breaks + 1))]
        ends = backslashes[np.concatenate((breaks, [backslashes.size - 1]))]
        lengths = ends - starts + 1
        if escape_first and starts[0] == 0:  # the first backslash is itself escaped by the previous chunk
            lengths[0] -= 1
        odd_ends = ends[lengths % 2 == 1] + 1
        escape_next = bool(odd_ends.size and odd_ends[-1] == len(chunk))
        escaped = np.concatenate((escaped, odd_ends[odd_ends < len(chunk)]))
    quotes = np.flatnonzero(chunk == _QUOTE)
    if escaped.size:
        quotes = quotes[~np.isin(quotes, escaped)]
    return quotes, escape_next


def _collect_runs(
    chunk: np.ndarray,
    offset: int,
    quotes: np.ndarray,
    in_string: bool,
    open_run: tuple[int, bool] | None,
    runs: list[tuple[int, int]],
) -> tuple[int, bool] | None:
    """Append the long numeric runs outside strings that end in this chunk; return the one still open at its end.

    A run is (absolute start, inside a string). It never holds a quote, so it
    is inside a string when an odd number of real quotes precede its start.
    """
    numeric = _numeric_run_chars(chunk)
    changes = np.flatnonzero(numeric[1:] != numeric[:-1]) + 1
    starts = changes[numeric[changes]].tolist()
    ends = changes[~numeric[changes]].tolist()
    if open_run is not None and not numeric[0]:  # the open run ended exactly at the chunk boundary
        _keep_run(open_run, offset, runs)
        open_run = None
    if numeric[0]:
        starts.insert(0, 0)
    for index, start in enumerate(starts):
        if index == 0 and start == 0 and open_run is not None:
            run = open_run
        else:
            run = (offset + start, in_string ^ (int(np.searchsorted(quotes, start)) % 2 == 1))
        if index >= len(ends):
            return run
        _keep_run(run, offset + ends[index], runs)
    return None


def _keep_run(run: tuple[int, bool], end: int, runs: list[tuple[int, int]]) -> None:
    start, inside_string = run
    if not inside_string and end - start >= MIN_ARRAY_BYTES:
        runs.append((start, end))


# -------------------------------------------------------------- numeric arrays
def numeric_array(
    body: bytes | bytearray, start: int, end: int, afford: Callable[[int], None] = lambda cost: None
) -> tuple[ParsedArray, int, int] | None:
    """The rectangular array of JSON numbers written in body[start:end], with its exact [start, end); else None.

    The run may begin with whitespace and end with whitespace or commas (it
    was cut at characters that cannot be part of an array); anything else
    about it that is not a well-formed array gives None. afford(bytes) is
    called with the array's size once its shape is known, before it is read.
    """
    while start < end and body[start] in b" \t\r\n":
        start += 1
    while end > start and body[end - 1] in b" \t\r\n,":
        end -= 1
    if start >= end or body[start] != ord("[") or body[end - 1] != ord("]"):
        return None
    data = np.frombuffer(body, np.uint8, count=end - start, offset=start)
    pieces = []
    for at in range(0, len(data), CHUNK_BYTES):
        piece = _skeleton_chunk(data, at, min(len(data), at + CHUNK_BYTES))
        if piece is None:
            return None
        pieces.append(piece)
    shape = _rectangular_shape(b"".join(pieces))
    if shape is None:
        return None
    count = int(np.prod(shape))
    afford(count * NUMBER_BYTES)
    float_marks = [p for p in (body.find(mark, start, end) for mark in (b".", b"e", b"E")) if p >= 0]
    has_float = bool(float_marks)
    values = _read_numbers(body, start, end, count, np.float64 if has_float else np.int64)
    first_long = None
    if values is not None and not has_float and _saturated(values):  # an integer longer than int64 holds
        long_match = _LONG_INTEGER.search(body, start, end)
        first_long = _number_text(body, start, long_match.start()) if long_match else None
        values = _read_numbers(body, start, end, count, np.float64)
    if values is None:
        return None
    parsed = ParsedArray(
        values=values.reshape(shape),
        first_token=_number_text(body, start, _NUMBER_START.search(body, start, end).start()),  # type: ignore[union-attr]
        first_float=_number_text(body, start, min(float_marks)) if float_marks else None,
        first_long_int=first_long,
        excerpt=bytes(body[start : start + 256]).decode("ascii"),
    )
    return parsed, start, end


def _number_text(body: bytes | bytearray, start: int, position: int) -> str:
    """The number that position is in (the array starting at start), as written, cut to 64 characters."""
    before = np.frombuffer(body, np.uint8, count=position - start, offset=start)
    others = np.flatnonzero(~_NUMBER_CHAR[before])
    begin = start + (int(others[-1]) + 1 if others.size else 0)
    return _NUMBER_TEXT.match(body, begin).group().decode()  # type: ignore[union-attr]


def _saturated(values: np.ndarray) -> bool:
    """Whether an int64 read hit int64's bounds, as fromstring does with an integer too long for it."""
    bounds = np.iinfo(np.int64)
    return bool(values.size) and bool((values.max() == bounds.max) or (values.min() == bounds.min))


def _skeleton_chunk(data: np.ndarray, lo: int, hi: int) -> bytes | None:
    """data[lo:hi] as its skeleton ('[', ']', ',' and one 'n' per number); None where a number is malformed.

    Every number is checked against JSON's grammar (-?(0|[1-9]\\d*)(\\.\\d+)?([eE][+-]?\\d+)?) by its
    neighbours; a number with two '.' or two exponents passes here and is caught when it is read.
    """
    before = data[max(0, lo - 2) : lo]
    after = data[hi : hi + 1]
    pad = np.full(3, ord(" "), np.uint8)
    window = np.concatenate((pad[: 2 - len(before)], before, data[lo:hi], after, pad[: 1 - len(after)]))
    chars = window[2:-1]  # chars[i] is window[i + 2]: its two predecessors and its successor are in window
    number = _number_chars(window)
    token_start = number[2:-1] & ~number[1:-2]
    special = np.flatnonzero(_any_of(chars, b"-+.eE0"))  # only these characters have rules about their neighbours
    if special.size:
        char, prev, prev2, nxt = chars[special], window[special + 1], window[special], window[special + 3]
        prev_number, prev_digit, next_digit = _NUMBER_CHAR[prev], _DIGIT[prev], _DIGIT[nxt]
        minus, plus = char == ord("-"), char == ord("+")
        starts_number = ~prev_number | ((prev == ord("-")) & ~_NUMBER_CHAR[prev2])
        bad = (
            (minus & prev_number & ~_EXPONENT[prev])  # '-' begins a number or its exponent
            | ((minus | plus) & ~next_digit)
            | (plus & ~_EXPONENT[prev])  # '+' only in an exponent
            | ((char == ord(".")) & ~(prev_digit & next_digit))
            | (_EXPONENT[char] & ~(prev_digit & (next_digit | (nxt == ord("+")) | (nxt == ord("-")))))
            | ((char == ord("0")) & starts_number & next_digit)  # no leading zero
        )
        if bad.any():
            return None
    keep = _any_of(chars, b"[],") | token_start
    skeleton = chars[keep]
    skeleton[token_start[keep]] = ord("n")
    return skeleton.tobytes()


def _rectangular_shape(skeleton: bytes) -> tuple[int, ...] | None:
    """The shape whose nested lists are written exactly as skeleton ('[[n,n],[n,n]]' -> (2, 2)), else None."""
    rank = len(skeleton) - len(skeleton.lstrip(b"["))
    if rank == 0 or skeleton[rank : rank + 1] != b"n":
        return None  # an empty list has no shape TF Serving reads from JSON (and costs nothing as objects)
    innermost = skeleton.find(b"]")
    dims = [(innermost - rank + 1) // 2]
    block = b"[" + b",".join([b"n"] * dims[0]) + b"]"
    for level in range(rank - 1, 0, -1):  # outwards; the first list of this level ends at its run of ']'
        closing = skeleton.find(b"]" * (rank - level + 1))
        length = closing + (rank - level + 1) - (level - 1)
        if closing < 0 or (length - 1) % (len(block) + 1):
            return None
        count = (length - 1) // (len(block) + 1)
        dims.insert(0, count)
        block = b"[" + b",".join([block] * count) + b"]"
        if len(block) > len(skeleton):
            return None
    return tuple(dims) if block == skeleton else None


def _read_numbers(body: bytes | bytearray, start: int, end: int, count: int, dtype) -> np.ndarray | None:
    """The count numbers of body[start:end] as a flat array, read a chunk (cut after a comma) at a time."""
    values = np.empty(count, dtype)
    filled = 0
    at = start
    while at < end:
        stop = end if end - at <= CHUNK_BYTES else body.find(b",", at + CHUNK_BYTES, end) + 1
        if stop <= 0:
            stop = end
        text = bytes(body[at:stop]).translate(_BRACKETS_TO_SPACES)
        try:
            chunk = np.fromstring(text, dtype=dtype, sep=",")
        except ValueError:
            return None  # a number fromstring could not read to its end (1.2.3, 1e5e5)
        if filled + len(chunk) > count:
            return None
        values[filled : filled + len(chunk)] = chunk
        filled += len(chunk)
        at = stop
    return values if filled == count else None


# --------------------------------------------------------------------- parse
def split_body(
    body: bytes | bytearray, max_depth: int, afford: Callable[[int], None] = lambda cost: None
) -> ParsedBody:
    """The body's numeric arrays read into numpy and the rest with placeholders; ServingError when too deep.

    afford(bytes) is called before each array is read and with the cost of the rest, before returning.
    """
    scan = scan_structure(body, max_depth)
    arrays: dict[str, ParsedArray] = {}
    pieces: list[bytes] = []
    at = 0
    number_bytes = 0
    for run_start, run_end in scan.runs:
        found = numeric_array(body, run_start, run_end, afford)
        if found is None:
            continue
        parsed, start, end = found
        key = f"\x00petseg-array:{_SECRET}:{len(arrays)}"
        arrays[key] = parsed
        number_bytes += parsed.values.nbytes
        pieces.append(bytes(body[at:start]))
        pieces.append(orjson.dumps(key))
        at = end
    rest = body if not pieces else b"".join([*pieces, bytes(body[at:])])  # no arrays: the body itself, not a copy
    tokens = int(np.count_nonzero(_OBJECT_TOKEN[np.frombuffer(rest, np.uint8)]))
    # orjson's strings hold the text again, and a {"b64"} string decodes to 3/4 of it: 2 bytes per byte of rest
    rest_cost = 2 * len(rest) + tokens * OBJECT_BYTES_PER_TOKEN
    afford(rest_cost)
    return ParsedBody(arrays, rest, number_bytes + rest_cost)


def parse_document(body: bytes | bytearray, max_depth: int, afford: Callable[[int], None] = lambda n: None) -> Any:
    """The body as JSON, numeric arrays as ParsedArray; afford(cost) is called before the objects are built.

    Raises ServingError for a body nested deeper than max_depth, for invalid
    JSON (TF Serving's "JSON Parse error: ... at offset: N"; the offset counts
    in the body with its numeric arrays replaced), or whatever afford raises.
    """
    if not body:
        raise ServingError(_INVALID, "JSON Parse error: The document is empty")
    split = split_body(body, max_depth, afford)
    try:
        document = orjson.loads(split.rest)
    except orjson.JSONDecodeError as exc:
        raise ServingError(_INVALID, f"JSON Parse error: {exc.msg} at offset: {exc.pos}") from None
    return _put_back(document, split.arrays) if split.arrays else document


def _put_back(document: Any, arrays: dict[str, ParsedArray]) -> Any:
    """document with every placeholder string replaced by its array (iteratively: the depth is bounded, not small)."""
    if isinstance(document, str):
        return arrays.get(document, document)
    stack = [document]
    while stack:
        node = stack.pop()
        items = node.items() if isinstance(node, dict) else enumerate(node)
        for key, value in list(items):
            if isinstance(value, str) and value in arrays:
                node[key] = arrays[value]
            elif isinstance(value, (dict, list)):
                stack.append(value)
    return document
