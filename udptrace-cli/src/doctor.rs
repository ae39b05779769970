//! `udptrace doctor`: what this kernel supports and what `auto` would pick.

use anyhow::{bail, Result};
use udptrace::doctor::diagnose;

pub fn run() -> Result<()> {
    let d = diagnose();
    println!("kernel:       {}", d.kernel);
    if d.btf {
        println!("BTF:          yes");
    } else {
        println!("BTF:          no (udptrace needs a kernel built with CONFIG_DEBUG_INFO_BTF=y)");
    }
    println!(
        "cgroup v2:    {}",
        d.cgroup2.as_deref().unwrap_or("not mounted")
    );
    if d.missing_capabilities.is_empty() {
        println!("privileges:   ok");
    } else {
        println!(
            "privileges:   missing {}",
            d.missing_capabilities.join(", ")
        );
    }
    match d.paged_payload {
        Ok(()) => println!("payload:      page fragments readable (fentry, kprobe)"),
        Err(why) => println!("payload:      linear data only on fentry and kprobe: {why}"),
    }
    for check in &d.backends {
        match &check.result {
            Ok(probes) => {
                println!("backend {:<11} ok, {} probes:", check.backend, probes.len());
                for p in probes {
                    println!("    {p}");
                }
            }
            Err(why) => println!("backend {:<11} unavailable: {why}", check.backend),
        }
    }
    for limit in udptrace::kernel_limits() {
        println!("limit:        {limit}");
    }
    match d.auto() {
        Some(b) => println!("auto picks:   {b}"),
        None => bail!("no backend can run on this kernel"),
    }
    for check in &d.modes {
        match &check.result {
            Ok(probes) => println!("mode {:<29} ok, {probes} probes", check.mode),
            Err(why) => println!("mode {:<29} fails: {why}", check.mode),
        }
    }
    let failed: Vec<&str> = d
        .modes
        .iter()
        .filter(|c| c.result.is_err())
        .map(|c| c.mode)
        .collect();
    if !failed.is_empty() {
        bail!(
            "these modes cannot run on this kernel: {}",
            failed.join(", ")
        );
    }
    Ok(())
}
