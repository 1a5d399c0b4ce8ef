//! Our prune decisions against borg's own `prune_within` / `prune_split` (1.2.4 and
//! 1.4.5) on many random archive time sets: clustered around DST changes (Berlin, New
//! York, Lord Howe's 30-minute shift, Chatham's :45 offset) and ISO-week year ends, at
//! second to year scales, with every rule combination. TZ is pinned per case on both
//! sides, since borg judges periods in local time.

mod common;

use chrono::{DateTime, TimeZone, Utc};
use common::{run_py_json, Borg};
use proxborg::archive::prune::{decide, localtime, Candidate, KeepRules, Rule, Verdict};
use serde_json::json;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const ZONES: [&str; 7] = [
    "UTC",
    "Europe/Berlin",
    "America/New_York",
    "Australia/Lord_Howe",
    "Pacific/Chatham",
    "Asia/Kolkata",
    "America/St_Johns",
];

/// Instants where local calendars do odd things.
fn anchors() -> Vec<DateTime<Utc>> {
    let t = |y, mo, d, h, mi| Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).unwrap();
    vec![
        t(2024, 3, 31, 1, 0),   // Berlin spring forward
        t(2024, 10, 27, 1, 0),  // Berlin fall back
        t(2024, 3, 10, 7, 0),   // New York spring forward
        t(2024, 11, 3, 6, 0),   // New York fall back
        t(2024, 4, 6, 15, 0),   // Lord Howe, back 30 min
        t(2024, 10, 5, 15, 30), // Lord Howe, forward 30 min
        t(2024, 4, 6, 14, 0),   // Chatham
        t(2020, 12, 31, 23, 0), // 53-week ISO year
        t(2026, 1, 1, 0, 0),
        t(2021, 1, 3, 12, 0),
        t(2030, 6, 30, 12, 0),
    ]
}

struct Case {
    tz: &'static str,
    now: DateTime<Utc>,
    archives: Vec<Candidate>,
    rules: KeepRules,
}

fn make_cases(seed: u64, n: usize, quarterly: bool) -> Vec<Case> {
    let mut rng = Rng(seed);
    let anchors = anchors();
    let spreads: [i64; 6] = [
        90,
        3_600,
        86_400,
        7 * 86_400,
        120 * 86_400,
        4 * 365 * 86_400,
    ];
    let rules: Vec<Rule> = Rule::ALL
        .into_iter()
        .filter(|r| quarterly || !matches!(r, Rule::Quarterly13Weekly | Rule::Quarterly3Monthly))
        .collect();
    (0..n)
        .map(|i| {
            let tz = ZONES[i % ZONES.len()];
            let center = anchors[rng.below(anchors.len() as u64) as usize];
            let spread = spreads[rng.below(spreads.len() as u64) as usize];
            let count = 1 + rng.below(120) as usize;
            let mut used = std::collections::HashSet::new();
            let mut archives = Vec::new();
            for k in 0..count {
                // microsecond times, unique so the order of ties never matters
                let us = loop {
                    let off = rng.below(2 * spread as u64 * 1_000_000) as i64 - spread * 1_000_000;
                    let us = center.timestamp_micros() + off;
                    if used.insert(us) {
                        break us;
                    }
                };
                archives.push(Candidate {
                    name: format!("a{k:04}"),
                    id: [0; 32],
                    ts: DateTime::<Utc>::from_timestamp_micros(us).unwrap(),
                });
            }
            for (k, a) in archives.iter_mut().enumerate() {
                a.id[..8].copy_from_slice(&(k as u64).to_le_bytes());
            }
            let mut kr = KeepRules::default();
            for r in &rules {
                if rng.below(3) == 0 {
                    let v = match rng.below(6) {
                        0 => -1,
                        1 => 0,
                        _ => 1 + rng.below(12) as i64,
                    };
                    kr.set(*r, v);
                }
            }
            if rng.below(4) == 0 {
                kr.within_hours = Some(1 + rng.below(24 * 60));
            }
            if kr.counts.is_empty() && kr.within_hours.is_none() {
                kr.set(
                    rules[rng.below(rules.len() as u64) as usize],
                    1 + rng.below(5) as i64,
                );
            }
            let newest = archives.iter().map(|a| a.ts).max().unwrap();
            let now = newest + chrono::Duration::seconds(rng.below(spread as u64 + 1) as i64);
            Case {
                tz,
                now,
                archives,
                rules: kr,
            }
        })
        .collect()
}

fn ours(c: &Case) -> serde_json::Map<String, serde_json::Value> {
    std::env::set_var("TZ", c.tz);
    decide(&c.archives, &c.rules, c.now, &localtime)
        .into_iter()
        .filter_map(|d| match d.verdict {
            Verdict::Keep { rule, num } => Some((d.archive.name, json!(format!("{rule}#{num}")))),
            Verdict::KeepCheckpoint => Some((d.archive.name, json!("checkpoint"))),
            Verdict::Prune => None,
        })
        .collect()
}

fn compare(borg: Borg, cases: &[Case]) {
    let input = json!({
        "cases": cases.iter().map(|c| json!({
            "tz": c.tz,
            "now_us": c.now.timestamp_micros(),
            "archives": c.archives.iter().map(|a| json!([a.name, a.ts.timestamp_micros()])).collect::<Vec<_>>(),
            "within": c.rules.within_hours,
            "rules": c.rules.counts.iter().map(|(r, n)| json!([r.name(), n])).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    });
    let out = run_py_json(borg, "prune.py", &[], input.to_string().as_bytes());
    let results = out["results"].as_array().expect("results");
    assert_eq!(results.len(), cases.len());
    let mut kept_total = 0;
    for (i, (c, want)) in cases.iter().zip(results).enumerate() {
        let got = ours(c);
        let want = want.as_object().expect("object");
        kept_total += want.len();
        assert_eq!(
            &got,
            want,
            "{} case {i} (TZ={}, rules {:?}, now {}) differs",
            borg.name(),
            c.tz,
            c.rules,
            c.now
        );
    }
    // the sets are neither trivial nor all-kept
    let all: usize = cases.iter().map(|c| c.archives.len()).sum();
    assert!(
        kept_total > all / 20 && kept_total < all * 9 / 10,
        "kept {kept_total} of {all}"
    );
}

#[test]
fn decisions_match_borg_prune_rules() {
    compare(Borg::V14, &make_cases(0x5eed_0001, 400, true));
    compare(Borg::V12, &make_cases(0x5eed_0002, 300, false));
}
