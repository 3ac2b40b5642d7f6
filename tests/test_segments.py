"""Segment counting against the documented rules and the gsm0338 codec (a maintained
GSM 03.38 implementation, independent of ours)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import gsm0338  # noqa: F401 - registers the "gsm03.38" codec
import hypothesis
import pytest
from hypothesis import strategies as st

from smsgw.segments import Segmentation, is_gsm7, segment, split

pytestmark = pytest.mark.timeout(60)

ESC = 0x1B


def _codec_alphabet() -> tuple[str, ...]:
    """Every character the codec encodes, from its own tables (decoding each code)."""
    chars = set()
    for code in range(128):
        for raw in (bytes([code]), bytes([ESC, code])):
            with contextlib.suppress(UnicodeDecodeError):
                chars.add(raw.decode("gsm03.38"))
    chars.discard("")  # a lone ESC decodes to nothing
    return tuple(sorted(chars))


GSM = _codec_alphabet()
EXTENSION = "^{}\\[~]|€\f"
NON_ASCII_GSM = "".join(ch for ch in GSM if not ch.isascii())
ASCII_NOT_GSM = "".join(chr(c) for c in range(128) if chr(c) not in GSM)


def test_the_codec_alphabet_is_what_the_tables_say() -> None:
    # 3GPP TS 23.038: 127 basic characters (ESC aside) and 10 in the extension table.
    assert len(GSM) == 137
    non_ascii = sorted("£¥èéùìòÇØøÅåΔΦΓΛΩΠΨΣΘΞÆæßÉ¤¡ÄÖÑÜ§¿äöñüà€")
    assert list(NON_ASCII_GSM) == non_ascii
    # Backtick, DEL and every control code but LF, CR and FF (an extension character).
    not_gsm = [chr(c) for c in [*range(32), 96, 127] if chr(c) not in "\n\r\f"]
    assert list(ASCII_NOT_GSM) == not_gsm


def septets(text: str) -> int:
    return len(text.encode("gsm03.38"))


def utf16_units(text: str) -> int:
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


# -- documented examples --------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("", ("GSM-7", 0, 1)),  # a message is never free for a limiter
        ("\r\n", ("GSM-7", 2, 1)),
        ("Your code is 123456", ("GSM-7", 19, 1)),
        ("a" * 160, ("GSM-7", 160, 1)),
        ("a" * 161, ("GSM-7", 161, 2)),
        ("a" * 306, ("GSM-7", 306, 2)),
        ("a" * 307, ("GSM-7", 307, 3)),
        ("a" * 1600, ("GSM-7", 1600, 11)),
        ("€" * 80, ("GSM-7", 160, 1)),
        ("{" * 81, ("GSM-7", 162, 2)),  # 76 pairs (152 septets) per part
        ("a" * 152 + "€", ("GSM-7", 154, 1)),  # one segment: no part to split
        # 152 plain + an escape pair at septets 153-154: the pair opens part 2, which then
        # overflows into a third (306 septets, yet 3 segments).
        ("a" * 152 + "€" + "a" * 152, ("GSM-7", 306, 3)),
        ("a" * 152 + "[" + "a" * 152, ("GSM-7", 306, 3)),
        ("a" * 151 + "€" + "a" * 10, ("GSM-7", 163, 2)),  # the pair ends part 1 exactly
        ("Grüße aus Köln €" * 10, ("GSM-7", 170, 2)),
        ("✓" * 70, ("UCS-2", 70, 1)),
        ("✓" * 71, ("UCS-2", 71, 2)),
        ("✓" * 134, ("UCS-2", 134, 2)),
        ("✓" * 135, ("UCS-2", 135, 3)),
        ("a" * 69 + "✓", ("UCS-2", 70, 1)),  # one foreign character: the whole body is UCS-2
        ("a" * 70 + "✓", ("UCS-2", 71, 2)),
        ("😀" * 35, ("UCS-2", 70, 1)),  # surrogate pairs: 2 units each
        ("😀" * 36, ("UCS-2", 72, 2)),  # 33 pairs (66 units) per part
        # A pair at units 67-68: it opens part 2, which then overflows into a third.
        ("✓" * 66 + "😀" + "✓" * 66, ("UCS-2", 134, 3)),
        ("✓" * 65 + "😀" + "✓" * 10, ("UCS-2", 77, 2)),  # the pair ends part 1 exactly
        ("Привет" * 16 + "abc😀", ("UCS-2", 101, 2)),
        ("a" * 200 + "`", ("UCS-2", 201, 3)),  # ASCII, yet not GSM-7
        ("\ud800", ("UCS-2", 1, 1)),  # a lone surrogate counts, never raises
        ("\ud800" * 71, ("UCS-2", 71, 2)),
    ],
)
def test_documented_examples(body: str, expected: tuple[str, int, int]) -> None:
    assert segment(body) == Segmentation(*expected)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("body", "parts"),
    [
        ("a" * 152 + "€" + "a" * 152, ["a" * 152, "€" + "a" * 151, "a"]),
        ("a" * 151 + "€" + "a" * 10, ["a" * 151 + "€", "a" * 10]),
        ("a" * 307, ["a" * 153, "a" * 153, "a"]),
        ("✓" * 66 + "😀" + "✓" * 66, ["✓" * 66, "😀" + "✓" * 65, "✓"]),
        ("😀" * 36, ["😀" * 33, "😀" * 3]),
        ("short", ["short"]),
        ("", [""]),
    ],
)
def test_split_keeps_pairs_whole(body: str, parts: list[str]) -> None:
    assert split(body) == parts


@pytest.mark.parametrize("char", NON_ASCII_GSM)
def test_gsm7_characters_outside_ascii_are_gsm7(char: str) -> None:
    width = 2 if char == "€" else 1
    assert segment(char) == Segmentation("GSM-7", width, 1)
    assert is_gsm7(char)


@pytest.mark.parametrize("char", ASCII_NOT_GSM + "\x1b")
def test_ascii_characters_outside_gsm7_make_ucs2(char: str) -> None:
    # \x1b: the codec maps a raw ESC to the escape septet, but it is not text a phone
    # would show; we send it (and any body holding it) as UCS-2.
    assert segment(char) == Segmentation("UCS-2", 1, 1)
    assert segment("a" * 100 + char) == Segmentation("UCS-2", 101, 2)
    assert not is_gsm7(char)


@pytest.mark.parametrize("char", EXTENSION)
def test_extension_characters_take_two_septets(char: str) -> None:
    assert segment(char) == Segmentation("GSM-7", 2, 1)
    assert segment(char * 80) == Segmentation("GSM-7", 160, 1)
    assert segment("a" * 159 + char).segments == 2


@pytest.mark.parametrize("char", ["ç", "á", "ó", "ğ", "\u2126", "ẞ"])
def test_lookalikes_outside_the_default_alphabet_make_ucs2(char: str) -> None:
    # Only Ç (capital) is in GSM 03.38; ç and á are in the Spanish/Portuguese shift tables,
    # which providers do not use by default. Ω is U+2126 OHM SIGN, not Greek capital omega.
    assert segment(char).encoding == "UCS-2"


def test_alphabet_is_the_codecs_for_every_bmp_character() -> None:
    for code in range(0x10000):
        char = chr(code)
        if 0xD800 <= code <= 0xDFFF or code == ESC:
            continue
        try:
            expected: tuple[str, int] = ("GSM-7", septets(char))
        except UnicodeEncodeError:
            expected = ("UCS-2", 1)
        result = segment(char)
        assert (result.encoding, result.units) == expected, repr(char)
        assert is_gsm7(char) == (expected[0] == "GSM-7"), repr(char)


# -- properties: random texts against the codec -------------------------------------

PROPERTIES = hypothesis.settings(max_examples=400, deadline=None, derandomize=True, database=None)
gsm_texts = st.text(alphabet=GSM, max_size=1600) | st.text(
    alphabet=st.sampled_from("a{€"), min_size=140, max_size=400
)
foreign = "Привет✓आपका😀🇮🇳`\t"
mixed_texts = st.text(alphabet=st.sampled_from(GSM + tuple(foreign)), max_size=800) | st.text(
    alphabet=st.sampled_from("a✓😀"), min_size=60, max_size=300
)


def _reference_segments(units: list[int], single: int, per_part: int) -> int:
    """Greedy parts over each character's width, the way the rules read (naive walk)."""
    if sum(units) <= single:
        return 1
    parts, used = 1, 0
    for width in units:
        if used + width > per_part:
            parts, used = parts + 1, 0
        used += width
    return parts


@PROPERTIES
@hypothesis.given(gsm_texts)
def test_gsm7_septets_and_segments_match_the_codec(text: str) -> None:
    result = segment(text)
    assert result.encoding == "GSM-7"
    assert result.units == septets(text)
    widths = [septets(ch) for ch in text]
    assert result.segments == _reference_segments(widths, 160, 153)
    _check_parts(text, result, per_part=153, width=septets)


@PROPERTIES
@hypothesis.given(mixed_texts)
def test_encoding_follows_the_codec_and_ucs2_counts_utf16_units(text: str) -> None:
    result = segment(text)
    try:
        text.encode("gsm03.38")
    except UnicodeEncodeError:
        assert result.encoding == "UCS-2"
        assert result.units == utf16_units(text)
        widths = [utf16_units(ch) for ch in text]
        assert result.segments == _reference_segments(widths, 70, 67)
        _check_parts(text, result, per_part=67, width=utf16_units)
    else:
        assert result == Segmentation("GSM-7", septets(text), result.segments)


def _check_parts(
    text: str, result: Segmentation, *, per_part: int, width: Callable[[str], int]
) -> None:
    parts = split(text)
    assert "".join(parts) == text
    assert len(parts) == result.segments
    if len(parts) > 1:
        sizes = [width(part) for part in parts]
        assert all(0 < size <= per_part for size in sizes)
        # Greedy: no part could have taken the next part's first character whole.
        for size, following in zip(sizes, parts[1:], strict=False):
            assert size + width(following[0]) > per_part
