"""Run a command; write its peak RSS to a JSON file:  python maxrss.py OUT.json CMD [ARG …]

Linux carries a process's RSS high-water mark across exec, so a child forked from a large
process (the benchmark, with TensorFlow loaded) reports at least the parent's size. Started from
this small process instead, the command's ru_maxrss (from wait4) is its own.
"""

import json
import os
import subprocess
import sys


def main() -> int:
    out, argv = sys.argv[1], sys.argv[2:]
    proc = subprocess.Popen(argv)
    _, status, usage = os.wait4(proc.pid, 0)
    with open(out, "w") as f:
        json.dump({"max_rss_kib": usage.ru_maxrss}, f)
    return os.waitstatus_to_exitcode(status)


if __name__ == "__main__":
    sys.exit(main())
