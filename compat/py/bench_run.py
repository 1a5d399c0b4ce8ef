"""Runs one command and measures it: bench_run.py [--stdin FILE] -- CMD ARGS...

Prints one line: `wall=S user=S sys=S rss_mib=M rc=N` where rss_mib is the peak resident
set size of the largest process the command ran (getrusage of the children: for a pipeline
through ssh this is the biggest of the client, ssh and anything else waited for). The
command's own output goes to stderr, so the result line is the only thing on stdout.
"""
import os
import resource
import subprocess
import sys
import time


def main():
    args = sys.argv[1:]
    stdin = subprocess.DEVNULL
    if args[:1] == ["--stdin"]:
        stdin = open(args[1], "rb")
        args = args[2:]
    if args[:1] == ["--"]:
        args = args[1:]
    t0 = time.perf_counter()
    p = subprocess.run(args, stdin=stdin, stdout=sys.stderr, stderr=sys.stderr)
    wall = time.perf_counter() - t0
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    print("wall=%.3f user=%.3f sys=%.3f rss_mib=%.1f rc=%d"
          % (wall, ru.ru_utime, ru.ru_stime, ru.ru_maxrss / 1024.0, p.returncode))
    sys.exit(0)


main()
