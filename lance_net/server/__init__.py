"""The LANCE broker (`lance-net serve`): asyncio connections over the storage engine.

Modules: broker (life), connection (one client), produce/ingest/producers (writes),
consume/longpoll/offsets (reads), admin, auth, tls, http, metrics, options.
"""
from .broker import Broker, run
from .options import ServerOptions

__all__ = ["Broker", "ServerOptions", "run"]
