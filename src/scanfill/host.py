"""Who this process is, for liveness checks that must hold in containers.

A pid means something only inside its PID namespace: a process in another container with the same
host name has pids this one cannot see, and `kill(pid, 0)` would call it dead. So a process is
"known dead" only when it ran on this host *and* in this PID namespace, and its pid is gone.
"""

from __future__ import annotations

import os
import socket


def hostname() -> str:
    return socket.gethostname()


def pid_namespace() -> str:
    """This process's PID namespace ("pid:[4026531836]"), or "" where /proc does not say (not Linux)."""
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


def known_dead(pid: int, pidns: str | None) -> bool:
    """Whether a process recorded as (pid, pidns) on this host is certainly gone. A process of
    another namespace, or one recorded before namespaces were, is never presumed dead here: its
    lease expires instead."""
    if pidns is None or pidns != pid_namespace():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False
