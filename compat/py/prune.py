"""borg's own prune rules (helpers/misc.py: prune_within, prune_split, PRUNING_PATTERNS)
applied the way do_prune applies them, as an oracle for our decisions.

Reads JSON on stdin: {"cases": [{"tz": "Europe/Berlin", "now_us": 1700000000000000,
"archives": [[name, epoch_us], ...] (manifest order), "within": hours|null,
"rules": [["daily", 3], ...]}]}. Prints {"results": [{name: "rule#num"}, ...]} with
only the kept archives (everything else is pruned).
"""
import json
import os
import sys
import time
from collections import namedtuple
from datetime import datetime, timedelta, timezone

import borg.helpers.misc as misc
from borg.helpers.misc import PRUNING_PATTERNS, prune_split, prune_within

ArchiveInfo = namedtuple('ArchiveInfo', 'name id ts')
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def run_case(case):
    os.environ['TZ'] = case['tz']
    time.tzset()
    fixed = EPOCH + timedelta(microseconds=case['now_us'])

    class FixedNow(datetime):
        @classmethod
        def now(cls, tz=None):
            return fixed

    misc.datetime = FixedNow
    archives = [ArchiveInfo(n, n.encode(), EPOCH + timedelta(microseconds=us)) for n, us in case['archives']]
    # do_prune: manifest.archives.list(sort_by=['ts'], reverse=True)
    archives.sort(key=lambda a: a.ts)
    archives.reverse()
    kept_because = {}
    if case['within']:
        prune_within(archives, case['within'], kept_because)
    rules = dict(case['rules'])
    for rule in PRUNING_PATTERNS.keys():
        if rule in rules:
            prune_split(archives, rule, rules[rule], kept_because)
    return {k.decode(): '%s#%d' % v for k, v in kept_because.items()}


def main():
    data = json.load(sys.stdin)
    print(json.dumps({'results': [run_case(c) for c in data['cases']],
                      'rules': list(PRUNING_PATTERNS.keys())}))


if __name__ == '__main__':
    main()
