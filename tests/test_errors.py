import pytest

from petseg.components.core.errors import first_line


@pytest.mark.parametrize(
    "error, expected",
    [
        (ValueError("bad value\nTraceback detail"), "bad value"),
        (OSError("\n\n  disk full  \nmore"), "disk full"),
        (KeyError(), "KeyError"),
        ("plain message\nsecond", "plain message"),
    ],
)
def test_first_line_keeps_one_line_of_an_error(error, expected):
    assert first_line(error) == expected
