//! Include/exclude patterns decide exactly as borg's own `PatternMatcher` (1.2.4 and 1.4.5)
//! on a large generated set of pattern lists and paths: every style, `*`, `**`, `?`, sets,
//! trailing/leading slashes, `.`/`..` components, `+`/`-`/`!`, first-match-wins, `pf:`
//! precedence, `R`/`P` lines, pattern files, include paths and rejected inputs.

mod common;

use common::{run_py_json, Borg};
use proxborg::archive::patterns::PatternMatcher;
use serde_json::{json, Value};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[self.below(xs.len())]
    }
    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
}

const COMPONENTS: &[&str] = &[
    "a", "b", "ab", "abc", "a.txt", "b.log", "foo", "bar", "x y", "é", ".hid", "a-b", "[x]", "*",
    "?", "!", "^", "]", "\\", "tmp", "cache", "&", "A",
];

const GLOB_SEGMENTS: &[&str] = &[
    "a", "b", "foo", "tmp", "*", "**", "?", "a*", "*.txt", "[ab]*", "[!a]*", "[a-c]", "[]a]",
    "[^a]", "[b-a]", "[a-]", "a?b", "?b", "a?a", "*?b", "a*b", "a[/]b", "a[!x]b", "[z-a-c]", "[",
    "[!]", "*b", "?.log", "x[ ]y", "[\\]", "[!]]", "[&&]", "[a-c-e]*", ".", "..", "", "[[]x]", "é",
    "[é-ê]", "\\*", "**b", "a**",
];

const REGEXES: &[&str] = &[
    "^a", "b$", "\\.txt$", "a/.*b", "(?i)FOO", "x\\Z", "^[^/]+$", "é", "a|b/c", "(", "[", "\\d",
    "^/a", "tmp/", "^a/b", "ab?c", "[.]log", "^$",
];

fn gen_path(r: &mut Rng) -> String {
    let depth = 1 + r.below(4);
    let mut parts = Vec::new();
    for _ in 0..depth {
        parts.push(r.pick(COMPONENTS));
    }
    let mut p = parts.join("/");
    if r.chance(15) {
        p.insert(0, '/');
    }
    p
}

fn gen_glob(r: &mut Rng) -> String {
    let n = 1 + r.below(3);
    let mut segs = Vec::new();
    for _ in 0..n {
        segs.push(r.pick(GLOB_SEGMENTS).to_string());
    }
    let mut p = segs.join(if r.chance(10) { "//" } else { "/" });
    if r.chance(20) {
        p.insert(0, '/');
    }
    if r.chance(10) {
        p.insert_str(0, "./");
    }
    if r.chance(20) {
        p.push('/');
    }
    p
}

fn gen_pattern(r: &mut Rng) -> String {
    match r.below(20) {
        0..=5 => gen_glob(r),
        6..=8 => format!("fm:{}", gen_glob(r)),
        9..=11 => format!("sh:{}", gen_glob(r)),
        12..=13 => format!("pp:{}", gen_glob(r)),
        14..=15 => format!("pf:{}", gen_path(r)),
        16..=17 => format!("re:{}", r.pick(REGEXES)),
        18 => format!(
            "{}:{}",
            r.pick(&["zz", "s", "é1", "PF", "sh "]),
            gen_glob(r)
        ),
        _ => gen_path(r),
    }
}

fn gen_line(r: &mut Rng) -> String {
    match r.below(30) {
        0 => format!("R {}", gen_path(r)),
        1 => format!("P {}", r.pick(&["sh", "fm", "re", "pp", "pf", "xx"])),
        2 => r.pick(&["", "+", "x foo", "-   ", "!"]).to_string(),
        3 => format!("p{}", r.pick(&["fm", " sh", "re"])),
        _ => {
            let sep = r.pick(&[" ", "", "  ", "\t"]);
            format!("{}{sep}{}", r.pick(&["+", "-", "!"]), gen_pattern(r))
        }
    }
}

fn gen_file(r: &mut Rng, line: fn(&mut Rng) -> String) -> String {
    let mut text = String::new();
    for _ in 0..1 + r.below(5) {
        match r.below(10) {
            0 => text.push_str("# a comment"),
            1 => text.push_str("   "),
            2 => text.push_str(&format!("  {}  ", line(r))),
            _ => text.push_str(&line(r)),
        }
        text.push_str(r.pick(&["\n", "\n", "\r\n", "\r"]));
    }
    text
}

fn gen_case(r: &mut Rng) -> Value {
    let mut ops = Vec::new();
    for _ in 0..1 + r.below(5) {
        let op = match r.below(12) {
            0..=3 => json!(["exclude", gen_pattern(r)]),
            4..=8 => json!(["pattern", gen_line(r)]),
            9 => json!(["exclude_from", gen_file(r, gen_pattern)]),
            10 => json!(["patterns_from", gen_file(r, gen_line)]),
            _ => {
                let n = r.below(3);
                let paths: Vec<String> = (0..n).map(|_| gen_pattern_or_path(r)).collect();
                json!(["include_paths", paths])
            }
        };
        ops.push(op);
    }
    let paths: Vec<String> = (0..25).map(|_| gen_path(r)).collect();
    json!({"fallback": r.chance(70), "ops": ops, "paths": paths})
}

fn gen_pattern_or_path(r: &mut Rng) -> String {
    if r.chance(50) {
        gen_path(r)
    } else {
        gen_pattern(r)
    }
}

/// Hand-picked cases for semantics the generator may hit only rarely.
fn fixed_cases() -> Vec<Value> {
    let paths = json!([
        "a",
        "a/b",
        "a/b/c",
        "ab",
        "x/a",
        "x/a/b",
        "/a/b",
        "a/b.txt",
        "tmp",
        "tmp/x",
        "home/u/.cache/x",
        "home/u/.cache",
        "var/cache/apt",
        "x y/z",
        "é/ü"
    ]);
    let lists: &[&[&str]] = &[
        &["- a"],
        &["- a/"],
        &["! a/"],
        &["+ a/b", "- a"],
        &["- a", "+ a/b"],
        &["+ pf:a", "- *"],
        &["- *", "+ pf:a"],
        &["- pf:a/b", "+ pf:a/b"],
        &["- sh:**/.cache", "+ sh:home/*"],
        &["- fm:*/.cache", "- re:^var/", "+ pp:tmp"],
        &["- sh:*", "+ sh:a"],
        &["- fm:*"],
        &["- sh:", "- fm:"],
        &["+ re:", "- re:b"],
        &["! pp:/"],
        &["- pp:."],
        &["- pf:."],
        &["- x y"],
        &["- é"],
        &["R /root", "P fm", "- *"],
    ];
    let mut cases = Vec::new();
    for l in lists {
        let ops: Vec<Value> = l.iter().map(|x| json!(["pattern", x])).collect();
        cases.push(json!({"fallback": true, "ops": ops, "paths": paths}));
        let ops: Vec<Value> = l
            .iter()
            .map(|x| json!(["exclude", x.get(2..).unwrap_or("")]))
            .collect();
        cases.push(json!({"fallback": false, "ops": ops, "paths": paths}));
    }
    cases.push(json!({"fallback": true, "ops": [["include_paths", ["a/b", "pf:tmp", "/x/"]]], "paths": paths}));
    cases.push(json!({"fallback": true, "ops": [["patterns_from", "P fm\n- *.txt\nP re\n- ^tmp\n+ \\.cache$\n"], ["pattern", "- *"]], "paths": paths}));
    cases.push(json!({"fallback": true, "ops": [["pattern", "P fm"], ["pattern", "- a*"]], "paths": paths}));
    cases
}

/// Runs one case through our matcher, in the oracle's output format.
fn ours(case: &Value) -> Value {
    let mut m = PatternMatcher::new(case["fallback"].as_bool().unwrap());
    let mut roots = Vec::new();
    for op in case["ops"].as_array().unwrap() {
        let kind = op[0].as_str().unwrap();
        let r = match kind {
            "exclude" => m.add_exclude(op[1].as_str().unwrap()),
            "exclude_from" => m.add_exclude_from(op[1].as_str().unwrap()),
            "pattern" => m.add_pattern_line(op[1].as_str().unwrap()).map(|root| {
                roots.extend(root.map(|p| p.to_string_lossy().into_owned()));
            }),
            "patterns_from" => m.add_patterns_from(op[1].as_str().unwrap()).map(|rs| {
                roots.extend(rs.iter().map(|p| p.to_string_lossy().into_owned()));
            }),
            "include_paths" => {
                let ps: Vec<&str> = op[1]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_str().unwrap())
                    .collect();
                m.add_include_paths(&ps)
            }
            _ => panic!("unknown op {kind}"),
        };
        if let Err(e) = r {
            return json!({"error": e.to_string()});
        }
    }
    let results: Vec<Value> = case["paths"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let d = m.decide(p.as_str().unwrap());
            json!([d.included, d.recurse_dir])
        })
        .collect();
    json!({"roots": roots, "results": results})
}

#[test]
fn patterns_decide_like_borg() {
    let mut r = Rng(0x5eed_1234_abcd_0001);
    let mut cases = fixed_cases();
    for _ in 0..1000 {
        cases.push(gen_case(&mut r));
    }
    let input = serde_json::to_vec(&cases).unwrap();
    let mine: Vec<Value> = cases.iter().map(ours).collect();
    let n_errors = mine.iter().filter(|v| v.get("error").is_some()).count();
    let decisions: Vec<&Value> = mine
        .iter()
        .filter_map(|v| v.get("results"))
        .flat_map(|v| v.as_array().unwrap())
        .collect();
    let n_paths = decisions.len();
    let n_excluded = decisions.iter().filter(|d| d[0] == false).count();
    let n_norecurse = decisions.iter().filter(|d| d[1] == false).count();
    for borg in Borg::ALL {
        let theirs = run_py_json(borg, "patterns.py", &[], &input);
        let theirs = theirs.as_array().unwrap();
        assert_eq!(theirs.len(), cases.len());
        let mut bad = Vec::new();
        for (i, (a, b)) in mine.iter().zip(theirs).enumerate() {
            let same = match (a.get("error"), b.get("error")) {
                (Some(_), Some(_)) => true,
                (None, None) => a == b,
                _ => false,
            };
            if !same {
                bad.push(format!(
                    "case {i}: {}\n  ours:  {a}\n  borg:  {b}",
                    cases[i]
                ));
            }
        }
        assert!(
            bad.is_empty(),
            "{}: {} of {} cases differ:\n{}",
            borg.name(),
            bad.len(),
            cases.len(),
            bad.iter().take(8).cloned().collect::<Vec<_>>().join("\n")
        );
        eprintln!(
            "{}: {} cases ({} rejected by both, {} path decisions: {} excluded, {} not descended) agree",
            borg.name(),
            cases.len(),
            n_errors,
            n_paths,
            n_excluded,
            n_norecurse
        );
    }
}
