"""The fake provider's segment counter: against the documented rules, the gsm0338 codec and
(two implementations that share no code) smsgw.segments."""

from __future__ import annotations

import gsm0338  # noqa: F401 - registers the "gsm03.38" codec
import hypothesis
import pytest
from hypothesis import strategies as st

from smsgw.segments import segment
from testkit.segment_count import count_segments, measure

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("", ("GSM-7", 0, 1)),
        ("\r\n", ("GSM-7", 2, 1)),
        ("a" * 160, ("GSM-7", 160, 1)),
        ("a" * 161, ("GSM-7", 161, 2)),
        ("a" * 306, ("GSM-7", 306, 2)),
        ("a" * 307, ("GSM-7", 307, 3)),
        ("€" * 80, ("GSM-7", 160, 1)),
        ("\f" * 81, ("GSM-7", 162, 2)),
        ("a" * 152 + "€" + "a" * 152, ("GSM-7", 306, 3)),
        ("a" * 151 + "€" + "a" * 10, ("GSM-7", 163, 2)),
        ("✓" * 70, ("UCS-2", 70, 1)),
        ("✓" * 71, ("UCS-2", 71, 2)),
        ("✓" * 135, ("UCS-2", 135, 3)),
        ("😀" * 36, ("UCS-2", 72, 2)),
        ("✓" * 66 + "😀" + "✓" * 66, ("UCS-2", 134, 3)),
        ("✓" * 65 + "😀" + "✓" * 10, ("UCS-2", 77, 2)),
        ("`", ("UCS-2", 1, 1)),
        ("\x1b", ("UCS-2", 1, 1)),  # a raw escape is not a character of the alphabet
        ("\x00", ("UCS-2", 1, 1)),
        ("ΔΦΓΛΩΠΨΣΘΞ£¥§¿¡", ("GSM-7", 15, 1)),
    ],
)
def test_documented_examples(body: str, expected: tuple[str, int, int]) -> None:
    assert measure(body) == expected
    assert count_segments(body) == expected[2]


ALPHABET = st.sampled_from(
    tuple("aZ09 @£$¥èéÇØΔΦΣΞÆßÉ¤¡ÄÖÑÜ§¿äöñüà\n\r") + tuple("^{}\\[~]|€\f") + tuple("✓Жआ😀🇮🇳`\t")
)
texts = st.text(alphabet=ALPHABET, max_size=700) | st.text(
    alphabet=st.sampled_from("a€✓😀"), min_size=60, max_size=400
)


@hypothesis.settings(max_examples=500, deadline=None, derandomize=True, database=None)
@hypothesis.given(texts)
def test_agrees_with_the_codec_and_with_smsgw(text: str) -> None:
    encoding, units, segments = measure(text)
    try:
        septets = text.encode("gsm03.38")  # the codec's own, pure-Python encoder
    except UnicodeEncodeError:
        assert (encoding, units) == ("UCS-2", len(text.encode("utf-16-le")) // 2)
    else:
        assert (encoding, units) == ("GSM-7", len(septets))
    ours = segment(text)
    assert (ours.encoding, ours.units, ours.segments) == (encoding, units, segments)
