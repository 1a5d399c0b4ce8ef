"""Chunk files with borg's own chunkers and report what borg decided.

stdin: JSON {
  "jobs": [{"file": PATH, "algo": "buzhash", "seed": U32, "params": [MIN_EXP, MAX_EXP, MASK_BITS, WINDOW]}
           | {"file": PATH, "algo": "fixed", "block": N, "header": N, "sparse": BOOL}],
  "hashes": [{"file": PATH, "offset": N, "length": N, "seed": U32}],     # buzhash(data, seed)
  "updates": [[SUM, REMOVE, ADD, WINDOW, SEED_U32]],                     # buzhash_update(...)
  "sparsemaps": [PATH]                                                   # sparsemap(fh=fd)
}
stdout: JSON {"jobs": [{"sizes": [...], "alloc": "0102..."}], "hashes": [...], "updates": [...],
              "sparsemaps": [[[start, len, is_data], ...]]}
Allocation digits are borg's CH_DATA=0, CH_ALLOC=1, CH_HOLE=2.
"""
import json
import os
import sys

from borg.chunker import Chunker, ChunkerFixed, buzhash, buzhash_update, sparsemap


def signed32(u):
    # borg keeps the key's chunk_seed as a signed 32-bit int; Chunker() takes a C int.
    return u - (1 << 32) if u & 0x80000000 else u


def run_job(job):
    fd = os.open(job["file"], os.O_RDONLY)
    try:
        if job["algo"] == "buzhash":
            ch = Chunker(signed32(job["seed"]), *job["params"])
            chunks = ch.chunkify(None, fh=fd)
        else:
            ch = ChunkerFixed(job["block"], job["header"], sparse=job["sparse"])
            chunks = ch.chunkify(None, fh=fd)
        sizes = []
        alloc = []
        for c in chunks:
            size = c.meta["size"]
            if c.data is not None and len(c.data) != size:
                raise SystemExit("chunk data length %d != size %d" % (len(c.data), size))
            sizes.append(size)
            alloc.append(str(c.meta["allocation"]))
        return {"sizes": sizes, "alloc": "".join(alloc)}
    finally:
        os.close(fd)


def run_hash(h):
    with open(h["file"], "rb") as f:
        f.seek(h["offset"])
        data = f.read(h["length"])
    return buzhash(data, h["seed"])


def run_sparsemap(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        return [[s, n, bool(d)] for s, n, d in sparsemap(fh=fd)]
    finally:
        os.close(fd)


def main():
    spec = json.load(sys.stdin)
    out = {
        "jobs": [run_job(j) for j in spec.get("jobs", [])],
        "hashes": [run_hash(h) for h in spec.get("hashes", [])],
        "updates": [buzhash_update(*u) for u in spec.get("updates", [])],
        "sparsemaps": [run_sparsemap(p) for p in spec.get("sparsemaps", [])],
    }
    json.dump(out, sys.stdout)


main()
