"""effseg.size: Size(h, w) in code, WIDTHxHEIGHT in text."""

from __future__ import annotations

import numpy as np
import pytest

from effseg.errors import ConfigError, EffsegError, SizeError
from effseg.size import Size, format_size, parse_size, read_old_size


def test_text_is_width_by_height() -> None:
    size = parse_size("480x360")
    assert size == Size(h=360, w=480) and size.h == 360 and size.w == 480
    assert parse_size(" 1024 X 512 ") == Size(512, 1024)
    assert parse_size("7×3") == Size(h=3, w=7)


def test_round_trip_and_helpers() -> None:
    size = Size(h=352, w=480)
    assert format_size(size) == "480x352" == str(size)
    assert parse_size(format_size(size)) == size
    assert size.wh == (480, 352)
    h, w = size
    assert (h, w) == (352, 480)
    assert format_size((360, 480)) == "480x360"


def test_sequences_are_height_width() -> None:
    assert parse_size([352, 480]) == Size(h=352, w=480)
    assert parse_size((np.int64(4), 6.0)) == Size(h=4, w=6)
    assert parse_size(Size(2, 3)) == Size(2, 3)


@pytest.mark.parametrize(
    "bad",
    [
        "480",
        "480x",
        "x360",
        "480x360x3",
        "480*360",
        "-480x360",
        "0x360",
        "480x0",
        "4.5x3",
        "",
        [0, 5],
        [5],
        [1, 2, 3],
        [True, 4],
        ["4", 5],
        480,
        None,
        2.5,
    ],
)
def test_bad_sizes_one_line_naming_value(bad: object) -> None:
    with pytest.raises(SizeError) as err:
        parse_size(bad, "data.crop_size")  # type: ignore[arg-type]
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("data.crop_size ")
    assert repr(bad) in msg or repr(list(bad)) in msg  # type: ignore[call-overload]
    assert "WIDTHxHEIGHT" in msg or "height, width" in msg
    assert isinstance(err.value, ConfigError) and isinstance(err.value, EffsegError)


def test_old_pairs_are_read_in_their_old_order_with_one_note(capsys: pytest.CaptureFixture[str]) -> None:
    assert read_old_size([352, 480], "x.crop_size", "hw") == Size(h=352, w=480)
    assert read_old_size((1024, 512), "x.resize", "wh") == Size(h=512, w=1024)
    assert read_old_size("480x352", "x.crop_size", "hw") == Size(h=352, w=480)
    assert read_old_size(Size(1, 2), "x.resize", "wh") == Size(1, 2)
    read_old_size([352, 480], "x.crop_size", "hw")  # same note: printed once
    lines = capsys.readouterr().err.splitlines()
    assert lines == [
        "effseg: note: x.crop_size: [352, 480] is the old (height, width) spelling; "
        "write 480x352 (WIDTHxHEIGHT)",
        "effseg: note: x.resize: [1024, 512] is the old (width, height) spelling; "
        "write 1024x512 (WIDTHxHEIGHT)",
    ]
    with pytest.raises(SizeError, match=r"x\.resize \[5, 0\]: expected WIDTHxHEIGHT"):
        read_old_size([5, 0], "x.resize", "wh")
