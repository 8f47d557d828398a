"""L3 replication: coordination through etcd, the leader-to-follower data plane, and the commit rule.

`coordinator` (membership, election, ids), `lease` (when a leader may still acknowledge),
`wire` (the data plane's bytes, sans-IO), `source` (a leader's log as messages),
`follower` (applying them), `epochs` (the epochs file), `quorum` (the commit index).
"""
from .coordinator import Coordinator, LeaderInfo, NodeInfo, NotLeaderError
from .epochs import EpochEntry, EpochsFile, divergence_point
from .etcd import EtcdClient, EtcdError, EtcdUnavailable, LeaseNotFound
from .follower import ForeignSeed, Follower, FullResyncNeeded, ReplicationError, StaleEpoch
from .lease import Lease
from .quorum import LogPosition, QuorumTracker, committed_offset, may_accept_writes, required_copies
from .source import messages_from
from .wire import (FollowerReply, Preamble, Replicate, ReplicationProtocolError, ReplicationReceiver,
                   ReplyReceiver, Status)

__all__ = [
    "Coordinator", "EpochEntry", "EpochsFile", "EtcdClient", "EtcdError", "EtcdUnavailable",
    "Follower", "FollowerReply", "ForeignSeed", "FullResyncNeeded", "LeaderInfo", "Lease", "LeaseNotFound",
    "LogPosition", "NodeInfo", "NotLeaderError", "Preamble", "QuorumTracker", "Replicate",
    "ReplicationError", "ReplicationProtocolError", "ReplicationReceiver", "ReplyReceiver",
    "StaleEpoch", "Status", "committed_offset", "divergence_point", "may_accept_writes",
    "messages_from", "required_copies",
]
