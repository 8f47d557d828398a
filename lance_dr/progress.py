"""How long-running steps report bytes done: a factory of progress callbacks.

`ProgressBar(total)` is a context manager yielding `advance(n)`; the CLI passes
`lance_store.clikit.progress_bar`, the library defaults to `no_bar`.
"""
from __future__ import annotations

import contextlib
from typing import Callable, ContextManager

Advance = Callable[[int], None]
ProgressBar = Callable[[int], ContextManager[Advance]]


def no_bar(_total: int) -> ContextManager[Advance]:
    return contextlib.nullcontext(lambda _n: None)
