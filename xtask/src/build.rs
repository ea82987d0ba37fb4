//! Builds the kernel programs and the agent that embeds them.
use std::path::PathBuf;

use anyhow::Context;

use crate::{
    setup::NIGHTLY,
    util::{cargo, root, run},
};

/// Where the agent's build script looks for the object (see agent/build.rs).
pub fn ebpf_object() -> PathBuf {
    root().join("target/ebpf/pier-dataplane.o")
}

pub fn ebpf() -> anyhow::Result<()> {
    let target_dir = root().join("target/ebpf-build");
    // `--cfg bpf_target_arch` lets aya-ebpf pick the right pt_regs layout;
    // `--btf` makes bpf-linker emit BTF, which map definitions need.
    let flags = [
        "--cfg=bpf_target_arch=\"x86_64\"",
        "-Cdebuginfo=2",
        "-Clink-arg=--btf",
    ]
    .join("\x1f");
    run(cargo()
        .arg(format!("+{NIGHTLY}"))
        .args([
            "build",
            "--package",
            "pier-dataplane",
            "--release",
            "--target",
            "bpfel-unknown-none",
            "-Z",
            "build-std=core",
        ])
        .arg("--target-dir")
        .arg(&target_dir)
        .env("CARGO_ENCODED_RUSTFLAGS", flags))
    .context("building the eBPF programs")?;
    let built = target_dir.join("bpfel-unknown-none/release/pier-dataplane");
    let dest = ebpf_object();
    std::fs::create_dir_all(dest.parent().unwrap())?;
    // Only replace the object when it changed, so the agent is not rebuilt needlessly.
    let new = std::fs::read(&built).with_context(|| format!("reading {}", built.display()))?;
    if std::fs::read(&dest).ok().as_deref() != Some(&new[..]) {
        std::fs::write(&dest, &new)?;
    }
    println!("build-ebpf: {}", dest.display());
    Ok(())
}

pub fn agent(release: bool) -> anyhow::Result<()> {
    let mut c = cargo();
    c.args(["build", "--package", "pier-agent"]);
    if release {
        c.arg("--release");
    }
    run(&mut c)?;
    netavark_link(release)
}

/// `target/{debug,release}/netavark`: the pier binary under podman's name
/// (pier is multi-call: run as `netavark` it speaks netavark 1.4).
pub fn netavark_link(release: bool) -> anyhow::Result<()> {
    let dir = root().join(if release {
        "target/release"
    } else {
        "target/debug"
    });
    let link = dir.join("netavark");
    match std::fs::read_link(&link) {
        Ok(t) if t == std::path::Path::new("pier") => return Ok(()),
        Ok(_) => std::fs::remove_file(&link)?,
        Err(_) if link.exists() => std::fs::remove_file(&link)?,
        Err(_) => {}
    }
    std::os::unix::fs::symlink("pier", &link)
        .with_context(|| format!("linking {}", link.display()))?;
    Ok(())
}
