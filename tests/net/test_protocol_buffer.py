"""The receive buffer keeps arrival order and stays within a small multiple of the bytes it holds."""
from hypothesis import given, settings
from hypothesis import strategies as st

from lance_net.protocol.buffer import KEEP_CAPACITY, ReceiveBuffer

steps = st.lists(st.one_of(
    st.tuples(st.just("append"), st.binary(min_size=1, max_size=3000)),
    st.tuples(st.just("read_into"), st.binary(min_size=0, max_size=3000)),
    st.tuples(st.just("consume"), st.integers(0, 5000)),
), max_size=60)


@settings(max_examples=300)
@given(steps)
def test_live_bytes_match_a_plain_model(script):
    buffer = ReceiveBuffer()
    model = b""
    consumed = 0
    most_live = 0
    for op, arg in script:
        if op == "append":
            buffer.append(arg)
            model += arg
        elif op == "read_into":     # a socket read straight into the buffer
            room = buffer.room(len(arg) or 1)
            assert len(room) >= len(arg)
            room[:len(arg)] = arg
            del room
            buffer.grew(len(arg))
            model += arg
        else:
            size = min(arg, len(model))
            buffer.consume(size)
            model = model[size:]
            consumed += size
        most_live = max(most_live, len(model))
        assert len(buffer) == len(model)
        assert buffer.tail() == model
        assert buffer.consumed == consumed
        if model:
            assert buffer.copy(0, len(model)) == model
        # Doubling means the storage never exceeds twice the most ever held, nor 4 KiB.
        assert len(buffer.data) <= max(4096, 2 * (most_live + 3000))


def test_byte_by_byte_arrival_moves_each_byte_a_bounded_number_of_times():
    buffer = ReceiveBuffer()
    grows = 0
    capacity = 0
    for i in range(100_000):
        buffer.append(b"x")
        if len(buffer.data) != capacity:
            grows += 1
            capacity = len(buffer.data)
        if i % 7 == 6:
            buffer.consume(5)
    # Capacity doubles, so a handful of reallocations carry 100,000 bytes.
    assert grows <= 6
    assert len(buffer) == 100_000 - 5 * (100_000 // 7)


def test_an_emptied_large_buffer_is_given_back():
    buffer = ReceiveBuffer()
    buffer.append(bytes(KEEP_CAPACITY + 1))
    buffer.consume(KEEP_CAPACITY + 1)
    assert len(buffer.data) == 0
    buffer.append(bytes(1000))
    buffer.consume(1000)
    assert len(buffer.data) == 4096


def test_more_bytes_than_the_room_given_cannot_have_landed():
    buffer = ReceiveBuffer()
    room = len(buffer.room(10))
    try:
        buffer.grew(room + 1)
    except ValueError as exc:
        assert "cannot have landed" in str(exc)
    else:
        raise AssertionError("grew() accepted more bytes than the room it gave")
    assert len(buffer) == 0
