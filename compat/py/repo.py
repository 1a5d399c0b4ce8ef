"""borg's own Repository class as an oracle for repositories we write (and as a writer we
must read). Prints JSON on stdout; warnings borg logs are collected in "log".

  repo.py verify REPO EXPECTED_JSON   EXPECTED = {"objects": {hexid: sha256hex}, "absent": [hexid]}
  repo.py replay-hints REPO           hints of REPO vs hints borg rebuilds by replaying a copy
  repo.py borg-write REPO SEED N      borg puts N objects, overwrites 5 and deletes 5 existing ones
  repo.py create REPO SEED N          borg creates REPO, puts a manifest-id object + N objects
  repo.py compact REPO                rewrite the manifest, commit(compact=True, threshold=0)
  repo.py hold REPO SECONDS           hold the exclusive lock (prints "locked <pid>")
  repo.py key REPO [NEWKEY]           borg's load_key() (after save_key(NEWKEY) if given)
"""
import hashlib
import json
import logging
import os
import shutil
import sys
import tempfile
import time

from borg.logger import setup_logging
from borg.repository import Repository
from borg.helpers import msgpack

MANIFEST_ID = bytes(32)


class Capture(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.records = []

    def emit(self, record):
        self.records.append("%s %s: %s" % (record.levelname, record.name, record.getMessage()))


setup_logging(stream=open(os.devnull, "w"), level="warning")
CAP = Capture()
logging.getLogger("").addHandler(CAP)


def sha(b):
    return hashlib.sha256(b).hexdigest()


def obj(seed, i):
    data = hashlib.sha256(b"data:%d:%d" % (seed, i)).digest() * (1 + (i * 37) % 300)
    return hashlib.sha256(data).digest(), data


def index_file(repo):
    names = [n for n in os.listdir(repo) if n.startswith("index.") and n[6:].isdigit()]
    if not names:
        return None, None
    n = max(names, key=lambda n: int(n[6:]))
    st = os.stat(os.path.join(repo, n))
    return n, (st.st_ino, st.st_mtime_ns)


def k(d, name):
    return d[name.encode()] if name.encode() in d else d[name]


def hints_json(path):
    with open(path, "rb") as f:
        h = msgpack.unpackb(f.read())
    return {
        "segments": {str(s): n for s, n in k(h, "segments").items()},
        "compact": {str(s): n for s, n in k(h, "compact").items()},
        "storage_quota_use": k(h, "storage_quota_use"),
        "shadow_index": {key.hex(): list(v) for key, v in k(h, "shadow_index").items()},
    }


def main():
    cmd, repo_path = sys.argv[1], sys.argv[2]
    out = {}
    if cmd == "verify":
        with open(sys.argv[3]) as f:
            expected = json.load(f)
        before = index_file(repo_path)
        with Repository(repo_path, exclusive=True) as repo:
            out["transaction_id"] = repo.get_transaction_id()
            out["len"] = len(repo)
            ids, marker = [], None
            while True:
                page = repo.list(limit=100, marker=marker)
                if not page:
                    break
                ids += page
                marker = page[-1]
            out["listed"] = len(ids)
            got = {i.hex(): sha(repo.get(i)) for i in ids}
            exp = expected["objects"]
            out["missing"] = sorted(set(exp) - set(got))
            out["extra"] = sorted(set(got) - set(exp))
            out["mismatched"] = sorted(i for i in exp if i in got and got[i] != exp[i])
            out["absent_but_present"] = [i for i in expected.get("absent", []) if bytes.fromhex(i) in repo]
            out["index"] = {key.hex(): [s, o] for key, (s, o) in repo.index.iteritems()}
            out["index_file"] = before[0]
            out["index_unchanged"] = index_file(repo_path) == before
            out["check"] = repo.check()
    elif cmd == "replay-hints":
        with tempfile.TemporaryDirectory() as d:
            copy = os.path.join(d, "r")
            shutil.copytree(repo_path, copy, ignore=shutil.ignore_patterns("lock.*"))
            t = int(index_file(repo_path)[0][6:])
            out["ours"] = hints_json(os.path.join(repo_path, "hints.%d" % t))
            for n in os.listdir(copy):
                if n.startswith(("index.", "hints.", "integrity.")):
                    os.unlink(os.path.join(copy, n))
            with Repository(copy, exclusive=True) as repo:
                out["transaction_id"] = repo.get_transaction_id()
            out["borg"] = hints_json(os.path.join(copy, "hints.%d" % t))
    elif cmd in ("borg-write", "create"):
        seed, n = int(sys.argv[3]), int(sys.argv[4])
        put, deleted = {}, []
        with Repository(repo_path, exclusive=True, create=(cmd == "create")) as repo:
            if cmd == "create":
                data = b"borg manifest %d" % seed
                repo.put(MANIFEST_ID, data)
                put[MANIFEST_ID.hex()] = sha(data)
            existing = [] if cmd == "create" else [i for i in repo.list(limit=100000) if i != MANIFEST_ID]
            existing.sort()
            for i in range(n):
                key, data = obj(seed, i)
                repo.put(key, data)
                put[key.hex()] = sha(data)
            for key in existing[:5]:
                data = b"overwritten by borg " + key
                repo.put(key, data)
                put[key.hex()] = sha(data)
            for key in existing[5:10]:
                repo.delete(key)
                deleted.append(key.hex())
            repo.commit(compact=False)
            out["transaction_id"] = repo.get_transaction_id()
        out["put"], out["deleted"] = put, deleted
    elif cmd == "compact":
        with Repository(repo_path, exclusive=True) as repo:
            data = repo.get(MANIFEST_ID)
            repo.put(MANIFEST_ID, data)
            repo.commit(compact=True, threshold=0.0)
            out["transaction_id"] = repo.get_transaction_id()
            out["len"] = len(repo)
    elif cmd == "key":
        with Repository(repo_path, exclusive=True) as repo:
            if len(sys.argv) > 3:
                repo.save_key(sys.argv[3].encode())
            out["key"] = repo.load_key().decode()
    elif cmd == "hold":
        with Repository(repo_path, exclusive=True):
            print("locked %d" % os.getpid(), flush=True)
            time.sleep(float(sys.argv[3]))
        return
    else:
        raise SystemExit("unknown command " + cmd)
    out["log"] = CAP.records
    print(json.dumps(out))


if __name__ == "__main__":
    main()
