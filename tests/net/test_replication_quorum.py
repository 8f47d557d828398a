"""The leader's commit rule, eviction and the failover comparison, against brute force."""
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from lance_net.replication.quorum import (
    LogPosition, QuorumTracker, behind_on, committed_offset, may_accept_writes, most_up_to_date,
    required_copies,
)

OFFSET = st.integers(0, 10_000)


def brute_committed(offsets: list[int], cluster_size: int) -> int:
    """The largest offset o such that a majority of the cluster holds at least o."""
    need = cluster_size // 2 + 1
    padded = offsets + [0] * (cluster_size - len(offsets))
    return max([0] + [o for o in padded if sum(x >= o for x in padded) >= need])


def test_required_copies():
    assert [required_copies(n) for n in range(1, 8)] == [1, 2, 2, 3, 3, 4, 4]
    with pytest.raises(ValueError, match="cluster_size"):
        required_copies(0)


@given(st.integers(1, 9).flatmap(lambda n: st.tuples(
    st.just(n), OFFSET, st.dictionaries(st.integers(1, 20), OFFSET, max_size=n - 1))))
def test_committed_offset_is_what_a_majority_holds(case):
    n, leader, confirmed = case
    got = committed_offset(leader, confirmed, n)
    assert got == brute_committed([leader, *confirmed.values()], n)
    assert sum(o >= got for o in [leader, *confirmed.values()]) >= required_copies(n) or got == 0


def test_committed_offset_examples():
    assert committed_offset(100, {2: 50, 3: 70}, 3) == 70
    assert committed_offset(100, {2: 50}, 3) == 50
    assert committed_offset(100, {}, 3) == 0          # the absent follower holds nothing
    assert committed_offset(100, {}, 1) == 100        # a one-node cluster commits alone
    assert committed_offset(10, {2: 90, 3: 80, 4: 70, 5: 0}, 5) == 70
    with pytest.raises(ValueError, match="confirmed"):
        committed_offset(1, {2: 1, 3: 1, 4: 1}, 3)


def test_log_positions_compare_epoch_first():
    assert LogPosition(5, 10) > LogPosition(4, 10_000)
    assert LogPosition(5, 11) > LogPosition(5, 10)
    assert most_up_to_date({1: LogPosition(4, 900), 2: LogPosition(5, 100), 3: LogPosition(5, 50)}) == 2
    assert most_up_to_date({7: LogPosition(5, 100), 3: LogPosition(5, 100)}) == 3
    with pytest.raises(ValueError):
        most_up_to_date({})


def test_a_new_leader_needs_a_majority_of_positions():
    own = LogPosition(6, 500)
    assert not may_accept_writes(own, {2: LogPosition(5, 900)}, 5)        # 2 of 5 known
    assert may_accept_writes(own, {2: LogPosition(5, 900), 3: LogPosition(6, 500)}, 5)
    assert not may_accept_writes(own, {2: LogPosition(6, 501), 3: LogPosition(1, 0)}, 5)
    assert may_accept_writes(LogPosition(0, 0), {}, 1)


@settings(max_examples=300)
@given(st.integers(1, 7).flatmap(lambda n: st.tuples(
    st.just(n), st.lists(st.builds(LogPosition, st.integers(0, 5), OFFSET), min_size=n, max_size=n),
    st.builds(LogPosition, st.integers(0, 5), OFFSET))), st.data())
def test_a_leader_that_may_take_writes_holds_every_acknowledged_batch(case, data):
    """An acknowledged batch lies below every position at or above its own (epoch, end) on at
    least `required` nodes; a leader that heard any majority and is ahead of all of it is
    itself at or above that position."""
    n, positions, acked = case
    holders = [i for i, p in enumerate(positions) if p >= acked]
    if len(holders) < required_copies(n):
        return  # this batch was never acknowledged
    leader = data.draw(st.integers(0, n - 1))
    others = [i for i in range(n) if i != leader]
    heard = data.draw(st.lists(st.sampled_from(others), unique=True)) if others else []
    if may_accept_writes(positions[leader], {i: positions[i] for i in heard}, n):
        assert positions[leader] >= acked


class TrackerMachine(RuleBasedStateMachine):
    """Random confirmations, leader writes, evictions and resyncs: the committed offset never
    goes back, never exceeds what `required` members really hold, and `required` never drops."""

    @initialize(n=st.integers(1, 6), epoch_start=st.sampled_from([0, 0, 300]))
    def setup(self, n, epoch_start):
        self.members = list(range(1, n + 1))
        self.t = QuorumTracker(1, self.members, epoch_start=epoch_start)
        self.epoch_start = epoch_start
        self.durable = {m: epoch_start if m == 1 else 0 for m in self.members}
        self.recorded = {1}
        self.required = required_copies(n)
        self.last = 0

    @rule(step=st.integers(0, 500))
    def leader_writes(self, step):
        self.durable[1] += step
        self.t.leader_wrote(self.durable[1])

    @rule(data=st.data())
    def follower_confirms(self, data):
        if len(self.members) == 1:
            return
        node = data.draw(st.sampled_from(self.members[1:]))
        offset = data.draw(st.integers(self.durable[node], max(self.durable[node], self.durable[1])))
        self.durable[node] = offset
        self.t.confirm(node, offset)

    @rule(data=st.data())
    def follower_records_epoch(self, data):
        if len(self.members) == 1:
            return
        node = data.draw(st.sampled_from(self.members[1:]))
        self.recorded.add(node)
        self.t.record_epoch(node)

    @rule(data=st.data())
    def evict(self, data):
        if len(self.members) == 1:
            return
        node = data.draw(st.sampled_from(self.members[1:]))
        in_sync_before = len(self.t.in_sync)
        evicted = self.t.evict(node)
        if evicted:
            assert len(self.t.in_sync) + 1 >= self.required
        else:
            assert node not in self.t.in_sync or in_sync_before < self.required

    @rule(data=st.data())
    def resync(self, data):
        if len(self.members) == 1:
            return
        node = data.draw(st.sampled_from(self.members[1:]))
        # a follower only ever truncates what was not committed
        cut = data.draw(st.integers(min(self.t.committed, self.durable[node]), self.durable[node]))
        self.durable[node] = cut
        self.t.reset_follower(node, cut)

    @invariant()
    def committed_is_safe(self):
        c = self.t.committed
        assert c >= self.last
        self.last = c
        assert self.t.required == self.required
        assert sum(d >= c for d in self.durable.values()) >= self.required or c == 0
        # only past a byte of this leader's epoch, or at its start once a majority recorded it
        recorded_start = sum(1 for n in self.recorded if self.durable[n] >= self.epoch_start)
        assert c == 0 or c > self.epoch_start or (c == self.epoch_start
                                                  and recorded_start >= self.required)


TestTracker = TrackerMachine.TestCase
TestTracker.settings = settings(max_examples=80, stateful_step_count=30, deadline=None)


def test_tracker_example():
    t = QuorumTracker(1, [1, 2, 3])
    assert t.leader_wrote(100) == 0
    assert t.confirm(2, 60) == 60
    assert t.acknowledgeable(60) and not t.acknowledgeable(61)
    assert t.confirm(3, 100) == 100
    assert t.lagging(10) == [2]
    assert t.evict(2)                  # leader + node 3 still make the 2 required
    assert not t.evict(3)              # that would leave the leader alone: refused
    assert t.required == 2
    t.confirm(2, 100)
    assert 2 in t.in_sync              # caught up to the committed offset: back in sync
    with pytest.raises(KeyError, match="node 9"):
        t.confirm(9, 1)


def test_a_new_leader_commits_only_past_its_epoch_start():
    t = QuorumTracker(1, [1, 2, 3], epoch_start=500)
    assert t.confirm(2, 500) == 0 and t.confirm(3, 500) == 0   # older epochs' bytes alone: no
    assert t.leader_wrote(650) == 0
    assert t.confirm(2, 650) == 650


def test_a_recorded_epoch_start_commits_before_any_write():
    t = QuorumTracker(1, [1, 2, 3], epoch_start=500)
    assert t.confirm(2, 500) == 0              # holds the bytes, has not recorded the epoch
    assert t.record_epoch(3) == 0              # recorded the epoch, holds nothing yet
    assert t.confirm(3, 500) == 500            # leader and node 3 hold [0, 500) under epoch
    assert t.acknowledgeable(500) and not t.acknowledgeable(501)


def test_behind_on_lists_the_topics_a_new_leader_lacks():
    own = {1: LogPosition(5, 900), 2: LogPosition(5, 100)}
    others = {2: {1: LogPosition(5, 800), 2: LogPosition(5, 300)}, 3: {3: LogPosition(4, 50)}}
    assert behind_on(own, others, 3) == [2, 3]      # topic 3 only another node holds
    assert behind_on(own, {2: others[2]}, 3) == [2]
    assert behind_on({1: LogPosition(6, 0)}, {2: {1: LogPosition(5, 10**6)}}, 3) == []
    assert behind_on(own, {}, 3) == [1, 2]          # no majority heard: nothing is safe
    assert behind_on(own, {}, 1) == []
