//! Records the git commit the CLI is built from, for `udptrace --version`.

use std::path::Path;
use std::process::Command;

fn main() {
    // Packagers building outside a checkout can name the commit themselves.
    println!("cargo:rerun-if-env-changed=UDPTRACE_COMMIT");
    let commit = std::env::var("UDPTRACE_COMMIT").ok().or_else(git_commit);
    let version = match commit {
        Some(c) => format!("{} (commit {c})", env!("CARGO_PKG_VERSION")),
        None => env!("CARGO_PKG_VERSION").to_string(),
    };
    println!("cargo:rustc-env=UDPTRACE_VERSION={version}");
}

/// The checkout's commit, and the files whose change means a new one.
fn git_commit() -> Option<String> {
    let git = |args: &[&str]| {
        let out = Command::new("git").args(args).output().ok()?;
        let text = String::from_utf8(out.stdout).ok()?;
        out.status.success().then(|| text.trim().to_string())
    };
    let commit = git(&["rev-parse", "--short=12", "HEAD"])?;
    let git_dir = git(&["rev-parse", "--absolute-git-dir"])?;
    let git_dir = Path::new(&git_dir);
    let head = git_dir.join("HEAD");
    println!("cargo:rerun-if-changed={}", head.display());
    if let Some(branch) = std::fs::read_to_string(&head)
        .ok()
        .and_then(|h| h.strip_prefix("ref: ").map(|r| r.trim().to_string()))
    {
        println!("cargo:rerun-if-changed={}", git_dir.join(branch).display());
        println!(
            "cargo:rerun-if-changed={}",
            git_dir.join("packed-refs").display()
        );
    }
    Some(commit)
}
