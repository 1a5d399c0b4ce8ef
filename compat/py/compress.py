"""Oracle for borg's compression (borg.compress), driven by tests/compat_compress.rs.

Reads a JSON request on stdin: {"dir": DIR, "ops": [OP, ...]} and prints a JSON list with
one result per op. File names in ops are relative to DIR.

  {"op": "compress", "spec": S, "in": F, "out": G}  -> {"ok", "head": hex of 2 bytes, "len"}
      G := CompressionSpec(S).compressor.compress(contents of F)
  {"op": "decompress", "in": F, "expect": G}        -> {"ok", "equal", "len"} / {"ok": false, "error"}
      Compressor('lz4').decompress auto-detects the codec from the header, as borg's readers do.
  {"op": "parse", "spec": S}                        -> {"ok", "canon"} / {"ok": false, "error"}
"""
import json
import os
import sys

from borg.compress import CompressionSpec, Compressor


def canon(spec):
    name = spec.name
    if name in ('none', 'lz4'):
        return name
    if name in ('zstd', 'lzma', 'zlib'):
        return '%s,%d' % (name, spec.level)
    if name == 'auto':
        return 'auto,' + canon(spec.inner)
    if name == 'obfuscate':
        return 'obfuscate,%d,%s' % (spec.level, canon(spec.inner))
    raise ValueError('unknown spec name %r' % name)


def read(d, name):
    with open(os.path.join(d, name), 'rb') as f:
        return f.read()


def main():
    req = json.load(sys.stdin)
    d = req['dir']
    decompressor = Compressor('lz4')
    results = []
    for op in req['ops']:
        kind = op['op']
        if kind == 'compress':
            data = read(d, op['in'])
            out = CompressionSpec(op['spec']).compressor.compress(data)
            out = bytes(out)
            with open(os.path.join(d, op['out']), 'wb') as f:
                f.write(out)
            results.append({'ok': True, 'head': out[:2].hex(), 'len': len(out)})
        elif kind == 'decompress':
            blob = read(d, op['in'])
            try:
                plain = bytes(decompressor.decompress(blob))
            except Exception as e:  # report, so the test names the failing blob
                results.append({'ok': False, 'error': '%s: %s' % (type(e).__name__, e)})
                continue
            results.append({'ok': True, 'equal': plain == read(d, op['expect']), 'len': len(plain)})
        elif kind == 'parse':
            try:
                spec = CompressionSpec(op['spec'])
                spec.compressor  # borg builds the compressor when it uses the spec
                results.append({'ok': True, 'canon': canon(spec)})
            except Exception as e:
                results.append({'ok': False, 'error': '%s: %s' % (type(e).__name__, e)})
        else:
            raise ValueError('unknown op %r' % kind)
    json.dump(results, sys.stdout)


if __name__ == '__main__':
    main()
