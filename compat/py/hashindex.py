"""borg's own HashIndex / file integrity code as an oracle for our index files.

Usage (python of the borg version under test):
  hashindex.py dump ns|chunks PATH          -> JSON {"len": n, "entries": {hexkey: [values]}}
  hashindex.py write ns|chunks PATH N SEED  -> builds an index with borg, writes it, prints its dump
  hashindex.py digests index|plain NAME PATH -> borg's IntegrityCheckedFile digests (JSON text) of
                                               the file written through borg as NAME
  hashindex.py verify index|plain NAME PATH JSON -> reads PATH through borg's IntegrityCheckedFile
                                               with our digests; prints "ok" or raises
"""
import hashlib
import json
import os
import sys
import tempfile

from borg.hashindex import NSIndex, ChunkIndex
from borg.crypto.file_integrity import IntegrityCheckedFile
from borg.logger import setup_logging

setup_logging(stream=sys.stderr, level="warning")

CLS = {"ns": NSIndex, "chunks": ChunkIndex}


def key(seed, i):
    return hashlib.sha256(b"%d:%d" % (seed, i)).digest()


def dump(idx, kind):
    out = {}
    if kind == "ns":
        for k, v in idx.iteritems():
            out[k.hex()] = [v[0], v[1]]
    else:
        for k, v in idx.iteritems():
            out[k.hex()] = [v.refcount, v.size, v.csize]
    return {"len": len(idx), "entries": out}


def main():
    cmd = sys.argv[1]
    if cmd == "dump":
        kind, path = sys.argv[2], sys.argv[3]
        idx = CLS[kind].read(path)
        print(json.dumps(dump(idx, kind)))
    elif cmd == "write":
        kind, path, n, seed = sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
        idx = CLS[kind]()
        for i in range(n):
            k = key(seed, i)
            if kind == "ns":
                idx[k] = (i % 5000, 8 + i * 41 % 1000000)
            else:
                idx[k] = (1 + i % 7, i * 3 % 100000, i % 65536)
        # some deletes leave tombstones in borg's table
        for i in range(0, n, 10):
            del idx[key(seed, i)]
        idx.write(path)
        print(json.dumps(dump(idx, kind)))
    elif cmd == "digests":
        what, name, path = sys.argv[2], sys.argv[3], sys.argv[4]
        with tempfile.TemporaryDirectory() as d:
            tmp = os.path.join(d, name + ".tmp")
            with IntegrityCheckedFile(tmp, filename=name, write=True) as fd:
                if what == "index":
                    (NSIndex if _value_size(path) == 8 else ChunkIndex).read(path).write(fd)
                else:
                    with open(path, "rb") as src:
                        fd.write(src.read())
            with open(tmp, "rb") as f, open(path, "rb") as g:
                same = f.read() == g.read()
        print(json.dumps({"integrity": fd.integrity_data, "same_bytes": same}))
    elif cmd == "verify":
        what, name, path, data = sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
        # Read it under its final name, like Repository.open_index / prepare_txn.
        with tempfile.TemporaryDirectory() as d:
            p = os.path.join(d, name)
            with open(path, "rb") as src, open(p, "wb") as dst:
                dst.write(src.read())
            with IntegrityCheckedFile(p, write=False, integrity_data=data) as fd:
                if what == "index":
                    (NSIndex if _value_size(p) == 8 else ChunkIndex).read(fd)
                else:
                    fd.read()
        print("ok")
    else:
        raise SystemExit("unknown command " + cmd)


def _value_size(path):
    with open(path, "rb") as f:
        return f.read(18)[17]


if __name__ == "__main__":
    main()
