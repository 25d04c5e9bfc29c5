"""Which accounts have open sockets on this instance, watched so that deleting one (on any
instance) reaches its sockets within moments: `deletions.join(caller, deleted)` while a socket
is open, `leave` when it closes.

A Firestore listener per socket cost each listen stream a thread and a stream of its own (0.2%
of a core and 0.15 MB each at 100 streams, `bench/listen`), so the instance's users share
listeners of up to `users.PROFILES_PER_WATCH` profiles each. A user joining a listener rebuilds
it (the new one first, so no deletion falls between the two); a user whose sockets have all
closed stays in it until it is rebuilt or empty.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from shared.auth.tokens import Caller
from shared.resources import users

Deleted = Callable[[], None]


@dataclass(eq=False)
class _Group:
    """Users sharing one listener, and the callbacks of each one's open sockets."""

    sockets: dict[str, set[Deleted]] = field(default_factory=dict)
    watched: set[str] = field(default_factory=set)
    watch: Any = None


class Deletions:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._groups: list[_Group] = []

    @property
    def listeners(self) -> int:
        """Firestore listeners open (one per group of users)."""
        with self._lock:
            return sum(group.watch is not None for group in self._groups)

    def join(self, caller: Caller, deleted: Deleted) -> None:
        """Call `deleted` (from a listener's thread, once) if the caller's account is deleted
        while this socket is open. Blocks on Firestore: run it in a worker thread."""
        users.ensure_profile(caller)  # a profile to delete, and so to see deleted
        with self._lock:
            group = next((g for g in self._groups if caller.uid in g.watched), None)
            if group is not None:
                group.sockets.setdefault(caller.uid, set()).add(deleted)
                return
            group = next(
                (g for g in self._groups if len(g.watched) < users.PROFILES_PER_WATCH),
                None,
            )
            if group is None:
                group = _Group()
                self._groups.append(group)
            group.sockets.setdefault(caller.uid, set()).add(deleted)
            self._rewatch(group, {*group.watched, caller.uid})

    def leave(self, caller: Caller, deleted: Deleted) -> None:
        with self._lock:
            for group in self._groups:
                callbacks = group.sockets.get(caller.uid)
                if callbacks is None or deleted not in callbacks:
                    continue
                callbacks.discard(deleted)
                if not callbacks:
                    del group.sockets[caller.uid]
                if not group.sockets:
                    self._rewatch(group, set())
                    self._groups.remove(group)
                return

    def _rewatch(self, group: _Group, uids: set[str]) -> None:
        """Point the group's listener at `uids` (none: stop it). Holds the lock."""
        old, group.watched, group.watch = group.watch, uids, None
        if uids:
            watched = frozenset(uids)
            group.watch = users.ProfilesWatch(
                sorted(uids), lambda present: self._seen(group, watched, present)
            )
        if old is not None:
            old.stop()

    def _seen(self, group: _Group, watched: frozenset[str], present: set[str]) -> None:
        """A listener's snapshot: of the uids it `watched`, those with no profile now are
        deleted (a listener being replaced may still report, for its own uids only). A
        listener's snapshot can briefly lack a document that exists (measured on the emulator,
        while listeners are replaced), so an absence is confirmed by a read first."""
        with self._lock:
            missing = [uid for uid in group.sockets if uid in watched and uid not in present]
        gone = [uid for uid in missing if not users.profile_exists(uid)]
        with self._lock:
            fired = [callback for uid in gone for callback in group.sockets.pop(uid, ())]
        for callback in fired:
            callback()


deletions = Deletions()
