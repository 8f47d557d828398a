"""LANCE disaster-recovery toolkit: ship, verify, restore and warm-start segment files.

Built on lance_store read-only opens; never re-parses segment bytes itself.
The public API: `ship`, `verify_target`, `restore`, `drill`, `warm_start`,
`open_target` and the `Target` interface, `Manifest`.
"""
from .drill import DrillReport, drill
from .errors import (DamageError, DRError, ManifestError, NothingShipped, ObjectMissing, RestoreError,
                     SourceChanged, TargetError)
from .generations import list_generations, load_latest, load_manifest, read_latest
from .lag import Lag, lag_behind, recovery_point_lag
from .manifest import FileEntry, Manifest, SegmentEntry, TopicEntry
from .restore import RestorePoint, RestoreResult, restore
from .ship import ShipResult, SourceDamage, ship
from .targets import FsspecTarget, LocalTarget, RsyncTarget, Target, Upload, open_target
from .verify import TargetReport, TopicVerdict, check_segment, verify_target
from .watch import watch
from .warmstart import BrokerUnavailable, WarmStart, warm_start

__all__ = [
    "ship", "ShipResult", "SourceDamage", "verify_target", "TargetReport", "TopicVerdict", "check_segment",
    "restore", "RestorePoint", "RestoreResult", "drill", "DrillReport", "warm_start", "WarmStart",
    "BrokerUnavailable", "recovery_point_lag", "lag_behind", "watch", "Lag", "open_target", "Target", "Upload", "LocalTarget",
    "FsspecTarget", "RsyncTarget", "Manifest", "SegmentEntry", "TopicEntry", "FileEntry",
    "list_generations", "load_latest", "load_manifest", "read_latest", "DRError", "TargetError",
    "ObjectMissing", "ManifestError", "NothingShipped", "RestoreError", "DamageError", "SourceChanged",
]
