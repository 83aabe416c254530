"""Live workflows kept between the steps of a dossier, in this process.

Restoring a workflow from its stored state costs more than running a step, and
a dossier is usually worked on by the process that last moved it. After a
successful commit the use case :func:`keep` the workflow together with the
exact state text it stored; the next step :func:`take` s it back only when the
state it has just read (under the dossier's row lock) is that very text.

Correctness does not rest on the cache:

* the stored state is the truth: any change by another process (or by code
  that does not use the cache) changes the text, so the entry no longer
  matches and the workflow is restored from the database as before;
* :func:`take` removes the entry, so a workflow is never shared by two units
  of work, and a step that fails (rollback, crash) leaves nothing behind: the
  next step restores the last committed state;
* task ids are random UUIDs, so two dossiers never have the same state text.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any, Hashable

__all__ = ["clear", "keep", "take", "CAPACITY"]

#: How many live workflows a process keeps (least recently stored go first).
CAPACITY = 1024

_entries: "OrderedDict[Hashable, tuple[str, Any]]" = OrderedDict()
_lock = threading.Lock()


def take(key: Hashable, state: str) -> Any | None:
    """The workflow stored for ``key`` if its state is exactly ``state``; the entry is removed."""
    with _lock:
        entry = _entries.pop(key, None)
    if entry is None or entry[0] != state:
        return None
    return entry[1]


def keep(key: Hashable, state: str, workflow: Any) -> None:
    """Remember ``workflow`` for ``key``, committed as ``state``."""
    with _lock:
        _entries[key] = (state, workflow)
        _entries.move_to_end(key)
        while len(_entries) > CAPACITY:
            _entries.popitem(last=False)


def clear() -> None:
    """Forget every workflow (tests, or after a change of the spec cache)."""
    with _lock:
        _entries.clear()
