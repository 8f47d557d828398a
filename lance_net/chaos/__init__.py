"""Chaos testing of a broker: sequence-numbered records produced and consumed while it is killed.

`ledger` says what a record carries and judges what came back, `node` runs a broker to kill,
`cluster` an L3 cluster whose leader to kill, `run` drives one run; `lance-net chaos` is the
command line.
"""
from .cluster import SpawnedCluster
from .ledger import Ledger, Verdict, judge, sequences_of, stamp
from .node import NodeFailed, SpawnedNode
from .run import ChaosReport, ChaosRun, ChaosSettings

__all__ = ["ChaosReport", "ChaosRun", "ChaosSettings", "Ledger", "NodeFailed", "SpawnedCluster",
           "SpawnedNode", "Verdict", "judge", "sequences_of", "stamp"]
