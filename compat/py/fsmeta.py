"""Oracle for file-system metadata: borg's own MetadataCollector / acl_set decide.

usage: fsmeta.py collect   stdin {"paths": [str]}
         -> {path: {"path": item, "fd": item or null} per numeric_ids "0"/"1"}
       fsmeta.py acl_set   stdin [{"target": str, "numeric": bool, "mode": int,
                                   "acl_access": hex or null, "acl_default": hex or null}]
         -> [null per entry] (ACLs applied with borg.platform.acl_set)
Items: borg's attribute dict with bytes as hex (atime/ctime included, birthtime off).
"""
import json
import os
import stat
import sys

from borg.archive import MetadataCollector
from borg.platform import acl_set


def hexify(v):
    if isinstance(v, bytes):
        return v.hex()
    if isinstance(v, str):
        return os.fsencode(v).hex()
    if isinstance(v, dict):
        return {(k.hex() if isinstance(k, bytes) else k): hexify(x) for k, x in v.items()}
    return v


def collect(paths):
    out = {}
    for path in paths:
        res = {}
        st = os.lstat(path)
        for numeric in (False, True):
            mc = MetadataCollector(noatime=False, noctime=False, nobirthtime=True,
                                   numeric_ids=numeric, noflags=False, noacls=False, noxattrs=False)
            by_path = mc.stat_attrs(st, path)
            by_fd = None
            if stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode):
                flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK
                if stat.S_ISDIR(st.st_mode):
                    flags |= os.O_DIRECTORY
                fd = os.open(path, flags)
                try:
                    by_fd = mc.stat_attrs(os.fstat(fd), path, fd=fd)
                finally:
                    os.close(fd)
            res['1' if numeric else '0'] = {'path': hexify(by_path), 'fd': hexify(by_fd)}
        out[path] = res
    return out


def apply_acls(entries):
    for e in entries:
        item = {'mode': e['mode']}
        for k in ('acl_access', 'acl_default'):
            if e.get(k) is not None:
                item[k] = bytes.fromhex(e[k])
        acl_set(e['target'], item, numeric_ids=e['numeric'])
    return [None] * len(entries)


def main():
    mode = sys.argv[1]
    data = json.load(sys.stdin)
    if mode == 'collect':
        out = collect(data['paths'])
    elif mode == 'acl_set':
        out = apply_acls(data)
    else:
        raise SystemExit('unknown mode %r' % mode)
    json.dump(out, sys.stdout)


main()
