"""The frame scanner as tables, and as a property: whatever the frames and however the bytes
are split, what it passes on is exactly what came in, and it reports every frame."""

from __future__ import annotations

import itertools
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.core.ws_frames import (
    CONTROL,
    FAILED,
    FORWARD,
    NEED_MORE,
    FrameScanner,
)
from gateway.core.ws_wire import (
    OP_BINARY,
    OP_CLOSE,
    OP_CONT,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    build_frame,
    close_frame,
    ping_frame,
    pong_frame,
    unmask,
)

KEY = b"\x01\x02\x03\x04"


def frame(
    opcode: int, payload: bytes = b"", *, fin: bool = True, mask: bool = True, rsv: int = 0
) -> bytes:
    raw = build_frame(opcode, payload, mask=mask, key=KEY)
    first = (0x80 if fin else 0) | rsv | opcode
    return bytes([first]) + raw[1:]


class Run:
    """Feeds chunks as a relay would: passes on what FORWARD says, control frames whole."""

    def __init__(self, scanner: FrameScanner) -> None:
        self.s = scanner
        self.out = bytearray()
        self.controls: list[tuple[int, bytes]] = []
        self.failure: tuple[int, str] | None = None
        self.data_frames = self.messages = self.steps = 0

    def feed(self, data: bytes) -> None:
        pos = 0
        while pos < len(data) and self.failure is None:
            kind, end = self.s.scan(data, pos)
            self.steps += 1
            self.data_frames += self.s.data_frames
            self.messages += self.s.messages
            if kind == FORWARD:
                self.out += self.s.prefix + data[pos:end]
            elif kind == CONTROL:
                assert self.s.control is not None
                self.out += self.s.control.raw
                self.controls.append((self.s.control.opcode, self.s.control.payload))
            elif kind == FAILED:
                self.failure = self.s.failure
                return
            else:
                assert kind == NEED_MORE and end == len(data)
            pos = end


def scan_all(data: bytes, *, masked: bool = True, **kw: int | bool) -> Run:
    run = Run(FrameScanner(masked=masked, **kw))  # type: ignore[arg-type]
    run.feed(data)
    return run


# ── one frame at a time ─────────────────────────────────────────────────────────────────────
@pytest.mark.parametrize("size", [0, 1, 125, 126, 65535, 65536, 200_000])
@pytest.mark.parametrize("masked", [True, False])
def test_data_frames_pass_whole_in_one_step(size: int, masked: bool) -> None:
    data = frame(OP_BINARY, bytes(size), mask=masked)
    run = scan_all(data, masked=masked)
    assert bytes(run.out) == data
    assert (run.data_frames, run.messages, run.steps, run.failure) == (1, 1, 1, None)
    assert run.s.at_boundary


def test_many_small_frames_in_one_chunk_pass_in_one_step() -> None:
    data = b"".join(frame(OP_TEXT, b"hello %d" % i) for i in range(100))
    run = scan_all(data)
    assert (bytes(run.out), run.steps, run.messages) == (data, 1, 100)


@pytest.mark.parametrize(
    ("payload", "code", "reason"),
    [
        (b"", 1005, ""),
        (struct.pack("!H", 1000), 1000, ""),
        (struct.pack("!H", 4001) + "bye ✓".encode(), 4001, "bye ✓"),
    ],
)
def test_close_frames_are_read_whole_and_unmasked(payload: bytes, code: int, reason: str) -> None:
    s = FrameScanner(masked=True)
    data = frame(OP_CLOSE, payload)
    assert s.scan(data) == (CONTROL, len(data))
    assert s.control is not None
    assert (s.control.close_code, s.control.close_reason, s.control.raw) == (code, reason, data)


def test_control_frames_between_fragments_are_reported_in_order() -> None:
    data = (
        frame(OP_TEXT, b"a", fin=False)
        + frame(OP_PING, b"p1")
        + frame(OP_CONT, b"b", fin=False)
        + frame(OP_PONG, b"p2")
        + frame(OP_CONT, b"c")
    )
    run = scan_all(data)
    assert bytes(run.out) == data
    assert run.controls == [(OP_PING, b"p1"), (OP_PONG, b"p2")]
    assert (run.data_frames, run.messages) == (3, 1)


VIOLATIONS = {
    "unmasked from a client": (frame(OP_TEXT, b"x", mask=False), True, 1002),
    "masked from a server": (frame(OP_TEXT, b"x"), False, 1002),
    "reserved data opcode": (frame(0x3, b"x"), True, 1002),
    "reserved control opcode": (frame(0xB, b"x"), True, 1002),
    "fragmented control": (frame(OP_PING, b"x", fin=False), True, 1002),
    "control over 125 bytes": (frame(OP_PING, bytes(126)), True, 1002),
    "continuation first": (frame(OP_CONT, b"x"), True, 1002),
    "new message inside one": (frame(OP_TEXT, b"a", fin=False) + frame(OP_TEXT, b"b"), True, 1002),
    "rsv1 without deflate": (frame(OP_TEXT, b"x", rsv=0x40), True, 1002),
    "rsv2": (frame(OP_TEXT, b"x", rsv=0x20), True, 1002),
    "close with one byte": (frame(OP_CLOSE, b"\x03"), True, 1002),
    "close reason not utf-8": (frame(OP_CLOSE, b"\x03\xe8\xff"), True, 1007),
    **{
        f"close code {code}": (frame(OP_CLOSE, struct.pack("!H", code)), True, 1002)
        for code in (0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535)
    },
}


@pytest.mark.parametrize("code", [1000, 1001, 1002, 1003, 1007, 1011, 1014, 3000, 4404, 4999])
def test_close_frames_with_a_valid_code_pass(code: int) -> None:
    run = scan_all(frame(OP_CLOSE, struct.pack("!H", code) + b"bye"))
    assert run.failure is None and run.controls == [(OP_CLOSE, struct.pack("!H", code) + b"bye")]


@pytest.mark.parametrize("name", VIOLATIONS)
def test_protocol_violations_fail_before_the_frame_passes(name: str) -> None:
    data, masked, code = VIOLATIONS[name]
    run = scan_all(data, masked=masked)
    assert run.failure is not None and run.failure[0] == code
    # Nothing of the offending frame went on (a leading good frame did).
    assert len(run.out) < len(data) and data.startswith(bytes(run.out))


def test_rsv1_marks_a_compressed_message_when_deflate_was_negotiated() -> None:
    ok = frame(OP_TEXT, b"x", rsv=0x40, fin=False) + frame(OP_CONT, b"y")
    assert scan_all(ok, compressed=True).failure is None
    bad = frame(OP_TEXT, b"x", fin=False) + frame(OP_CONT, b"y", rsv=0x40)
    run = scan_all(bad, compressed=True)
    assert run.failure is not None and run.failure[0] == 1002


@pytest.mark.parametrize(
    ("sizes", "limit", "passed_frames"),
    [
        ([400, 400, 400], 1000, 2),  # the third fragment would make it 1200
        ([400, 600], 1000, 2),  # exactly the limit is allowed
        ([1001], 1000, 0),
        ([1000], 0, 1),  # 0: no limit
    ],
)
def test_message_size_counts_across_fragments(
    sizes: list[int], limit: int, passed_frames: int
) -> None:
    frames = [
        frame(OP_BINARY if i == 0 else OP_CONT, bytes(n), fin=i == len(sizes) - 1)
        for i, n in enumerate(sizes)
    ]
    run = scan_all(b"".join(frames), max_message_bytes=limit)
    assert bytes(run.out) == b"".join(frames[:passed_frames])
    if passed_frames < len(sizes):
        assert run.failure == (1009, "message too big")
    else:
        assert run.failure is None


def test_a_new_message_starts_counting_again() -> None:
    data = frame(OP_TEXT, bytes(900)) + frame(OP_TEXT, bytes(900))
    assert scan_all(data, max_message_bytes=1000).failure is None


def test_stop_at_boundary_stops_after_the_current_frame() -> None:
    first, second = frame(OP_BINARY, bytes(300)), frame(OP_BINARY, bytes(10))
    data = first + second
    s = FrameScanner(masked=True)
    kind, end = s.scan(data[:100])
    assert (kind, end, s.at_boundary, s.in_frame) == (FORWARD, 100, False, True)
    rest = data[100:]
    kind, end = s.scan(rest, stop_at_boundary=True)
    assert (kind, 100 + end, s.at_boundary) == (FORWARD, len(first), True)
    assert s.scan(rest, end, stop_at_boundary=True) == (FORWARD, len(rest))


def test_a_header_split_byte_by_byte_is_held_then_passed_first() -> None:
    data = frame(OP_BINARY, bytes(70_000))  # 2 + 8 + 4 header bytes
    s = FrameScanner(masked=True)
    for i in range(13):
        assert s.scan(data[i : i + 1]) == (NEED_MORE, 1)
    kind, end = s.scan(data[13:])
    assert (kind, end, s.prefix) == (FORWARD, len(data) - 13, data[:13])


# ── the gateway's own frames ────────────────────────────────────────────────────────────────
def test_built_frames_toward_an_upstream_are_masked_and_read_back() -> None:
    for built, opcode, payload in [
        (ping_frame(b"gw-1", mask=True), OP_PING, b"gw-1"),
        (pong_frame(b"abc", mask=True), OP_PONG, b"abc"),
        (close_frame(1001, "going away", mask=True), OP_CLOSE, b"\x03\xe9going away"),
    ]:
        assert built[1] & 0x80
        s = FrameScanner(masked=True)
        assert s.scan(built) == (CONTROL, len(built))
        assert s.control is not None and (s.control.opcode, s.control.payload) == (opcode, payload)


def test_built_frames_toward_a_client_are_not_masked() -> None:
    built = close_frame(1000, "x" * 300, mask=False)
    s = FrameScanner(masked=False)
    assert s.scan(built) == (CONTROL, len(built))
    assert s.control is not None and len(s.control.payload) == 125  # the reason was cut


def test_mask_keys_are_random() -> None:
    assert len({ping_frame(b"x", mask=True)[2:6] for _ in range(8)}) > 1


def test_unmask_is_its_own_inverse() -> None:
    assert unmask(unmask(b"hello world", KEY), KEY) == b"hello world"


@given(st.binary(max_size=5000), st.binary(min_size=4, max_size=4))
def test_unmask_xors_each_byte_with_the_key(payload: bytes, key: bytes) -> None:
    """The big-integer path (16 bytes and more) agrees with the byte-by-byte definition."""
    assert unmask(payload, key) == bytes(b ^ key[i % 4] for i, b in enumerate(payload))


# ── property: the stream is passed on unchanged, however it is split ────────────────────────
data_frame = st.tuples(
    st.sampled_from([OP_TEXT, OP_BINARY]), st.binary(max_size=300), st.integers(1, 3)
)
control_frame = st.tuples(st.sampled_from([OP_PING, OP_PONG]), st.binary(max_size=125))


@st.composite
def streams(draw: st.DrawFn) -> tuple[bool, bytes, int, list[tuple[int, bytes]], list[int]]:
    masked = draw(st.booleans())
    parts: list[bytes] = []
    controls: list[tuple[int, bytes]] = []
    messages = 0
    for opcode, payload, pieces in draw(st.lists(data_frame, max_size=8)):
        cut = [payload[i::pieces] for i in range(pieces)]  # any split into `pieces` fragments
        for i, piece in enumerate(cut):
            parts.append(
                frame(opcode if i == 0 else OP_CONT, piece, fin=i == pieces - 1, mask=masked)
            )
            if draw(st.booleans()):
                c_op, c_payload = draw(control_frame)
                parts.append(frame(c_op, c_payload, mask=masked))
                controls.append((c_op, c_payload))
        messages += 1
    data = b"".join(parts)
    splits = sorted(draw(st.lists(st.integers(0, len(data)), max_size=10)))
    return masked, data, messages, controls, splits


@given(streams())
def test_any_stream_split_anywhere_passes_unchanged(
    case: tuple[bool, bytes, int, list[tuple[int, bytes]], list[int]],
) -> None:
    masked, data, messages, controls, splits = case
    run = Run(FrameScanner(masked=masked))
    bounds = [0, *splits, len(data)]
    for a, b in itertools.pairwise(bounds):
        run.feed(data[a:b])
    assert run.failure is None
    assert bytes(run.out) == data
    assert run.controls == controls
    assert run.messages == messages
    assert run.s.at_boundary


@given(streams())
def test_stopping_at_every_boundary_stops_only_at_boundaries(
    case: tuple[bool, bytes, int, list[tuple[int, bytes]], list[int]],
) -> None:
    masked, data, messages, _, splits = case
    s = FrameScanner(masked=masked)
    out = bytearray()
    seen = 0
    bounds = [0, *splits, len(data)]
    for a, b in itertools.pairwise(bounds):
        chunk, pos = data[a:b], 0
        while pos < len(chunk):
            kind, end = s.scan(chunk, pos, stop_at_boundary=True)
            seen += s.messages
            # The gateway may insert a frame here unless the chunk ran out mid-frame.
            assert s.at_boundary or end == len(chunk)
            if kind == FORWARD:
                out += s.prefix + chunk[pos:end]
                assert s.data_frames <= 1  # one frame at a time
            elif kind == CONTROL:
                assert s.control is not None
                out += s.control.raw
            pos = end
    assert bytes(out) == data and seen == messages


# ── UTF-8 of the client's text messages (validate_text) ─────────────────────────────────────
SNOWMAN = "☃".encode()  # three bytes, split across fragments below


def chunked(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


@pytest.mark.parametrize("size", [1, 5, 64, 1 << 20])
@pytest.mark.parametrize(
    ("name", "stream", "bad_at"),
    [
        ("text", frame(OP_TEXT, "héllo".encode()), None),
        (
            "a character split across fragments",
            frame(OP_TEXT, b"a" + SNOWMAN[:1], fin=False)
            + frame(OP_PING, b"p")
            + frame(OP_CONT, SNOWMAN[1:] + b"z"),
            None,
        ),
        ("big text", frame(OP_TEXT, "ü".encode() * 40_000) + frame(OP_TEXT, b"next"), None),
        ("binary is never read", frame(OP_BINARY, b"\xff\xfe"), None),
        ("invalid", frame(OP_TEXT, b"ok") + frame(OP_TEXT, b"\xff\xfe"), 1),
        (
            "a message that ends mid-character",
            frame(OP_TEXT, b"ok")
            + frame(OP_TEXT, b"a" + SNOWMAN[:1], fin=False)
            + frame(OP_CONT, b""),
            2,
        ),
    ],
)
def test_client_text_is_checked_before_it_passes(
    name: str, stream: bytes, bad_at: int | None, size: int
) -> None:
    run = Run(FrameScanner(masked=True, validate_text=True))
    for piece in chunked(stream, size):
        run.feed(piece)
        if run.failure is not None:
            break
    frames = split_frames(stream)
    if bad_at is None:
        assert (bytes(run.out), run.failure) == (stream, None)
    else:
        # Nothing of the frame that broke UTF-8 went on: the frames before it passed whole.
        assert run.failure == (1007, "invalid UTF-8")
        assert bytes(run.out) == b"".join(frames[:bad_at])


def test_compressed_and_unchecked_text_passes_as_it_is() -> None:
    compressed = frame(OP_TEXT, b"\xff\xfe", rsv=0x40)
    run = scan_all(compressed, validate_text=True, compressed=True)
    assert (bytes(run.out), run.failure) == (compressed, None)
    plain = frame(OP_TEXT, b"\xff\xfe")
    assert bytes(scan_all(plain).out) == plain  # the upstream's side is not checked


def split_frames(stream: bytes) -> list[bytes]:
    """The frames of ``stream`` (masked, lengths under 64 KiB or 64-bit), each as bytes."""
    out, pos = [], 0
    while pos < len(stream):
        length, size = stream[pos + 1] & 0x7F, 2
        if length == 126:
            length, size = struct.unpack_from("!H", stream, pos + 2)[0], 4
        elif length == 127:
            length, size = struct.unpack_from("!Q", stream, pos + 2)[0], 10
        end = pos + size + 4 + length
        out.append(stream[pos:end])
        pos = end
    return out


@given(
    st.booleans(),
    st.binary(max_size=400) | streams().map(lambda case: case[1] + b"\x00" * 3),
    st.lists(st.integers(0, 400), max_size=8),
)
def test_any_bytes_split_anywhere_get_the_same_verdict(
    masked: bool, data: bytes, splits: list[int]
) -> None:
    """Hostile bytes (not just valid frames): the scanner never raises, passes on only a prefix
    of what came in, and how the bytes were split changes neither what passed nor the verdict."""
    whole = Run(FrameScanner(masked=masked, max_message_bytes=256))
    whole.feed(data)
    pieces = Run(FrameScanner(masked=masked, max_message_bytes=256))
    bounds = [0, *sorted(min(s, len(data)) for s in splits), len(data)]
    for a, b in itertools.pairwise(bounds):
        pieces.feed(data[a:b])
    assert data.startswith(bytes(whole.out))
    assert bytes(pieces.out) == bytes(whole.out)
    assert pieces.failure == whole.failure
    assert pieces.controls == whole.controls
