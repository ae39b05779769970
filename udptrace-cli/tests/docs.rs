//! What udptrace tells about itself beyond `--help`: its version and commit,
//! its man pages and its shell completions, each checked with the real tool
//! that reads it (man, bash, zsh, fish). Needs no privileges.

mod common;

use std::process::{Command, Output};

use common::*;

fn udptrace(args: &[&str]) -> Output {
    let out = Command::new(udptrace_bin()).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "udptrace {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// `sh -c SCRIPT` with `$U` the binary under test: its stdout.
fn shell(sh: &str, script: &str) -> String {
    let out = Command::new(sh)
        .args(["-c", script])
        .env("U", udptrace_bin())
        .output()
        .unwrap_or_else(|e| panic!("running {sh}: {e}"));
    assert!(
        out.status.success(),
        "{sh} -c {script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout(&out)
}

const SUBCOMMANDS: [&str; 12] = [
    "trace",
    "drops",
    "count",
    "latency",
    "top",
    "life",
    "rcvbuf",
    "serve",
    "dns",
    "quic",
    "doctor",
    "completions",
];

#[test]
fn version_names_the_commit_it_was_built_from() {
    let version = stdout(&udptrace(&["--version"]));
    let head = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| stdout(&o).trim().to_string())
        .expect("the tests run in the git checkout they were built from");
    assert_eq!(
        version.trim(),
        format!("udptrace {} (commit {head})", env!("CARGO_PKG_VERSION"))
    );
}

/// One page per subcommand, each rendered by man with the subcommand's own
/// description and options.
#[test]
fn man_pages_render_for_every_subcommand() {
    let dir = std::env::temp_dir().join(format!("udptrace-man-{}", std::process::id()));
    let written = stdout(&udptrace(&["man-pages", dir.to_str().unwrap()]));
    let mut pages: Vec<String> = written
        .lines()
        .map(|p| p.rsplit('/').next().unwrap().to_string())
        .collect();
    pages.sort();
    let mut expected: Vec<String> = SUBCOMMANDS
        .iter()
        .map(|s| format!("udptrace-{s}.1"))
        .chain(["udptrace.1".to_string()])
        .collect();
    expected.sort();
    assert_eq!(pages, expected);
    for (page, sub) in [
        ("udptrace.1", None),
        ("udptrace-count.1", Some("count")),
        ("udptrace-drops.1", Some("drops")),
    ] {
        let rendered = Command::new("man")
            .args(["-l", dir.join(page).to_str().unwrap()])
            .env("MANPAGER", "cat")
            .env("MANWIDTH", "200")
            .output()
            .expect("man runs");
        assert!(rendered.status.success(), "man -l {page}");
        let text = stdout(&rendered);
        let help_args: Vec<&str> = sub.into_iter().chain(["--help"]).collect();
        let help = stdout(&udptrace(&help_args));
        // The description's first line, and the options, as --help has them.
        let about = help.lines().next().unwrap();
        assert!(text.contains(about), "{page} lacks {about:?}:\n{text}");
        for flag in ["--port", "--backend"] {
            assert!(text.contains(flag), "{page} lacks {flag}");
        }
    }
    let count = std::fs::read_to_string(dir.join("udptrace-count.1")).unwrap();
    assert!(count.contains("\\-\\-by"), "count's page documents --by");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bash_completes_subcommands_and_options() {
    let complete = |words: &str| {
        shell(
            "bash",
            &format!(
                "source <(\"$U\" completions bash) && COMP_WORDS=({words}) && \
                 COMP_CWORD=$((${{#COMP_WORDS[@]}} - 1)) && \
                 _udptrace udptrace \"${{COMP_WORDS[-1]}}\" \"${{COMP_WORDS[-2]}}\" && \
                 printf '%s\\n' \"${{COMPREPLY[@]}}\""
            ),
        )
    };
    let subs = complete("udptrace co");
    assert_eq!(subs.lines().collect::<Vec<_>>(), ["count", "completions"]);
    assert_eq!(complete("udptrace count --j").trim(), "--json");
}

#[test]
fn fish_completes_subcommands_and_options() {
    let complete = |line: &str| {
        shell(
            "fish",
            &format!("source (\"$U\" completions fish | psub); complete -C '{line}'"),
        )
    };
    let subs: Vec<String> = complete("udptrace co")
        .lines()
        .map(|l| l.split('\t').next().unwrap().to_string())
        .collect();
    assert_eq!(subs, ["completions", "count"]);
    assert!(complete("udptrace count --j").starts_with("--json\t"));
}

#[test]
fn zsh_loads_the_completion_function() {
    let kind = shell(
        "zsh",
        "autoload -U compinit && compinit -u && source <(\"$U\" completions zsh) && \
         whence -w _udptrace",
    );
    assert_eq!(kind.trim(), "_udptrace: function");
}

/// The workspace's `rust-version` is at least what every locked dependency
/// declares it needs, so the minimum it promises is true.
#[test]
fn declared_rust_version_covers_the_locked_dependencies() {
    let out = Command::new(env!("CARGO"))
        .args(["metadata", "--locked", "--format-version", "1"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let version = |v: &str| -> Vec<u32> { v.split('.').map(|n| n.parse().unwrap()).collect() };
    let declared = version(env!("CARGO_PKG_RUST_VERSION"));
    let used: Vec<&str> = meta["resolve"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_str().unwrap())
        .collect();
    for p in meta["packages"].as_array().unwrap() {
        let (Some(needs), true) = (
            p["rust_version"].as_str(),
            used.contains(&p["id"].as_str().unwrap()),
        ) else {
            continue;
        };
        let mut needs = version(needs);
        needs.resize(3, 0);
        let mut have = declared.clone();
        have.resize(3, 0);
        assert!(
            needs <= have,
            "{} {} needs Rust {:?}, the workspace declares {:?}",
            p["name"],
            p["version"],
            needs,
            declared
        );
    }
}

/// udptrace's own output has no colour; clap colours help and usage errors
/// on a terminal only, and never with NO_COLOR set, unless --color says.
#[test]
fn colour_only_on_a_terminal_and_never_with_no_color() {
    let escapes_on_terminal = |args: &str, no_color: bool| {
        let mut cmd = Command::new("script");
        cmd.args(["-qc", &format!("\"$U\" {args}"), "/dev/null"])
            .env("U", udptrace_bin())
            .env("TERM", "xterm-256color")
            .env_remove("NO_COLOR");
        if no_color {
            cmd.env("NO_COLOR", "1");
        }
        let out = cmd.output().expect("script (util-linux) runs");
        String::from_utf8_lossy(&out.stdout)
            .matches("\x1b[")
            .count()
    };
    assert!(escapes_on_terminal("--help", false) > 0);
    assert_eq!(escapes_on_terminal("--help", true), 0);
    assert_eq!(escapes_on_terminal("--bogus", true), 0);
    // --color decides over both.
    assert_eq!(escapes_on_terminal("--color never --help", false), 0);
    assert_eq!(escapes_on_terminal("count --color=never --bogus", false), 0);
    assert!(escapes_on_terminal("--color always --help", true) > 0);
    let piped = Command::new(udptrace_bin()).arg("--help").output().unwrap();
    assert!(!String::from_utf8_lossy(&piped.stdout).contains('\x1b'));
}
