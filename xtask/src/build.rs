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
    let dest = ebpf_object();
    ebpf_into(&root().join("target/ebpf-build"), &[], &dest)?;
    println!("build-ebpf: {}", dest.display());
    Ok(())
}

/// A variant of the kernel programs built with extra `rustc` flags (`--cfg`s),
/// written to `target/ebpf/pier-dataplane-NAME.o` (not embedded in the agent:
/// `PIER_EBPF_OBJECT_FILE` makes an agent load it).
pub fn ebpf_variant(name: &str, rustflags: &[&str]) -> anyhow::Result<PathBuf> {
    let dest = root().join(format!("target/ebpf/pier-dataplane-{name}.o"));
    ebpf_into(
        &root().join(format!("target/ebpf-build-{name}")),
        rustflags,
        &dest,
    )?;
    Ok(dest)
}

fn ebpf_into(
    target_dir: &std::path::Path,
    extra: &[&str],
    dest: &std::path::Path,
) -> anyhow::Result<()> {
    // `--cfg bpf_target_arch` lets aya-ebpf pick the right pt_regs layout;
    // `--btf` makes bpf-linker emit BTF, which map definitions need.
    let mut flags = vec![
        "--cfg=bpf_target_arch=\"x86_64\"",
        "-Cdebuginfo=2",
        "-Clink-arg=--btf",
    ];
    flags.extend_from_slice(extra);
    let flags = flags.join("\x1f");
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
        .arg(target_dir)
        .env("CARGO_ENCODED_RUSTFLAGS", flags))
    .context("building the eBPF programs")?;
    let built = target_dir.join("bpfel-unknown-none/release/pier-dataplane");
    std::fs::create_dir_all(dest.parent().unwrap())?;
    // Only replace the object when it changed, so the agent is not rebuilt needlessly.
    let new = std::fs::read(&built).with_context(|| format!("reading {}", built.display()))?;
    if std::fs::read(dest).ok().as_deref() != Some(&new[..]) {
        std::fs::write(dest, &new)?;
    }
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
