"""Oracle for borg's metadata objects (items, archive metadata, manifest), driven by
tests/compat_objects.rs. Works with borg 1.2.x and 1.4.x.

Reads one JSON request on stdin and prints one JSON result. Byte strings travel as hex.

  {"op": "items", "items": [ITEM, ...], "ours": [HEX, ...]}
      Builds each ITEM with borg's Item(**kwargs) and packs it like ChunkBuffer.add does
      (msgpack.packb(item.as_dict())). Unpacks each of "ours" with borg's unpacker into
      Item(internal_dict=...) and compares with borg's item. Feeds the concatenation of
      "ours" to the item-stream unpacker of DownloadPipeline.unpack_many and to the C
      CacheSynchronizer used by cache sync.
      -> {"packed": [HEX], "equal": [bool], "stream_equal": bool, "sync": {ID: [refs, size, csize]}}
  {"op": "verify_manifest", "key": KEY, "data": HEX}
      key.unpack_and_verify_manifest (the 1.2 limited unpacker applies), then the checks of
      Manifest.load: version, Archives, item_keys, feature flags.
  {"op": "verify_archive", "key": KEY, "data": HEX}
      1.4: key.unpack_and_verify_archive (TAM required). 1.2 has no archive verification:
      the object is unpacked like Archive._load_meta and the TAM recomputed with the key's
      own _tam_key. Also rebuild_manifest's recognition (valid_msgpacked_dict and friends).
  {"op": "pack_manifest", "key": KEY, "archives": [[NAME, ID, TIME]], "timestamp": T, "tam_required": bool}
      What Manifest.write packs. -> {"data": HEX}
  {"op": "pack_archive", "key": KEY, "meta": {...}}
      What Archive.save packs. -> {"data": HEX}

KEY is {"kind": "plain"} or {"kind": "keyed", "blake2": bool, "id_key", "enc_key", "enc_hmac_key"}.
ITEM maps item keys to JSON values: byte strings as hex (null for nil), chunk lists as
[[ID, size, csize], ...], xattrs as [[NAME, VALUE|null], ...].
"""
import hmac
import json
import sys
from binascii import hexlify, unhexlify

from borg.archive import valid_msgpacked_dict
from borg.constants import ARCHIVE_KEYS, ITEM_KEYS, REQUIRED_ARCHIVE_KEYS
from borg.crypto.key import Blake2RepoKey, PlaintextKey, RepoKey
from borg.hashindex import CacheSynchronizer, ChunkIndex
from borg.helpers import StableDict, msgpack, safe_decode
from borg.helpers.manifest import Archives, Manifest
from borg.item import ArchiveItem, ChunkListEntry, Item, ManifestItem
from borg.logger import setup_logging

TEXT_KEYS = ('path', 'source', 'user', 'group')
BYTES_KEYS = ('acl_access', 'acl_default', 'acl_extended', 'acl_nfs4')
INT_KEYS = ('mode', 'uid', 'gid', 'rdev', 'bsdflags', 'size', 'part', 'mtime', 'atime', 'ctime', 'birthtime')


def h(b):
    return hexlify(b).decode()


def u(s):
    return unhexlify(s)


def make_key(spec):
    if spec['kind'] == 'plain':
        return PlaintextKey(None)
    key = (Blake2RepoKey if spec['blake2'] else RepoKey)(None)
    key.id_key = u(spec['id_key'])
    key.enc_key = u(spec['enc_key'])
    key.enc_hmac_key = u(spec['enc_hmac_key'])
    key.tam_required = True
    return key


def build_item(d):
    kw = {}
    for k, v in d.items():
        if k in TEXT_KEYS:
            kw[k] = None if v is None else safe_decode(u(v))
        elif k in BYTES_KEYS:
            kw[k] = u(v)
        elif k in INT_KEYS:
            kw[k] = v
        elif k == 'hardlink_master':
            kw[k] = bool(v)
        elif k in ('chunks', 'chunks_healthy'):
            kw[k] = [ChunkListEntry(u(i), s, c) for i, s, c in v]
        elif k == 'xattrs':
            kw[k] = StableDict({u(n): (None if x is None else u(x)) for n, x in v})
        else:
            raise ValueError('unknown item key %r' % k)
    return Item(**kw)


def norm(x):
    """Tuples and lists compare equal after this (the unpackers differ in use_list)."""
    if isinstance(x, (list, tuple)):
        return [norm(e) for e in x]
    if isinstance(x, dict):
        return {(k.decode('utf-8', 'surrogateescape') if isinstance(k, bytes) else k): norm(v) for k, v in x.items()}
    return x


def same_item(a, b):
    return norm(dict(a.as_dict())) == norm(dict(b.as_dict()))


def op_items(req):
    borg_items = [build_item(d) for d in req['items']]
    packed = [msgpack.packb(it.as_dict()) for it in borg_items]
    ours = [u(x) for x in req['ours']]
    equal = [same_item(Item(internal_dict=msgpack.unpackb(o)), b) for o, b in zip(ours, borg_items)]
    # the item stream as DownloadPipeline.unpack_many reads it, fed in odd-sized pieces
    stream = b''.join(ours)
    unpacker = msgpack.Unpacker(use_list=False)
    got = []
    for i in range(0, len(stream), 97):
        unpacker.feed(stream[i:i + 97])
        got.extend(Item(internal_dict=x) for x in unpacker)
    stream_equal = len(got) == len(borg_items) and all(same_item(a, b) for a, b in zip(got, borg_items))
    # cache sync's C parser is the strictest reader of item streams
    index = ChunkIndex()
    sync = CacheSynchronizer(index)
    for i in range(0, len(stream), 101):
        sync.feed(stream[i:i + 101])
    sync_out = {h(k): list(v) for k, v in index.iteritems()}
    return {'packed': [h(p) for p in packed], 'equal': equal, 'stream_equal': stream_equal, 'sync': sync_out}


def op_verify_manifest(req):
    key = make_key(req['key'])
    d, verified = key.unpack_and_verify_manifest(u(req['data']))
    m = ManifestItem(internal_dict=d)
    if m.get('version') not in (1, 2):
        raise ValueError('Invalid manifest version')
    archives = Archives()
    archives.set_raw_dict(m.archives)
    listed = {}
    for name in archives:
        info = archives[name]  # parses the time like list/prune do
        listed[h(name.encode('utf-8', 'surrogateescape'))] = [h(info.id), m.archives[name.encode('utf-8', 'surrogateescape')][b'time'].decode()]
    manifest = Manifest(key, None, item_keys=ITEM_KEYS | frozenset(k.decode() for k in m.get('item_keys', [])))
    manifest.config = m.config
    manifest.check_repository_compatibility(list(Manifest.Operation))
    return {
        'verified': verified,
        'version': m.version,
        'archives': listed,
        'timestamp': m.timestamp,
        'item_keys': sorted(manifest.item_keys),
        'tam_required': bool(m.config.get(b'tam_required', False)),
    }


def verify_archive_tam_12(key, data):
    """borg 1.4's unpack_and_verify_archive, for 1.2 which lacks it, using 1.2's _tam_key."""
    unpacked = msgpack.unpackb(data)
    tam = unpacked.pop(b'tam')
    assert tam[b'type'] == b'HKDF_HMAC_SHA512'
    buf = bytearray(data)
    offset = buf.index(tam[b'hmac'])
    buf[offset:offset + 64] = bytes(64)
    calc = hmac.digest(key._tam_key(tam[b'salt'], context=b'archive'), buf, 'sha512')
    return unpacked, hmac.compare_digest(calc, tam[b'hmac'])


def op_verify_archive(req):
    key = make_key(req['key'])
    data = u(req['data'])
    if hasattr(key, 'unpack_and_verify_archive'):
        d, verified, _salt = key.unpack_and_verify_archive(data, force_tam_not_required=False)
        api = 'unpack_and_verify_archive'
    else:
        d, verified = verify_archive_tam_12(key, data)
        api = '_tam_key'
    a = ArchiveItem(internal_dict=d)
    if a.version != 1:
        raise ValueError('Unknown archive metadata version')
    keys_serialized = [msgpack.packb(name.encode()) for name in ARCHIVE_KEYS]
    out = {
        'verified': verified,
        'api': api,
        'valid_msgpacked_dict': valid_msgpacked_dict(data, keys_serialized),
        'rebuild_markers': b'cmdline' in data and b'\xa7version\x01' in data,
        'required_keys': set(k.encode() for k in REQUIRED_ARCHIVE_KEYS).issubset(set(d)),
        'name': h(a.name.encode('utf-8', 'surrogateescape')),
        'items': [h(i) for i in a.items],
        'cmdline': [h(c) for c in a.cmdline],
        'hostname': h(a.hostname.encode('utf-8', 'surrogateescape')),
        'username': h(a.username.encode('utf-8', 'surrogateescape')),
        'time': a.time,
        'time_end': a.time_end,
        'comment': h(a.comment.encode('utf-8', 'surrogateescape')),
        'chunker_params': list(a.chunker_params),
        # raw: borg 1.2's ArchiveItem does not know 'cwd' (1.4 adds it) but carries it along
        'cwd': h(d[b'cwd']) if b'cwd' in d else None,
        'stats': [a.size, a.csize, a.nfiles, a.size_parts, a.csize_parts, a.nfiles_parts],
    }
    return out


def op_pack_manifest(req):
    key = make_key(req['key'])
    archives = Archives()
    for name, id, ts in req['archives']:
        archives[safe_decode(u(name))] = (u(id), ts)
    config = {b'tam_required': True} if req['tam_required'] else {}
    manifest = ManifestItem(
        version=1,
        archives=StableDict(archives.get_raw_dict()),
        timestamp=req['timestamp'],
        config=StableDict(config),
        item_keys=tuple(sorted(ITEM_KEYS)),
    )
    return {'data': h(key.pack_and_authenticate_metadata(manifest.as_dict()))}


def op_pack_archive(req):
    key = make_key(req['key'])
    m = req['meta']
    metadata = {
        'version': 1,
        'name': safe_decode(u(m['name'])),
        'comment': safe_decode(u(m['comment'])),
        'items': [u(i) for i in m['items']],
        # bytes, not sys.argv's str: borg's packer has no surrogateescape, so borg itself
        # cannot save a non-UTF-8 argv (it reads one fine)
        'cmdline': [u(c) for c in m['cmdline']],
        'hostname': safe_decode(u(m['hostname'])),
        'username': safe_decode(u(m['username'])),
        'time': m['time'],
        'time_end': m['time_end'],
        'chunker_params': tuple(m['chunker_params']),
        'size': m['stats'][0],
        'csize': m['stats'][1],
        'nfiles': m['stats'][2],
        'size_parts': m['stats'][3],
        'csize_parts': m['stats'][4],
        'nfiles_parts': m['stats'][5],
    }
    if m.get('cwd') is not None:
        metadata['cwd'] = safe_decode(u(m['cwd']))
    metadata = ArchiveItem(metadata)
    return {'data': h(key.pack_and_authenticate_metadata(metadata.as_dict(), context=b'archive'))}


OPS = {
    'items': op_items,
    'verify_manifest': op_verify_manifest,
    'verify_archive': op_verify_archive,
    'pack_manifest': op_pack_manifest,
    'pack_archive': op_pack_archive,
}


def main():
    setup_logging(level='critical')  # borg's key code logs; keep stdout for JSON
    reqs = json.load(sys.stdin)
    out = []
    for req in reqs:
        try:
            out.append(OPS[req['op']](req))
        except Exception as e:  # reported to the test, which decides whether it was expected
            out.append({'error': '%s: %s' % (type(e).__name__, e)})
    json.dump(out, sys.stdout)


if __name__ == '__main__':
    main()
