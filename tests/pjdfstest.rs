//! pjdfstest, the POSIX file system test suite (its Rust rewrite, crate `pjdfstest` 0.2.2), run
//! through a real `supamount` mount.
//!
//! The suite runs once per backend (`pjdfstest::local` always, `pjdfstest::supabase` when the
//! Supabase variants are switched on; see tests/common/mod.rs), in a directory inside the mount,
//! with the settings in tests/pjdfstest/pjdfstest.toml. Its output is compared with
//! tests/pjdfstest/excluded.txt, the tests supamount is known not to pass, grouped by reason:
//!
//! * a failing test that is not in the list fails this test (names and pjdfstest's messages
//!   are printed);
//! * a listed test that passes is printed as a note so that the list can shrink; it fails
//!   this test only with `SUPAMOUNT_PJDFSTEST_STRICT=1` (see [`report`] for why);
//! * a listed name that the run does not have (a typo, another pjdfstest version) fails it.
//!
//! The binary: `$PJDFSTEST`, else `pjdfstest` on PATH (`cargo install pjdfstest --version
//! 0.2.2 --locked`). The suite needs root (it switches to other users to test permissions).
//! Without the binary or without root the test says so and passes, unless
//! `SUPAMOUNT_TEST_REQUIRE_PJDFSTEST=1` (CI), which turns that into a failure.
//!
//! Mount options: `--attr-ttl 0`, so that every stat asks the server and no result depends on
//! what the kernel still has cached from a moment ago; `--allow-other`, so that the users the
//! suite switches to reach the mount at all (FUSE refuses other users otherwise, and this is
//! about the file system's answers, not the kernel's access control).

#[macro_use]
mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::{self, File};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use common::*;

e2e_tests! {
    pjdfstest,
}

/// The version the exclusion list was written against.
const SUITE_VERSION: &str = "0.2.2";
const CONFIG: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/pjdfstest/pjdfstest.toml"
);
const EXCLUDED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/pjdfstest/excluded.txt");
/// Bound on the whole pjdfstest run. It takes about 2 min on the local server (a third of it
/// one test that uploads a 2 GiB sparse file) and 5 min on the lab Supabase server (half of it
/// retries of the 500s that over-long keys get), more on a busy machine.
const RUN_TIMEOUT: Duration = Duration::from_secs(25 * 60);
/// Bound on `pjdfstest --version`.
const VERSION_TIMEOUT: Duration = Duration::from_secs(30);

fn pjdfstest(b: &Backend) {
    let Some(bin) = find_pjdfstest() else {
        return;
    };
    let version = suite_version(&bin);
    let exclusions = Exclusions::load(Path::new(EXCLUDED));

    // The users the suite switches to must be able to walk down to the mount point; the temp
    // dir is created 0700.
    fs::set_permissions(b.tmp(), fs::Permissions::from_mode(0o711)).unwrap();
    let secondary = b.tmp().join("secondary-fs");
    fs::create_dir(&secondary).unwrap();

    let m = b.mount_with(MountOpts {
        attr_ttl: Some(0),
        extra_args: vec!["--allow-other".into()],
        watchdog: Some(RUN_TIMEOUT + Duration::from_secs(120)),
        ..Default::default()
    });
    let suite_dir = m.p("pjdfstest");
    fs::create_dir(&suite_dir).unwrap();

    let run = run_suite(&bin, &suite_dir, &secondary, b.tmp());
    // A daemon that died half-way would show as hundreds of failures; say so plainly instead.
    if let Err(e) = fs::read_dir(&suite_dir) {
        panic!(
            "the mount no longer answers after the pjdfstest run ({e}); did supamount crash?\n\
             pjdfstest's output:\n{}",
            run.text()
        );
    }
    let parsed = parse_output(&run);
    report(b, &version, &run, &parsed, &exclusions);
    drop(m);
}

// ---------------------------------------------------------------------------------------------
// Finding and running the suite

fn required() -> bool {
    std::env::var("SUPAMOUNT_TEST_REQUIRE_PJDFSTEST").as_deref() == Ok("1")
}

/// Fails when the suite is required, otherwise explains why it does not run.
fn cannot_run(why: &str) {
    if required() {
        panic!("SUPAMOUNT_TEST_REQUIRE_PJDFSTEST=1 but {why}");
    }
    eprintln!(
        "SKIPPED: pjdfstest does not run: {why}. Install it with `cargo install pjdfstest \
         --version {SUITE_VERSION} --locked` and run the tests as root (set \
         SUPAMOUNT_TEST_REQUIRE_PJDFSTEST=1 to make this a failure)."
    );
}

/// `$PJDFSTEST`, else `pjdfstest` on PATH; `None` (after [`cannot_run`]) if there is none or
/// if we are not root.
fn find_pjdfstest() -> Option<PathBuf> {
    let bin = match std::env::var_os("PJDFSTEST").filter(|v| !v.is_empty()) {
        Some(p) => {
            let p = PathBuf::from(p);
            // An explicit setting that points nowhere is a mistake, not a reason to skip.
            assert!(
                is_executable(&p),
                "PJDFSTEST={} is not an executable file",
                p.display()
            );
            Some(p)
        }
        None => std::env::var_os("PATH").and_then(|path| {
            std::env::split_paths(&path)
                .map(|d| d.join("pjdfstest"))
                .find(|p| is_executable(p))
        }),
    };
    let Some(bin) = bin else {
        cannot_run("no pjdfstest binary: PJDFSTEST is not set and there is none on PATH");
        return None;
    };
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        cannot_run("the suite needs root (it switches users for its permission tests)");
        return None;
    }
    Some(bin)
}

fn is_executable(p: &Path) -> bool {
    fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// The version pjdfstest reports; a warning if it is not the one the list was made for.
fn suite_version(bin: &Path) -> String {
    let out = run_timeout(Command::new(bin).arg("--version"), VERSION_TIMEOUT);
    assert!(
        out.ok(),
        "`{} --version` failed ({}): {}",
        bin.display(),
        out.status,
        out.stderr
    );
    let version = out.stdout.trim().to_string();
    if version != format!("pjdfstest {SUITE_VERSION}") {
        eprintln!(
            "WARNING: {} is `{version}`; tests/pjdfstest/excluded.txt was written for \
             pjdfstest {SUITE_VERSION}: names and results may differ",
            bin.display()
        );
    }
    version
}

/// What the pjdfstest process printed, line by line with the time each line came.
struct Run {
    lines: Vec<(Duration, String)>,
    stderr: String,
    status: ExitStatus,
    elapsed: Duration,
}

impl Run {
    fn text(&self) -> String {
        let mut s: String = self.lines.iter().map(|(_, l)| format!("{l}\n")).collect();
        if !self.stderr.trim().is_empty() {
            s.push_str(&format!("--- stderr ---\n{}", self.stderr));
        }
        s
    }
}

/// Runs the whole suite on `suite_dir`, bounded by [`RUN_TIMEOUT`]. Its output is also written
/// to `log_dir/pjdfstest.out` as it comes.
fn run_suite(bin: &Path, suite_dir: &Path, secondary: &Path, log_dir: &Path) -> Run {
    let mut cmd = Command::new(bin);
    cmd.arg("-c")
        .arg(CONFIG)
        .arg("-p")
        .arg(suite_dir)
        .arg("-s")
        .arg(secondary)
        .current_dir(log_dir)
        .env("NO_COLOR", "1")
        .env_remove("CLICOLOR_FORCE")
        // pjdfstest prints a backtrace under each failure when these ask for one.
        .env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LIB_BACKTRACE")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let desc = format!("{cmd:?}");
    eprintln!("running {desc}");
    let start = Instant::now();
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {desc}: {e}"));
    let stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let mut log = File::create(log_dir.join("pjdfstest.out")).unwrap();
    let reader = thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let _ = writeln!(log, "{line}");
            if tx.send((start.elapsed(), line)).is_err() {
                break;
            }
        }
    });
    let err_reader = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = stderr.read_to_end(&mut v);
        String::from_utf8_lossy(&v).into_owned()
    });
    let status = wait_timeout(&mut child, RUN_TIMEOUT);
    let timed_out = status.is_none();
    let status = status.unwrap_or_else(|| kill_and_reap(&mut child));
    let elapsed = start.elapsed();
    let _ = reader.join();
    let lines: Vec<_> = rx.try_iter().collect();
    let run = Run {
        lines,
        stderr: err_reader.join().unwrap_or_default(),
        status,
        elapsed,
    };
    if timed_out {
        panic!(
            "pjdfstest did not finish within {RUN_TIMEOUT:?} and was killed; the test after the \
             last one printed hung (a FUSE request that never got an answer?). Output so far:\n{}",
            run.text()
        );
    }
    run
}

// ---------------------------------------------------------------------------------------------
// pjdfstest's output

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Pass,
    Fail,
    Skip,
}

#[derive(Debug)]
struct Case {
    name: String,
    outcome: Outcome,
    /// pjdfstest's lines under the result: the failure's message, or why it was skipped.
    message: Vec<String>,
    /// Time since the previous result line (about the time the test took).
    took: Duration,
}

struct Parsed {
    cases: Vec<Case>,
}

/// Result words pjdfstest prints after a test's name. The last two appear only with
/// `expected_failures` in the configuration (ours has none); they count as what happened.
const RESULT_WORDS: &[(&str, Outcome)] = &[
    ("PASSED UNEXPECTEDLY", Outcome::Pass),
    ("failed as expected", Outcome::Fail),
    ("FAILED", Outcome::Fail),
    ("skipped", Outcome::Skip),
    ("ok", Outcome::Pass),
];

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// `NAME   WORD` (a test's result line), e.g. `chmod::change_perm::regular    FAILED`.
fn result_line(line: &str) -> Option<(String, Outcome)> {
    if line.starts_with(char::is_whitespace) {
        return None;
    }
    let line = line.trim_end();
    RESULT_WORDS.iter().find_map(|&(word, outcome)| {
        let name = line.strip_suffix(word)?;
        if !name.ends_with(char::is_whitespace) {
            return None;
        }
        let name = name.trim_end();
        (name.contains("::") && !name.contains(char::is_whitespace))
            .then(|| (name.to_string(), outcome))
    })
}

/// `Summary: 1 failed, 2 skipped, 3 passed, 0 expected failures, 6 total` as label → count.
fn summary_line(line: &str) -> Option<HashMap<String, usize>> {
    let rest = line.strip_prefix("Summary:")?;
    let mut counts = HashMap::new();
    for part in rest.split(',') {
        let part = part.trim();
        let (n, label) = part.split_once(' ')?;
        counts.insert(label.trim().to_string(), n.parse().ok()?);
    }
    Some(counts)
}

fn parse_output(run: &Run) -> Parsed {
    let mut cases: Vec<Case> = Vec::new();
    let mut summary = None;
    let mut last = Duration::ZERO;
    for (at, raw) in &run.lines {
        let line = strip_ansi(raw);
        if let Some((name, outcome)) = result_line(&line) {
            cases.push(Case {
                name,
                outcome,
                message: Vec::new(),
                took: at.saturating_sub(last),
            });
            last = *at;
        } else if let Some(s) = summary_line(&line) {
            summary = Some(s);
        } else if !line.trim().is_empty() && !line.starts_with("Error: Some tests have failed") {
            if let Some(c) = cases.last_mut() {
                c.message.push(line.trim().to_string());
            }
        }
    }
    let fail = |why: &str| -> ! {
        panic!(
            "cannot read pjdfstest's output ({why}; exit status {}). Its output:\n{}",
            run.status,
            run.text()
        )
    };
    if run.status.code().is_none() {
        fail("it was killed by a signal");
    }
    let Some(summary) = summary else {
        fail("no `Summary:` line: it stopped early or could not start");
    };
    let count = |o: Outcome| cases.iter().filter(|c| c.outcome == o).count();
    let (pass, fail_n, skip) = (
        count(Outcome::Pass),
        count(Outcome::Fail),
        count(Outcome::Skip),
    );
    let [total, skipped, passed, failed, expected] =
        ["total", "skipped", "passed", "failed", "expected failures"].map(|k| {
            summary
                .get(k)
                .copied()
                .unwrap_or_else(|| fail(&format!("no `{k}` in the summary")))
        });
    if total != cases.len() || skipped != skip || passed + failed + expected != pass + fail_n {
        fail(&format!(
            "its summary {summary:?} does not match the {} results read \
             ({pass} passed, {fail_n} failed, {skip} skipped)",
            cases.len()
        ));
    }
    let mut seen = BTreeSet::new();
    for c in &cases {
        if !seen.insert(c.name.as_str()) {
            fail(&format!("test `{}` printed twice", c.name));
        }
    }
    if cases.is_empty() {
        fail("it ran no tests");
    }
    Parsed { cases }
}

// ---------------------------------------------------------------------------------------------
// The exclusion list

struct Exclusion {
    group: String,
    /// Excluded on this backend only (`@local` / `@supabase`).
    only: Option<Kind>,
}

struct Exclusions {
    tests: BTreeMap<String, Exclusion>,
    /// Groups in file order, with their reason.
    groups: Vec<(String, String)>,
}

impl Exclusions {
    fn load(path: &Path) -> Exclusions {
        let text =
            fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        let mut tests = BTreeMap::new();
        let mut groups: Vec<(String, String)> = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let at = || format!("{}:{}", path.display(), i + 1);
            let line = raw.split_once('#').map_or(raw, |(l, _)| l).trim();
            if line.is_empty() {
                continue;
            }
            if let Some(rest) = line.strip_prefix('[') {
                let (group, reason) = rest
                    .split_once(']')
                    .unwrap_or_else(|| panic!("{}: `[group] reason` expected", at()));
                let (group, reason) = (group.trim(), reason.trim());
                assert!(
                    !group.is_empty() && !reason.is_empty(),
                    "{}: a group needs a name and a reason: `[group] reason`",
                    at()
                );
                assert!(
                    groups.iter().all(|(g, _)| g != group),
                    "{}: group [{group}] appears twice",
                    at()
                );
                groups.push((group.to_string(), reason.to_string()));
                continue;
            }
            let Some((group, _)) = groups.last() else {
                panic!("{}: test name before the first `[group] reason` line", at());
            };
            let mut words = line.split_whitespace();
            let name = words.next().unwrap().to_string();
            let only = match words.next() {
                None => None,
                Some("@local") => Some(Kind::Local),
                Some("@supabase") => Some(Kind::Supabase),
                Some(other) => panic!("{}: `{other}`: expected @local or @supabase", at()),
            };
            assert!(words.next().is_none(), "{}: one test per line", at());
            assert!(name.contains("::"), "{}: `{name}` is not a test name", at());
            let old = tests.insert(
                name.clone(),
                Exclusion {
                    group: group.clone(),
                    only,
                },
            );
            assert!(
                old.is_none(),
                "{}: `{name}` is listed twice (each test has one reason)",
                at()
            );
        }
        Exclusions { tests, groups }
    }

    /// The group that excuses `name` failing on `kind`, if any.
    fn excuse(&self, name: &str, kind: Kind) -> Option<&str> {
        self.tests
            .get(name)
            .filter(|e| e.only.is_none_or(|k| k == kind))
            .map(|e| e.group.as_str())
    }
}

// ---------------------------------------------------------------------------------------------
// Comparing and reporting

/// Prints the counts and fails on tests that fail without being excluded and on stale names.
///
/// An excluded test that passes is a note, not a failure, by default: several listed tests
/// check only that something did *not* change or that a call fails, and such a test can pass
/// by accident of timing (a whole-second Last-Modified) or backend; failing on it would make
/// this test flaky. It also lets work that removes a reason (symlinks, kept modes) land
/// before the list is trimmed, without a red CI in between. `SUPAMOUNT_PJDFSTEST_STRICT=1`
/// makes such passes fail, for whoever trims the list.
fn report(b: &Backend, version: &str, run: &Run, parsed: &Parsed, ex: &Exclusions) {
    let kind = b.kind;
    let mut excluded: BTreeMap<&str, usize> = BTreeMap::new();
    let mut new_failures = Vec::new();
    let mut now_passing = Vec::new();
    let mut skipped: BTreeMap<String, usize> = BTreeMap::new();
    let (mut pass, mut fail) = (0, 0);
    for c in &parsed.cases {
        let excuse = ex.excuse(&c.name, kind);
        match (c.outcome, excuse) {
            (Outcome::Pass, None) => pass += 1,
            (Outcome::Pass, Some(group)) => {
                pass += 1;
                now_passing.push(format!("{} [{group}]", c.name));
            }
            (Outcome::Fail, Some(group)) => {
                fail += 1;
                *excluded.entry(group).or_default() += 1;
            }
            (Outcome::Fail, None) => {
                fail += 1;
                new_failures.push(c);
            }
            (Outcome::Skip, _) => {
                let why = c.message.first().map_or("", |s| s.trim());
                *skipped.entry(why.to_string()).or_default() += 1;
            }
        }
    }
    let run_names: BTreeSet<&str> = parsed.cases.iter().map(|c| c.name.as_str()).collect();
    let stale: Vec<&str> = ex
        .tests
        .keys()
        .map(String::as_str)
        .filter(|n| !run_names.contains(n))
        .collect();
    let n_excluded: usize = excluded.values().sum();
    let n_skipped: usize = skipped.values().sum();

    let mut out = String::new();
    let mut say = |s: String| {
        out.push_str(&s);
        out.push('\n');
    };
    say(format!(
        "{version} on the {kind:?} backend: {} tests in {:.1} s: {pass} passed, {fail} failed \
         ({n_excluded} excluded, {} not excluded), {n_skipped} skipped",
        parsed.cases.len(),
        run.elapsed.as_secs_f64(),
        new_failures.len(),
    ));
    say("excluded failures by group (tests/pjdfstest/excluded.txt):".into());
    for (group, reason) in &ex.groups {
        let n = excluded.get(group.as_str()).copied().unwrap_or(0);
        say(format!("  {n:4}  [{group}] {reason}"));
    }
    for (why, n) in &skipped {
        say(format!("skipped: {n:4}  {why}"));
    }
    let mut slow: Vec<&Case> = parsed.cases.iter().collect();
    slow.sort_by_key(|c| std::cmp::Reverse(c.took));
    say(format!(
        "slowest: {}",
        slow.iter()
            .take(5)
            .map(|c| format!("{} {:.1} s", c.name, c.took.as_secs_f64()))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    if !now_passing.is_empty() {
        say(format!(
            "NOTE: {} excluded test(s) passed; delete them from tests/pjdfstest/excluded.txt \
             if they keep passing:",
            now_passing.len()
        ));
        for n in &now_passing {
            say(format!("  {n}"));
        }
    }
    println!("{out}");

    let mut problems = Vec::new();
    if !new_failures.is_empty() {
        let mut s = format!(
            "{} pjdfstest test(s) failed that tests/pjdfstest/excluded.txt does not exclude \
             on the {kind:?} backend:",
            new_failures.len()
        );
        for c in &new_failures {
            s.push_str(&format!("\n  {}", c.name));
            for m in &c.message {
                s.push_str(&format!("\n      {m}"));
            }
        }
        problems.push(s);
    }
    if !stale.is_empty() {
        problems.push(format!(
            "tests/pjdfstest/excluded.txt names {} test(s) that this pjdfstest ({version}) does \
             not have (typo, or another version than {SUITE_VERSION}?): {}",
            stale.len(),
            stale.join(", ")
        ));
    }
    if !now_passing.is_empty() && std::env::var("SUPAMOUNT_PJDFSTEST_STRICT").as_deref() == Ok("1")
    {
        problems.push(format!(
            "SUPAMOUNT_PJDFSTEST_STRICT=1 and {} excluded test(s) passed (see the note above)",
            now_passing.len()
        ));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n\n"));
}

mod parsing {
    use super::*;

    #[test]
    fn result_lines() {
        assert_eq!(
            result_line("chmod::change_perm::regular                            FAILED"),
            Some(("chmod::change_perm::regular".into(), Outcome::Fail))
        );
        assert_eq!(
            result_line("unlink::efault_path       ok"),
            Some(("unlink::efault_path".into(), Outcome::Pass))
        );
        assert_eq!(
            result_line("link::link_count_max         skipped"),
            Some(("link::link_count_max".into(), Outcome::Skip))
        );
        assert_eq!(
            result_line("utimensat::y2038      failed as expected"),
            Some(("utimensat::y2038".into(), Outcome::Fail))
        );
        // Messages under a result are not results.
        assert_eq!(
            result_line("\tcalled `Result::unwrap()` on an `Err` value: EIO"),
            None
        );
        assert_eq!(result_line("  left: 420 ok"), None);
        assert_eq!(result_line("took::ok"), None);
        assert_eq!(
            strip_ansi("\u{1b}[34mrmdir::ebusy\u{1b}[0m  \u{1b}[32mok\u{1b}[0m"),
            "rmdir::ebusy  ok"
        );
    }

    #[test]
    fn summary() {
        let s = summary_line(
            "Summary: 270 failed, 21 skipped, 107 passed, 0 expected failures, 398 total",
        )
        .unwrap();
        assert_eq!(s["failed"], 270);
        assert_eq!(s["expected failures"], 0);
        assert_eq!(s["total"], 398);
        assert!(summary_line("Summary of nothing").is_none());
    }

    #[test]
    fn the_committed_list_loads() {
        let ex = Exclusions::load(Path::new(EXCLUDED));
        assert!(!ex.groups.is_empty());
        assert!(ex
            .excuse("link::remove_link::regular", Kind::Local)
            .is_some());
        assert!(ex.excuse("open::interact_2gb", Kind::Local).is_none());
        assert!(ex.excuse("open::interact_2gb", Kind::Supabase).is_some());
    }
}
