"""A follower applying a leader's log to a real data directory: identical files, refusals,
fencing, the epochs file, and truncation back to a new leader's log."""
import os

import pytest

import lance_store
from lance_store import StoreConfig
from lance_net.replication import wire
from lance_net.replication.epochs import (EpochEntry, EpochsError, EpochsFile, divergence_point,
                                          format_entries, parse)
from lance_net.replication.follower import Follower, FullResyncNeeded, StaleEpoch
from lance_net.replication.quorum import LogPosition
from lance_net.replication.source import messages_from
from lance_net.replication.wire import Preamble, Replicate, Status
from lance_store.segment import naming

from .replication_fixtures import replica_files

CONFIG = StoreConfig(segment_max_bytes=4096, buffer_count=2, buffer_size=1 << 20)


def open_store(path):
    return lance_store.open(path, create=True, config=CONFIG)


@pytest.fixture
def pair(tmp_path):
    leader, follower = open_store(tmp_path / "leader"), open_store(tmp_path / "follower")
    yield leader, follower
    leader.close()
    follower.close()


def write(topic, count, tag=b"v", size=200):
    return topic.append_many([[tag + b"%d-" % i + b"x" * size, b"w"] for i in range(count)])


def ship(leader_topic, follower, start, *, epoch, epochs=None, end=None, committed=0, max_bytes=1500):
    """Send the leader's log from `start` through the wire codec to the follower."""
    rx = wire.ReplicationReceiver()
    rx.receive_data(wire.encode_preamble(Preamble(1, epoch)))
    follower.accept_preamble(rx.next_message())
    replies = []
    for msg in messages_from(leader_topic, start, epoch=epoch, committed=committed, epochs=epochs,
                             end=end, max_bytes=max_bytes):
        rx.receive_data(wire.encode_replicate(msg))
        replies.append(follower.apply(rx.next_message()))
    return replies


def records(topic):
    return [r.value for r in topic.records()]


def test_catch_up_makes_identical_files(pair, tmp_path):
    leader, follower_store = pair
    lt, ft = leader.create_topic("orders"), follower_store.create_topic("orders")
    epochs = EpochsFile(lt.folder)
    epochs.append(7, 0)
    write(lt, 40)
    assert len(lt.segments) > 2  # rotations happened
    follower = Follower(follower_store, node_id=2)
    replies = ship(lt, follower, 0, epoch=7, epochs=epochs)
    assert {r.status for r in replies} == {Status.OK}
    assert replies[-1].confirmed_offset == lt.high_watermark == ft.high_watermark
    assert [r.node_id for r in replies] == [2] * len(replies)
    assert replica_files(ft) == replica_files(lt)           # names (t0, t1), bytes, epochs
    follower_store.close()
    reopened = lance_store.open(tmp_path / "follower", config=CONFIG)
    try:
        assert records(reopened.topic("orders")) == records(lt)
        assert reopened.warnings == []
    finally:
        reopened.close()


def test_live_groups_and_the_committed_offset(pair):
    leader, follower_store = pair
    lt, ft = leader.create_topic("t"), follower_store.create_topic("t")
    epochs = EpochsFile(lt.folder)
    epochs.append(3, 0)
    follower = Follower(follower_store, node_id=5)
    start = committed = 0
    for group in range(12):
        write(lt, 3, tag=b"g%d-" % group)
        replies = ship(lt, follower, start, epoch=3, epochs=epochs, committed=committed)
        assert replies[-1].status is Status.OK
        assert replies[-1].confirmed_offset == lt.high_watermark
        assert follower.committed_offset(ft.id) == committed
        committed, start = start, lt.high_watermark   # the leader commits what was sent before
    # a heartbeat advances the committed offset, never past the follower's own end
    beat = Replicate(3, 10**12, ft.id, lt.high_watermark, "", 0)
    assert follower.apply(beat).status is Status.OK
    assert follower.committed_offset(ft.id) == ft.high_watermark
    behind = Replicate(3, 0, ft.id, lt.high_watermark - 1, "", 0)   # a leader that lacks our tail
    assert follower.apply(behind).status is Status.RESYNC
    assert replica_files(ft) == replica_files(lt)
    assert follower.position(ft.id) == LogPosition(3, lt.high_watermark)


def test_writes_anywhere_else_are_refused(pair):
    leader, follower_store = pair
    lt, ft = leader.create_topic("t"), follower_store.create_topic("t")
    follower = Follower(follower_store, node_id=2)
    first = write(lt, 2)
    ship(lt, follower, 0, epoch=1, end=first[-1].next_offset)
    end = ft.high_watermark
    size = os.path.getsize(ft.active.path)
    write(lt, 3)
    later = list(messages_from(lt, first[-1].next_offset, epoch=1, committed=0, max_bytes=1))
    ahead = list(messages_from(lt, later[0].global_offset, epoch=1, committed=0))
    again = list(messages_from(lt, 0, epoch=1, committed=0))
    renamed = Replicate(1, 0, ft.id, later[0].global_offset,
                        naming.active(ft.active.name.base, ft.active.name.t0 + 1).filename,
                        later[0].write_offset, later[0].payload)
    wrong_place = Replicate(1, 0, ft.id, later[0].global_offset, later[0].segment_name,
                            later[0].write_offset + 1, later[0].payload)
    for msg in (ahead[0], again[0], renamed, wrong_place):
        reply = follower.apply(msg)
        assert reply.status is Status.RESYNC and reply.confirmed_offset == end
    assert ft.high_watermark == end and os.path.getsize(ft.active.path) == size
    assert follower.apply(later[0]).status is Status.OK       # the right place still works


def test_damaged_batches_are_refused(pair, tmp_path):
    leader, follower_store = pair
    lt, ft = leader.create_topic("t"), follower_store.create_topic("t")
    follower = Follower(follower_store, node_id=2)
    write(lt, 2)
    msg = next(messages_from(lt, 0, epoch=1, committed=0))
    payload = bytearray(msg.payload)
    payload[-5] ^= 0x01          # a record byte: the batch's payload CRC no longer matches
    bad = Replicate(msg.epoch, 0, msg.topic_id, msg.global_offset, msg.segment_name,
                    msg.write_offset, bytes(payload), msg.flags)
    decoded = wire.ReplicationReceiver()
    decoded.receive_data(wire.encode_preamble(Preamble(1, 1)) + wire.encode_replicate(bad))
    decoded.next_message()
    assert follower.apply(decoded.next_message()).status is Status.ERROR   # wire CRC fine, batch not
    assert ft.high_watermark == 0 and os.path.getsize(ft.active.path) == 0
    unknown = Replicate(1, 0, 99, msg.global_offset, msg.segment_name, 0, msg.payload, msg.flags)
    assert follower.apply(unknown).status is Status.ERROR
    follower.reconcile(ft.id, [EpochEntry(1, 0), EpochEntry(4, 10)])   # an entry inside the write
    bad_epoch = Replicate(4, 0, msg.topic_id, msg.global_offset, msg.segment_name,
                          msg.write_offset, bytes(payload), msg.flags)
    assert follower.apply(bad_epoch).status is Status.ERROR
    assert EpochsFile(ft.folder).entries == [EpochEntry(1, 0)]           # nothing past the end
    good = Replicate(4, 0, msg.topic_id, msg.global_offset, msg.segment_name, msg.write_offset,
                     msg.payload, msg.flags)
    assert follower.apply(good).status is Status.OK                      # the resend succeeds
    assert EpochsFile(ft.folder).entries == [EpochEntry(1, 0), EpochEntry(4, 10)]
    follower_store.close()
    reopened = lance_store.open(tmp_path / "follower", config=CONFIG)
    try:
        assert reopened.topic("t").high_watermark == msg.global_offset
    finally:
        reopened.close()


def test_fencing_refuses_older_epochs_even_after_a_restart(pair, tmp_path):
    leader, follower_store = pair
    lt, ft = leader.create_topic("t"), follower_store.create_topic("t")
    epochs = EpochsFile(lt.folder)
    epochs.append(7, 0)
    write(lt, 2)
    follower = Follower(follower_store, node_id=2)
    ship(lt, follower, 0, epoch=7, epochs=epochs)
    with open(os.path.join(ft.folder, "epochs")) as f:
        assert f.read() == "7 0\n"
    with pytest.raises(StaleEpoch, match="epoch 6 is older than epoch 7"):
        follower.accept_preamble(Preamble(4, 6))
    end = ft.high_watermark
    write(lt, 1)
    stale = next(messages_from(lt, end, epoch=6, committed=0))
    with pytest.raises(StaleEpoch):
        follower.apply(stale)
    assert ft.high_watermark == end
    follower.accept_preamble(Preamble(4, 9))                 # a newer leader is welcome
    with pytest.raises(StaleEpoch):
        follower.apply(next(messages_from(lt, end, epoch=7, committed=0)))
    follower_store.close()
    again = lance_store.open(tmp_path / "follower", config=CONFIG)
    try:
        assert Follower(again, node_id=2).highest_epoch == 7    # from the epochs file
    finally:
        again.close()


def test_a_returning_leader_truncates_to_the_last_shared_epoch(pair):
    """A led in epoch 3 and wrote a group B never received; B led in epoch 5 and committed
    other data at the same offsets; A comes back as B's follower and ends up equal to B."""
    a_store, b_store = pair
    a, b = a_store.create_topic("t"), b_store.create_topic("t")
    a_epochs = EpochsFile(a.folder)
    a_epochs.append(3, 0)
    write(a, 4, tag=b"shared")
    b_follower = Follower(b_store, node_id=2)
    ship(a, b_follower, 0, epoch=3, epochs=a_epochs)
    shared_end = a.high_watermark
    write(a, 3, tag=b"lost")                                  # A's, never replicated
    a_end = a.high_watermark
    b_epochs = EpochsFile(b.folder)
    assert b_epochs.entries == [EpochEntry(3, 0)]
    b_epochs.append(5, b.high_watermark)                      # B leads from its end
    write(b, 5, tag=b"new")
    assert b.high_watermark > a_end                           # B overwrote A's offsets
    a_follower = Follower(a_store, node_id=1)
    start = a_follower.reconcile(a.id, b_epochs.entries)         # as published in etcd
    assert start == shared_end == a.high_watermark
    assert a_epochs.entries == [EpochEntry(3, 0)]
    replies = ship(b, a_follower, start, epoch=5, epochs=b_epochs)
    assert replies[-1].status is Status.OK
    assert replica_files(a) == replica_files(b)
    assert not any(v.startswith(b"lost") for v in records(a))
    assert records(a) == records(b)
    assert a_follower.position(a.id) == LogPosition(5, b.high_watermark)


def test_reconcile_writes_older_epochs_when_the_data_reaches_them(pair):
    leader, follower_store = pair
    lt, ft = leader.create_topic("t"), follower_store.create_topic("t")
    epochs = EpochsFile(lt.folder)
    epochs.append(2, 0)
    write(lt, 3)
    epochs.append(4, lt.high_watermark)
    write(lt, 3)
    epochs.append(6, lt.high_watermark)
    write(lt, 2)
    follower = Follower(follower_store, node_id=3)
    assert follower.reconcile(ft.id, epochs.entries, lt.high_watermark) == 0
    ship(lt, follower, 0, epoch=6, epochs=epochs)
    assert EpochsFile(ft.folder).entries == epochs.entries
    assert replica_files(ft) == replica_files(lt)


def test_no_message_spans_the_leaders_epoch_start_and_an_idle_epoch_is_marked(pair):
    leader, follower_store = pair
    lt, ft = leader.create_topic("t"), follower_store.create_topic("t")
    epochs = EpochsFile(lt.folder)
    epochs.append(2, 0)
    write(lt, 3)
    epochs.append(8, lt.high_watermark)                        # elected, nothing written yet
    follower = Follower(follower_store, node_id=3)
    follower.reconcile(ft.id, epochs.entries[:1], lt.high_watermark)   # knows only epoch 2
    replies = ship(lt, follower, 0, epoch=8, epochs=epochs, max_bytes=1 << 20)
    assert [r.status for r in replies] == [Status.OK, Status.OK]  # the data, then the marker
    assert EpochsFile(ft.folder).entries == epochs.entries
    own_start = epochs.entries[-1].start_offset
    write(lt, 2)
    msgs = list(messages_from(lt, 0, epoch=8, committed=0, epochs=epochs, max_bytes=1 << 20))
    assert [m.global_offset for m in msgs] == [own_start, lt.high_watermark]
    assert msgs[1].new_epoch and not msgs[0].new_epoch


def test_divergence_inside_a_sealed_segment_needs_a_full_resync(pair):
    leader, follower_store = pair
    lt, ft = leader.create_topic("t"), follower_store.create_topic("t")
    follower = Follower(follower_store, node_id=2)
    write(ft, 30)                                             # its own data, with rotations
    assert ft.active.name.base > 0
    with pytest.raises(FullResyncNeeded, match="inside sealed segments"):
        follower.reconcile(ft.id, [EpochEntry(8, 0)], 0)
    with pytest.raises(lance_store.OffsetError, match="INVALID_OFFSET"):
        ft.truncate_to(ft.high_watermark - 1)


def test_a_resent_seal_is_accepted(pair):
    leader, follower_store = pair
    lt, ft = leader.create_topic("t"), follower_store.create_topic("t")
    write(lt, 30)
    boundary = lt.segments[1].name.base
    follower = Follower(follower_store, node_id=2)
    ship(lt, follower, 0, epoch=1, end=boundary)
    assert ft.high_watermark == boundary and ft.segments[0].sealed
    replies = ship(lt, follower, boundary, epoch=1)           # starts with the seal again
    assert replies[0].status is Status.OK and all(r.status is Status.OK for r in replies)
    assert replica_files(ft) == replica_files(lt)
    fresh_names = [s.name.filename for s in ft.segments]
    assert fresh_names == [s.name.filename for s in lt.segments]


def test_an_epochs_entry_past_the_log_end_is_dropped(pair):
    _, store = pair
    t = store.create_topic("t")
    write(t, 1)
    with open(os.path.join(t.folder, "epochs"), "wb") as f:
        f.write(format_entries([EpochEntry(2, 0), EpochEntry(9, t.high_watermark + 77)]))
    follower = Follower(store, node_id=1)
    assert follower.replica(t.id).epochs.entries == [EpochEntry(2, 0)]
    assert follower.highest_epoch == 2


def test_topic_methods_for_replicated_writes_refuse_misuse(pair):
    leader, store = pair
    lt, t = leader.create_topic("t"), store.create_topic("t")
    write(lt, 2)
    data, end, _ = lt.read_raw(0, 1 << 20)
    with pytest.raises(lance_store.OffsetError, match="INVALID_OFFSET: replicated write at 77"):
        t.append_raw(data, 77)
    with pytest.raises(lance_store.CorruptionError, match="trailing bytes|torn"):
        t.append_raw(data[:-1], 0)
    assert t.high_watermark == 0
    assert t.append_raw(data, 0) == end
    with pytest.raises(ValueError, match="only an empty active segment"):
        t.name_active(t.active.name.t0 + 5)
    with pytest.raises(ValueError, match="is not after"):
        t.seal_active(t.active.name.t0)
    sealed = t.seal_active(t.active.name.t0 + 10)
    assert sealed.name.t1 == sealed.name.t0 + 10 and t.active.size == 0
    assert t.name_active(123).name.t0 == 123 and os.path.exists(t.active.path)
    assert t.truncate_to(t.high_watermark) == 0


def test_epochs_file_format():
    entries = [EpochEntry(1, 0), EpochEntry(4, 100), EpochEntry(9, 100)]
    assert parse(format_entries(entries).decode()) == entries
    with pytest.raises(EpochsError, match="line 2"):
        parse("1 0\n1 5\n")
    with pytest.raises(EpochsError, match="line 1"):
        parse("one 0\n")
    with pytest.raises(EpochsError, match="line 2"):
        parse("3 50\n4 10\n")


def test_epochs_file_is_durable_and_ordered(tmp_path):
    ep = EpochsFile(str(tmp_path))
    ep.append(3, 0)
    ep.append(5, 700)
    with pytest.raises(EpochsError, match="higher epoch"):
        ep.append(5, 900)
    assert EpochsFile(str(tmp_path)).entries == [EpochEntry(3, 0), EpochEntry(5, 700)]
    ep.truncate(700)
    assert EpochsFile(str(tmp_path)).entries == [EpochEntry(3, 0)]
    assert not os.path.exists(tmp_path / "epochs.tmp")


@pytest.mark.parametrize("leader, leader_end, follower, follower_end, point", [
    ([(3, 0), (5, 400)], 900, [(3, 0)], 600, 400),      # the returning old leader
    ([(3, 0), (5, 400)], 900, [(3, 0)], 300, 300),      # merely behind
    ([(3, 0), (5, 400)], 900, [(3, 0), (5, 400)], 700, 700),
    ([(3, 0), (5, 400)], 900, [(3, 0), (4, 350)], 800, 350),   # an epoch the leader never saw
    ([(5, 0)], 100, [(4, 0)], 50, 0),                   # nothing shared
    ([(2, 0), (6, 200)], 500, [(2, 0), (6, 200)], 900, 500),    # follower ahead in the same epoch
])
def test_divergence_point(leader, leader_end, follower, follower_end, point):
    le = [EpochEntry(*e) for e in leader]
    fe = [EpochEntry(*e) for e in follower]
    assert divergence_point(le, leader_end, fe, follower_end) == point
