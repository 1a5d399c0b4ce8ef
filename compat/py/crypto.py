"""Oracle for keys, object envelopes, key blobs, keyfiles and TAMs: borg's own key classes.

usage: crypto.py OP  (JSON request on stdin, JSON answer on stdout; bytes travel as hex)

A key is built from material we hand in: borg's key class for the mode, its attributes
set as `_load` would set them, then `init_ciphers()` exactly as after loading a key.

ops:
  seal      {mode, material, items: [{data, iv}]}  -> [{env, id}]
            borg's key.encrypt with the 'none' compressor and the given IV.
  open      {mode, material, items: [{id, env}]}   -> [{data} | {error}]
            borg's key.decrypt(id, env): type byte, MAC, decrypt, decompress, assert_id.
  blob_load {mode, repository_id, text, passphrase} -> {ok, material?}
            borg's KeyfileKeyBase._load (repokey path).
  keyfile_load {mode, repository_id, path, passphrase} -> {ok, material?} | {error}
            borg's KeyfileKey.sanity_check + load on a keyfile.
  tam_seal  {mode, material, context, dict}        -> {data}
            key.pack_and_authenticate_metadata(dict, context).
  tam_verify {mode, material, context, data}       -> {verified} | {error}
            key.unpack_and_verify_manifest / unpack_and_verify_archive (1.4 only).
  keyname   {locations: [str]}                     -> [{host, path, name}]
            basename of Location(loc).to_key_filename().
  shlex     {strings: [str]}                       -> [{words} | {error}]
            Python's shlex.split, which borg applies to BORG_PASSCOMMAND.
"""
import json
import os
import shlex
import shutil
import sys
import tempfile

_base = tempfile.mkdtemp(prefix='borg-crypto-oracle-')
os.environ['BORG_BASE_DIR'] = _base  # to_key_filename and key loading touch the keys dir

from borg.compress import Compressor  # noqa: E402
from borg.crypto import key as K  # noqa: E402
from borg.logger import setup_logging  # noqa: E402

setup_logging(level='error')  # key methods log; borg insists on configured logging

CLASSES = {
    'none': K.PlaintextKey,
    'authenticated': K.AuthenticatedKey,
    'authenticated-blake2': K.Blake2AuthenticatedKey,
    'repokey': K.RepoKey,
    'keyfile': K.KeyfileKey,
    'repokey-blake2': K.Blake2RepoKey,
    'keyfile-blake2': K.Blake2KeyfileKey,
}


class FakeLocation:
    def canonical_path(self):
        return '/nonexistent/oracle-repo'


class FakeRepository:
    def __init__(self, id):
        self.id = id
        self.id_str = id.hex()
        self._location = FakeLocation()


class FixedNonces:
    """Hands out exactly the IV the caller asked for (the real one reserves in the repo)."""

    def ensure_reservation(self, next_iv, blocks):
        return next_iv


def h(b):
    return bytes(b).hex()


def make_key(mode, mat):
    repo_id = bytes.fromhex(mat['repository_id'])
    key = CLASSES[mode](FakeRepository(repo_id))
    if mode != 'none':
        key.repository_id = repo_id
        key.enc_key = bytes.fromhex(mat['enc_key'])
        key.enc_hmac_key = bytes.fromhex(mat['enc_hmac_key'])
        key.id_key = bytes.fromhex(mat['id_key'])
        key.chunk_seed = mat['chunk_seed']
        key.tam_required = mat['tam_required']
        key.init_ciphers()
    key.compressor = Compressor('none')
    return key


def material_of(key):
    return {
        'repository_id': h(key.repository_id),
        'enc_key': h(key.enc_key),
        'enc_hmac_key': h(key.enc_hmac_key),
        'id_key': h(key.id_key),
        'chunk_seed': key.chunk_seed,
        'tam_required': bool(key.tam_required),
    }


def op_seal(req):
    key = make_key(req['mode'], req['material'])
    out = []
    for it in req['items']:
        data = bytes.fromhex(it['data'])
        if hasattr(key, 'cipher'):
            key.cipher.set_iv(it['iv'])
            key.nonce_manager = FixedNonces()
        out.append({'env': h(key.encrypt(data)), 'id': h(key.id_hash(data))})
    return out


def op_open(req):
    key = make_key(req['mode'], req['material'])
    out = []
    for it in req['items']:
        try:
            data = key.decrypt(bytes.fromhex(it['id']), bytes.fromhex(it['env']))
            out.append({'data': h(data)})
        except Exception as e:  # IntegrityError and friends: report, the test decides
            out.append({'error': '%s: %s' % (type(e).__name__, e)})
    return out


def op_blob_load(req):
    key = CLASSES[req['mode']](FakeRepository(bytes.fromhex(req['repository_id'])))
    ok = key._load(req['text'], K.Passphrase(req['passphrase']))
    return {'ok': bool(ok), 'material': material_of(key) if ok else None}


def op_keyfile_load(req):
    key = CLASSES[req['mode']](FakeRepository(bytes.fromhex(req['repository_id'])))
    try:
        target = key.sanity_check(req['path'], key.repository.id)
        ok = key.load(target, K.Passphrase(req['passphrase']))
    except Exception as e:
        return {'error': '%s: %s' % (type(e).__name__, e)}
    return {'ok': bool(ok), 'material': material_of(key) if ok else None}


def op_tam_seal(req):
    key = make_key(req['mode'], req['material'])
    data = key.pack_and_authenticate_metadata(dict(req['dict']), context=req['context'].encode())
    return {'data': h(data)}


def op_tam_verify(req):
    key = make_key(req['mode'], req['material'])
    data = bytes.fromhex(req['data'])
    try:
        if req['context'] == 'manifest':
            _, verified = key.unpack_and_verify_manifest(data)
        elif hasattr(key, 'unpack_and_verify_archive'):
            _, verified, _ = key.unpack_and_verify_archive(data)
        else:
            return {'unsupported': True}
    except Exception as e:
        return {'error': '%s: %s' % (type(e).__name__, e)}
    return {'verified': bool(verified)}


def op_keyname(req):
    from borg.helpers import Location
    out = []
    for s in req['locations']:
        loc = Location(s)
        out.append({
            'host': loc.host if loc.proto != 'file' else None,
            'path': loc.path,
            'name': os.path.basename(loc.to_key_filename()),
        })
    return out


def op_shlex(req):
    out = []
    for s in req['strings']:
        try:
            out.append({'words': shlex.split(s)})
        except ValueError as e:
            out.append({'error': str(e)})
    return out


def main():
    try:
        req = json.load(sys.stdin)
        res = globals()['op_' + sys.argv[1]](req)
        json.dump(res, sys.stdout)
    finally:
        shutil.rmtree(_base, ignore_errors=True)


if __name__ == '__main__':
    main()
