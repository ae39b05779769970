//! The hook floor of a udptrace mode: the cheapest program on each hook the
//! mode attaches on this kernel (bpf/floor.bpf.c), run as its own process
//! like the tools, so that a mode is measured against the cost of its hooks.

use std::fs::File;
use std::io::Write;
use std::mem::MaybeUninit;
use std::os::fd::AsRawFd;
use std::sync::mpsc;

use anyhow::{bail, Context, Result};
use libbpf_rs::skel::{OpenSkel, Skel, SkelBuilder};
use libbpf_rs::{MapCore, MapFlags};

use crate::Consume;

mod skel {
    #![allow(clippy::all, unused_imports, non_camel_case_types, dead_code)]
    include!(concat!(env!("OUT_DIR"), "/floor.skel.rs"));
}

/// Attaches the floor of `mode` until SIGINT, then prints how often its
/// programs ran, as the udptrace consumer prints its events.
pub fn run(mode: Consume) -> Result<()> {
    // The hooks udptrace attaches for this mode here: a stand-in is named
    // with what it stands in for, "tp_btf/sock_recv_length (for ...)".
    let sections: Vec<String> = crate::builder_for(mode)
        .start()
        .context("starting udptrace to learn its hooks")?
        .probes()
        .iter()
        .map(|p| p.split(" (").next().unwrap_or(p).to_string())
        .collect();
    let mut storage = MaybeUninit::uninit();
    let mut open = skel::FloorSkelBuilder::default()
        .open(&mut storage)
        .context("opening the floor programs")?;
    let mut covered = Vec::new();
    for mut prog in open.open_object_mut().progs_mut() {
        let section = prog.section().to_string_lossy().into_owned();
        let wanted = sections.contains(&section);
        prog.set_autoload(wanted);
        if wanted {
            covered.push(section);
        }
    }
    if let Some(missing) = sections.iter().find(|s| !covered.contains(s)) {
        bail!("the floor has no program for udptrace's hook {missing}");
    }
    let skel = open.load().context("loading the floor programs")?;
    let root = udptrace::sys::cgroup2_mount()?;
    let cgroup = File::open(&root).with_context(|| format!("opening {}", root.display()))?;
    let mut links = Vec::new();
    for prog in skel.object().progs_mut() {
        if !prog.autoload() {
            continue;
        }
        let section = prog.section().to_string_lossy().into_owned();
        let link = if section.starts_with("cgroup") {
            prog.attach_cgroup(cgroup.as_raw_fd())
        } else {
            prog.attach()
        }
        .with_context(|| format!("attaching the floor of {section}"))?;
        links.push(link);
    }
    let (stop_tx, stop_rx) = mpsc::channel();
    ctrlc::set_handler(move || {
        let _ = stop_tx.send(());
    })?;
    let say = |line: &str| {
        let _ = writeln!(std::io::stdout(), "{line}");
    };
    say("ready");
    let _ = stop_rx.recv();
    drop(links);
    let hits: u64 = skel
        .maps
        .hits
        .lookup_percpu(&0u32.to_ne_bytes(), MapFlags::ANY)
        .context("reading the floor's count")?
        .unwrap_or_default()
        .iter()
        .filter_map(|v| v.get(..8))
        .map(|b| u64::from_ne_bytes(b.try_into().expect("8 bytes")))
        .sum();
    say(&serde_json::json!({ "events": hits, "lost": 0 }).to_string());
    Ok(())
}
