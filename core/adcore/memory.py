"""Peak resident memory of this process, per job step (``peak_rss_mb`` in metrics.json and predictions.json)."""

from __future__ import annotations

import resource
import sys

__all__ = ["peak_rss_mb", "reset_peak_rss"]


def reset_peak_rss() -> None:
    """Start a new peak-memory count (Linux), so each category reports its own peak."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
    except OSError:
        pass  # elsewhere peak_rss_mb() reports the process peak so far


def peak_rss_mb() -> float:
    """Peak resident memory in MB since the last reset_peak_rss() (Linux) or process start."""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024
