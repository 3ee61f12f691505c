"""Running a command and measuring it, shared by the benchmarks."""

import os
import subprocess
import sys
import tempfile
import time


def timed(command, env=None, ok=(0,)):
    """(wall seconds, peak RSS MiB) of a command, which must exit with a code in `ok`."""
    # stderr to a file: a pipe nobody reads fills up and blocks a chatty tool.
    # Peak RSS is the process's own VmHWM, polled: ru_maxrss of a forked child also counts
    # the pages it shared with this Python process before exec.
    with tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=err, env=env)
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
    cpu = usage.ru_utime + usage.ru_stime
    print(f"  {os.path.basename(command[0])} {command[1]}: {wall:.2f} s wall, {cpu:.2f} s CPU", file=sys.stderr, flush=True)
    return wall, peak_kib / 1024
