"""Errors that are a user's mistake or the world's state, not a bug.

The CLI prints these as one line and exits non-zero; anything else is a bug
and keeps its traceback.
"""

import re


class PetsegError(Exception):
    """A failure the user can act on; the message says what is wrong and how to fix it."""

    exit_code = 1


class ParamsError(PetsegError):
    """params.yaml (or a --param override) has an unknown key, a wrong type or a bad value."""

    exit_code = 2


class DataValidationError(PetsegError):
    """The dataset failed a critical expectation; the message summarises what failed."""


def first_line(error: object) -> str:
    """The first non-empty line of an error (or message), for one-line reports; its type name if empty."""
    lines = [line for line in str(error).strip().splitlines() if line.strip()]
    return lines[0].strip() if lines else type(error).__name__


_MEMORY_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


def stable_text(error: object) -> str:
    """first_line(error) without memory addresses (`<_io.BytesIO object at 0x7f…>`), so records repeat run to run."""
    return _MEMORY_ADDRESS.sub("", first_line(error))


def os_error_text(exc: OSError) -> str:
    """'No space left on device' or the like: an OSError's reason without its path or errno number."""
    return exc.strerror or stable_text(exc)


def utf8_text(data: bytes, name: str, hint: str, error: type[PetsegError] = PetsegError) -> str:
    """`data` as UTF-8 text, or `error` naming the line and offset of the first bad byte, then `hint`."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise error(
            f"{name} line {line}: not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}); {hint}"
        ) from None
