"""Running a command and measuring it, shared by the benchmarks."""

import collections
import os
import subprocess
import sys
import tempfile
import time

Measured = collections.namedtuple("Measured", "wall rss user sys")


def measured(command, env=None, ok=(0,), stdout=None):
    """Wall seconds, peak RSS MiB, user and system CPU seconds of a command, which must exit
    with a code in `ok`. Its stdout goes to the open file `stdout`, or is dropped."""
    # stderr to a file: a pipe nobody reads fills up and blocks a chatty tool.
    # Peak RSS is the process's own VmHWM, polled: ru_maxrss of a forked child also counts
    # the pages it shared with this Python process before exec.
    with tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(command, stdout=stdout or subprocess.DEVNULL, stderr=err, env=env)
        peak_kib = 0
        while True:
            try:
                with open(f"/proc/{proc.pid}/status") as f:
                    for line in f:
                        if line.startswith("VmHWM:"):
                            peak_kib = max(peak_kib, int(line.split()[1]))
            except (FileNotFoundError, ProcessLookupError, ValueError):
                pass
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            time.sleep(0.01)
        wall = time.perf_counter() - start
        code = os.waitstatus_to_exitcode(status)
        if code not in ok:
            err.seek(0)
            sys.exit(f"{command[0]} failed ({code}): {err.read().decode()[-2000:]}")
    user, system = usage.ru_utime, usage.ru_stime
    print(f"  {os.path.basename(command[0])} {command[1]}: {wall:.2f} s wall, {user + system:.2f} s CPU "
          f"({user:.2f} user, {system:.2f} sys)", file=sys.stderr, flush=True)
    return Measured(wall, peak_kib / 1024, user, system)


def timed(command, env=None, ok=(0,)):
    """(wall seconds, peak RSS MiB) of a command, which must exit with a code in `ok`."""
    m = measured(command, env=env, ok=ok)
    return m.wall, m.rss
