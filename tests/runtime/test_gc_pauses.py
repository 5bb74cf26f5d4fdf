"""A warm risk process keeps its long-lived objects out of full garbage collections."""

from __future__ import annotations

import subprocess
import sys
import textwrap

# In a fresh interpreter: one live object graph and one unreachable reference cycle, then the freeze.
_PROBE = textwrap.dedent("""
    import gc, weakref
    from risklib.gc_pauses import freeze_warm_heap

    class Node:
        pass

    live = Node(); live.self = live
    dead = Node(); dead.self = dead
    dead_ref = weakref.ref(dead)
    del dead
    frozen = freeze_warm_heap()
    tracked = gc.get_objects()
    print(frozen == gc.get_freeze_count(), frozen > 1000, dead_ref() is None,
          any(o is live for o in tracked), live.self is live)

    # a frozen cycle that dies later (the previous monitor run's session) goes at the next freeze
    live_ref = weakref.ref(live)
    del live, tracked
    freeze_warm_heap()
    print(live_ref() is None)
""")


def test_freeze_collects_garbage_first_hides_live_objects_and_a_later_freeze_collects_what_died():
    # Act
    out = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, check=True).stdout.split()
    # Assert
    frozen_counted, many_frozen, garbage_collected, live_still_tracked, live_intact, refrozen_collects_dead = out
    assert frozen_counted == "True" and many_frozen == "True"
    assert garbage_collected == "True"  # the unreachable cycle was collected, not frozen
    assert live_still_tracked == "False"  # a full collection no longer walks it
    assert live_intact == "True"
    assert refrozen_collects_dead == "True"
