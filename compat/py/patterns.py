"""Oracle for include/exclude patterns: borg's own PatternMatcher decides.

stdin: JSON list of cases {"fallback": bool, "ops": [[kind, arg], ...], "paths": [str]}
  kind: "exclude" (--exclude), "exclude_from" (--exclude-from file text),
        "pattern" (--pattern), "patterns_from" (--patterns-from file text),
        "include_paths" (list of paths, as `borg extract ARCHIVE PATH...`).
stdout: JSON list, per case {"error": str} or {"roots": [str], "results": [[included, recurse_dir]]}.
Files are read back through open() like borg does (universal newlines).
"""
import json
import os
import sys
import tempfile
import warnings

from borg.patterns import (PatternMatcher, ShellPattern, load_exclude_file, load_pattern_file,
                           parse_exclude_pattern, parse_patternfile_line)

warnings.simplefilter('ignore')  # re's FutureWarnings about set syntax


def run_case(case, tmpdir):
    matcher = PatternMatcher(fallback=case['fallback'])
    roots = []
    for kind, arg in case['ops']:
        patterns = []
        if kind == 'exclude':
            patterns.append(parse_exclude_pattern(arg))
        elif kind == 'pattern':
            parse_patternfile_line(arg, roots, patterns, ShellPattern)
        elif kind in ('exclude_from', 'patterns_from'):
            fn = os.path.join(tmpdir, 'patterns')
            with open(fn, 'w', newline='') as f:
                f.write(arg)
            with open(fn) as f:
                if kind == 'exclude_from':
                    load_exclude_file(f, patterns)
                else:
                    load_pattern_file(f, roots, patterns)
        elif kind == 'include_paths':
            matcher.add_includepaths(arg)
        else:
            raise SystemExit('unknown op %r' % kind)
        matcher.add_inclexcl(patterns)
    results = []
    for path in case['paths']:
        value = matcher.match(path)
        results.append([value, matcher.recurse_dir])
    return {'roots': roots, 'results': results}


def main():
    cases = json.load(sys.stdin)
    out = []
    with tempfile.TemporaryDirectory() as tmpdir:
        for case in cases:
            try:
                out.append(run_case(case, tmpdir))
            except Exception as e:  # borg rejects the pattern: compare only that it does
                out.append({'error': '%s: %s' % (type(e).__name__, e)})
    json.dump(out, sys.stdout)


main()
