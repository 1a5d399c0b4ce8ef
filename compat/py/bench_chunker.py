"""Times borg's own chunker on a file: bench_chunker.py FILE PARAMS [SEED].

PARAMS is borg's --chunker-params syntax ("default", "buzhash,19,23,21,4095", "fixed,4194304").
Reads through an OS file descriptor like `borg create` does and consumes every chunk.
Prints one line: chunks=N bytes=B seconds=S cpu=C MB/s=R (MB = 10**6 bytes).
"""
import os
import sys
import time

from borg.chunker import get_chunker
from borg.helpers import ChunkerParams


def main():
    path, spec = sys.argv[1], sys.argv[2]
    seed = int(sys.argv[3]) if len(sys.argv) > 3 else 0
    if seed & 0x80000000:
        seed -= 1 << 32
    params = ChunkerParams(spec)
    chunker = get_chunker(*params, seed=seed, sparse=False)
    fd = os.open(path, os.O_RDONLY)
    try:
        t0, c0 = time.perf_counter(), time.process_time()
        chunks = size = 0
        for c in chunker.chunkify(None, fh=fd):
            chunks += 1
            size += c.meta["size"]
        secs, cpu = time.perf_counter() - t0, time.process_time() - c0
    finally:
        os.close(fd)
    print("chunks=%d bytes=%d seconds=%.4f cpu=%.4f MB/s=%.1f" % (chunks, size, secs, cpu, size / secs / 1e6))


main()
