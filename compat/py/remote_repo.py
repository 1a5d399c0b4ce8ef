"""borg's own Repository class, opened locally, as the oracle for repositories written
through `borg serve` by tests/remote_repo.rs. Prints one JSON object on stdout.

  remote_repo.py dump REPO
      -> {"check": bool, "objects": {hexid: sha256hex}, "append_only": bool,
          "transactions": bool, "nonce": str|null, "key": str}
"""
import hashlib
import json
import os
import sys

from borg.logger import setup_logging
from borg.repository import Repository

setup_logging(stream=open(os.devnull, "w"), level="warning")


def dump(path):
    # lock_wait bounds the wait should a server still hold the lock; a dead holder's stale
    # lock is broken by borg itself.
    with Repository(path, exclusive=True, lock_wait=10) as repo:
        ok = repo.check()
        objects = {}
        marker = None
        while True:
            ids = repo.list(limit=1000, marker=marker)
            for id_ in ids:
                objects[id_.hex()] = hashlib.sha256(repo.get(id_)).hexdigest()
            if len(ids) < 1000:
                break
            marker = ids[-1]
        key = repo.load_key().decode()
        append_only = repo.append_only
    nonce_path = os.path.join(path, "nonce")
    nonce = open(nonce_path).read().strip() if os.path.exists(nonce_path) else None
    return {
        "check": bool(ok),
        "objects": objects,
        "append_only": bool(append_only),
        "transactions": os.path.exists(os.path.join(path, "transactions")),
        "nonce": nonce,
        "key": key,
    }


def main():
    cmd = sys.argv[1]
    if cmd == "dump":
        print(json.dumps(dump(sys.argv[2])))
    else:
        raise SystemExit("unknown command %r" % cmd)


if __name__ == "__main__":
    main()
