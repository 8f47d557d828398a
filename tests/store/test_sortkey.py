"""The hybrid clock: never backwards, sequences per node/actor, recovery from batches."""
from lance_store.sortkey import SEQ_MASK, HybridClock, SortKey, pack_low


def test_keys_order_as_128_bit_integers():
    a = SortKey(5, 2**63)
    b = SortKey(6, 0)
    assert a < b and a.as_int() < b.as_int()


def test_clock_never_goes_backwards_and_counts_records():
    clock = HybridClock(node_id=3)
    ts1, low1 = clock.stamp(10, timestamp_ns=1000)
    ts2, low2 = clock.stamp(1, timestamp_ns=500)      # wall clock went backwards
    assert ts2 == ts1 + 1
    assert SortKey(ts2, low2).sequence == 10 and SortKey(ts2, low2).node_id == 3


def test_observe_restores_the_clock_after_a_restart():
    clock = HybridClock(node_id=1)
    clock.observe(last_timestamp_ns=2000, first_key_low=pack_low(1, 0, 40), record_count=5)
    ts, low = clock.stamp(1, timestamp_ns=10)
    assert ts == 2001 and low & SEQ_MASK == 45


def test_observe_ignores_other_nodes_sequences():
    clock = HybridClock(node_id=1)
    clock.observe(100, pack_low(2, 0, 1000), 5)
    assert clock.stamp(1)[1] & SEQ_MASK == 0


def test_sequence_wraps_at_2_to_the_40():
    clock = HybridClock()
    clock.sequence = SEQ_MASK
    clock.stamp(2)
    assert clock.sequence == 1
