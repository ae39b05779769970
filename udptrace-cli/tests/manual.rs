//! The manual (README.md and docs/) against the program: each `$ udptrace
//! ...` example is run for real beside a small workload, and what it
//! documents must be what the program prints: column headers exactly (with
//! their widths, where the columns are fixed), the `Tracing` line, summaries
//! and interval timestamps in shape, `doctor`'s labels. The examples need
//! root, like the tracer. And every relative link resolves, to a file and,
//! where it names one, to a heading of it.

mod common;

use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, Ipv6Addr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::*;

/// One documented run: the arguments after `$ udptrace`, and the lines shown.
struct Example {
    args: Vec<String>,
    output: Vec<String>,
}

/// The repository's root.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// README.md and every page of docs/, by path from the root.
fn manual_pages() -> Vec<(String, String)> {
    let mut paths = vec!["README.md".to_string()];
    let mut docs: Vec<String> = std::fs::read_dir(root().join("docs"))
        .unwrap()
        .map(|e| format!("docs/{}", e.unwrap().file_name().to_string_lossy()))
        .filter(|p| p.ends_with(".md"))
        .collect();
    docs.sort();
    paths.extend(docs);
    paths
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(root().join(&p)).unwrap();
            (p, text)
        })
        .collect()
}

fn manual_examples() -> Vec<Example> {
    let mut examples = Vec::new();
    for (_, text) in manual_pages() {
        examples.extend(examples_in(&text));
    }
    examples
}

fn examples_in(text: &str) -> Vec<Example> {
    let mut examples = Vec::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let Some(cmd) = line.strip_prefix("    $ udptrace") else {
            continue;
        };
        let mut output = Vec::new();
        while let Some(out) = lines.next_if(|l| l.starts_with("    ")) {
            output.push(out[4..].trim_end().to_string());
        }
        let args = cmd.split_whitespace().map(String::from).collect();
        examples.push(Example { args, output });
    }
    examples
}

/// Datagrams of every kind the examples show: IPv4 and IPv6 sends and
/// receives, and one to a port nobody listens on (a drop).
fn workload() {
    for (rx, tx) in [
        (
            UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap(),
            UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap(),
        ),
        (
            UdpSocket::bind((Ipv6Addr::LOCALHOST, 0)).unwrap(),
            UdpSocket::bind((Ipv6Addr::LOCALHOST, 0)).unwrap(),
        ),
    ] {
        tx.send_to(b"hello", rx.local_addr().unwrap()).unwrap();
        rx.recv_from(&mut [0; 64]).unwrap();
    }
    // A port just freed: nothing listens on it.
    let closed = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let tx = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    tx.send_to(b"dropped", (Ipv4Addr::LOCALHOST, port)).unwrap();
}

/// Runs `udptrace ARGS` until its first interval has passed, with the
/// workload once it is tracing; returns its stderr and stdout lines.
fn run(args: &[String]) -> (Vec<String>, Vec<String>) {
    if args.first().map(String::as_str) == Some("doctor") {
        let out = Command::new(udptrace_bin()).args(args).output().unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        return (Vec::new(), text.lines().map(String::from).collect());
    }
    // Where an example's files (`-w x.pcapng`) may go.
    let dir = std::env::temp_dir().join(format!("udptrace-readme-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut child = Command::new(udptrace_bin())
        .args(args)
        .current_dir(&dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut lines = Vec::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(());
            lines.push(line);
        }
        lines
    });
    rx.recv_timeout(Duration::from_secs(20))
        .expect("udptrace printed its Tracing line");
    workload();
    std::thread::sleep(Duration::from_millis(1300));
    // SAFETY: signalling the child we started.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    (
        reader.join().unwrap(),
        stdout.lines().map(String::from).collect(),
    )
}

/// A line of column names: every word capitalised (DELTA(us), RX_BYTES,
/// FILL%, RX/s and WAIT_P99(us) included).
fn is_header(line: &str) -> bool {
    let words: Vec<&str> = line.split_whitespace().collect();
    words.len() >= 2
        && words.iter().all(|w| {
            w.chars().next().is_some_and(|c| c.is_ascii_uppercase())
                && w.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "()_%/".contains(c))
                && w.chars().filter(|c| c.is_ascii_uppercase()).count() >= 2
        })
}

/// Numbers and the backend's name replaced, for lines whose values vary.
fn shape(line: &str) -> String {
    let mut line = line.to_string();
    for backend in ["fentry", "kprobe", "tracepoint"] {
        line = line.replace(backend, "BACKEND");
    }
    line.chars()
        .map(|c| if c.is_ascii_digit() { '#' } else { c })
        .collect()
}

fn collapse(shaped: &str) -> String {
    let mut s = shaped.to_string();
    while s.contains("##") {
        s = s.replace("##", "#");
    }
    s
}

/// What a doctor line says before its value: `kernel:`, or a backend's name
/// in its padded column (`backend fentry      `).
fn doctor_label(line: &str) -> &str {
    match line.strip_prefix("backend ") {
        Some(rest) => {
            let name_end = rest.find(' ').unwrap_or(rest.len());
            let padding = rest[name_end..].find(|c| c != ' ').unwrap_or(0);
            &line[..8 + name_end + padding]
        }
        None => line.split_once(':').map_or(line, |(label, _)| label),
    }
}

#[test]
fn manual_examples_match_the_program() {
    let examples = manual_examples();
    let commands: Vec<String> = examples.iter().map(|e| e.args.join(" ")).collect();
    for expected in ["", "trace --packets", "drops", "doctor"] {
        assert!(
            commands.iter().any(|c| c == expected),
            "the manual lost its `udptrace {expected}` example: {commands:?}"
        );
    }
    for ex in &examples {
        let (stderr, stdout) = run(&ex.args);
        let cmd = format!("udptrace {}", ex.args.join(" "));
        // count and top size their key columns to the rows; the other views are fixed.
        let fixed_columns = !matches!(
            ex.args.first().map(String::as_str),
            Some("count") | Some("top")
        );
        for line in ex.output.iter().filter(|l| is_header(l)) {
            let found = stdout.iter().any(|real| {
                if fixed_columns {
                    real.trim_end() == line
                } else {
                    real.split_whitespace().eq(line.split_whitespace())
                }
            });
            assert!(
                found,
                "{cmd}: the manual's header\n{line}\nis not the program's:\n{}",
                stdout.join("\n")
            );
        }
        // Every view but doctor starts with the Tracing line, on stderr.
        if ex.args.first().map(String::as_str) != Some("doctor") {
            let tracing = ex.output.first().expect("an example shows output");
            assert_eq!(
                collapse(&shape(tracing)),
                collapse(&shape(&stderr[0])),
                "{cmd}: the first line is the Tracing line"
            );
        }
        let shapes_of = |lines: &[String]| -> Vec<String> {
            lines.iter().map(|l| collapse(&shape(l))).collect()
        };
        let real = [shapes_of(&stderr), shapes_of(&stdout)].concat();
        let doctor = ex.args.first().map(String::as_str) == Some("doctor");
        for line in &ex.output {
            let doc = collapse(&shape(line));
            // Interval timestamps, the count and latency summaries and doctor's labels.
            let checked = doc == "#:#:#.#"
                || doc.starts_with("counted #")
                || doc.starts_with("receives # in #")
                || doc.starts_with("datagrams # in #")
                || (doctor && line.contains(':') && !line.starts_with(' '));
            if !checked {
                continue;
            }
            let label = if doctor { doctor_label(&doc) } else { &doc };
            let matches = |r: &String| match doctor {
                true => r.starts_with(label),
                false => *r == doc,
            };
            assert!(
                real.iter().any(matches),
                "{cmd}: the manual shows\n{line}\nthe program printed:\n{}\n{}",
                stderr.join("\n"),
                stdout.join("\n")
            );
        }
        // Each view's summary: `N events (kind N, ...); lost N`.
        if let Some(summary) = ex.output.iter().find(|l| l.contains(" events (")) {
            let real = stderr.iter().find(|l| l.contains(" events ("));
            let form =
                |l: &str| collapse(&shape(l)).starts_with("# events (") && l.contains("; lost ");
            assert!(form(summary), "{cmd}: the manual's summary {summary:?}");
            assert!(real.is_some_and(|r| form(r)), "{cmd}: {stderr:?}");
        }
    }
}

/// A heading's anchor as GitHub makes it: lower case, punctuation but `-`
/// and `_` dropped, spaces made `-`.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | ' '))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// The anchors of a page's headings (outside code blocks, which are indented).
fn anchors(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix('#'))
        .map(|l| anchor(l.trim_start_matches('#')))
        .collect()
}

/// Every `[text](target)` of a page whose target is in the repository.
fn relative_links(text: &str) -> Vec<String> {
    let mut links = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("](") {
        rest = &rest[at + 2..];
        let Some(end) = rest.find(')') else { break };
        let target = &rest[..end];
        if !target.contains("://") && !target.starts_with("mailto:") && !target.contains(' ') {
            links.push(target.to_string());
        }
    }
    links
}

#[test]
fn every_relative_link_of_the_manual_resolves() {
    let pages = manual_pages();
    let mut broken = Vec::new();
    let mut checked = 0;
    for (page, text) in &pages {
        let dir = Path::new(page).parent().unwrap_or(Path::new(""));
        for link in relative_links(text) {
            let (file, fragment) = link.split_once('#').unwrap_or((&link, ""));
            let target = if file.is_empty() {
                PathBuf::from(page)
            } else {
                dir.join(file)
            };
            checked += 1;
            let path = root().join(&target);
            if !path.exists() {
                broken.push(format!("{page}: {link} (no {})", target.display()));
                continue;
            }
            if !fragment.is_empty() {
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                if !anchors(&text).iter().any(|a| a == fragment) {
                    broken.push(format!("{page}: {link} (no heading #{fragment})"));
                }
            }
        }
    }
    assert!(broken.is_empty(), "{}", broken.join("\n"));
    assert!(checked > 40, "only {checked} links found");
}

#[test]
fn readme_is_a_front_page_and_docs_have_every_subcommand() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let lines: Vec<&str> = readme.lines().collect();
    assert!(lines.len() <= 300, "README.md has {} lines", lines.len());
    for setup in ["    ./dev.sh run", "    ./dev.sh test"] {
        let at = lines.iter().position(|l| *l == setup);
        assert!(at.is_some_and(|n| n < 100), "{setup:?} at line {at:?}");
    }
    let help = std::process::Command::new(udptrace_bin())
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout).into_owned();
    let subcommands: Vec<&str> = help
        .split("Commands:")
        .nth(1)
        .unwrap()
        .lines()
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .collect();
    assert!(subcommands.len() >= 10, "{subcommands:?}");
    let pages = manual_pages();
    for sub in subcommands {
        let documented = pages.iter().any(|(page, text)| {
            page.starts_with("docs/")
                && text.lines().next().is_some_and(|title| {
                    title.starts_with('#') && title.contains(&format!("`udptrace {sub}"))
                })
        });
        assert!(
            documented,
            "no page of docs/ has `udptrace {sub}` in its title"
        );
    }
}
