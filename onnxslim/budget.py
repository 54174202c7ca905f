"""Memory budget for arrays whose size comes from the model or the command line (issue 15: a feed of
`--input-shape input:1000000,1,8,8` was allocated before anything was checked).

Sizes are computed in Python integers from the dims and compared with the memory the machine has available
(and the process's address-space limit, if any) before anything is allocated; a request over the budget is
one SlimError line (exit 2).
"""
from __future__ import annotations

import math
import os
import resource

from .errors import SlimError

# share of the available memory one allocation may take: the runtimes and a copy or two still need room
SHARE = 0.5


def available_bytes() -> int:
    """MemAvailable from /proc/meminfo (what can be had without swapping), else physical memory, capped
    by RLIMIT_AS when the process runs under one."""
    try:
        with open("/proc/meminfo") as fh:
            avail = next((int(line.split()[1]) * 1024 for line in fh if line.startswith("MemAvailable:")), None)
    except (OSError, ValueError):
        avail = None
    if avail is None:
        try:
            avail = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
        except (ValueError, OSError, AttributeError):
            avail = 8 * 2**30
    try:
        soft, _ = resource.getrlimit(resource.RLIMIT_AS)
        if soft != resource.RLIM_INFINITY:
            avail = min(avail, soft)
    except (ValueError, OSError):
        pass
    return avail


def array_bytes(shape, itemsize: int, count: int = 1) -> int:
    return math.prod(int(d) for d in shape) * int(itemsize) * int(count)


def human(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def require(nbytes: int, what: str, share: float = SHARE) -> None:
    """Refuse (SlimError) an allocation of `nbytes` for `what` over `share` of the available memory."""
    limit = int(available_bytes() * share)
    if nbytes > limit:
        raise SlimError(f"{what} would take {human(nbytes)}, more than the {human(limit)} this machine can spare; "
                        f"nothing allocated")
