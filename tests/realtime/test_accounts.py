"""`realtime.accounts`: the instance's open accounts share Firestore listeners of up to 30
profiles, and deleting one profile tells that account's sockets only, once."""

from __future__ import annotations

import threading
import time
import uuid

from realtime.accounts import Deletions
from shared.auth.tokens import Caller
from shared.resources.users import PROFILES_PER_WATCH


def test_deleting_one_of_many_watched_accounts_tells_only_its_sockets(stack, firestore):
    deletions = Deletions()
    fired: list[str] = []
    lock = threading.Lock()
    run = uuid.uuid4().hex[:8]
    callers = [Caller(uid=f"acct-{run}-{i:02d}") for i in range(PROFILES_PER_WATCH + 5)]

    def told(uid: str):
        def deleted() -> None:
            with lock:
                fired.append(uid)

        return deleted

    callbacks = {caller.uid: told(caller.uid) for caller in callers}
    for caller in callers:
        deletions.join(caller, callbacks[caller.uid])
    second_socket = told(callers[0].uid)
    deletions.join(callers[0], second_socket)  # another socket of an account already watched
    assert deletions.listeners == 2  # 35 accounts, 30 to a listener
    time.sleep(1)  # every listener has its first snapshot: nobody is gone
    assert fired == []

    for victim in (callers[0], callers[-1]):  # one in each listener
        firestore.collection("users").document(victim.uid).delete()
    deadline = time.monotonic() + 10
    while len(fired) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # nothing more comes
    assert sorted(fired) == sorted([callers[0].uid, callers[0].uid, callers[-1].uid])

    for caller in callers:
        deletions.leave(caller, callbacks[caller.uid])
    assert deletions.listeners == 0
