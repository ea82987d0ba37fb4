//! Makes a fresh machine able to build and test pier. Idempotent; when
//! everything is present it only looks (well under 2 s).
use std::{path::PathBuf, process::Command};

use anyhow::{Context, bail};

use crate::util::{cmd, output, run};

/// Debian packages: LLVM 22 for bpf-linker, and the tools the tests and the
/// benchmark drive (iproute2 to build test hosts, iptables/nftables to prove we
/// add no rule and to build the iptables peer, iperf3 for throughput).
const PACKAGES: &[&str] = &[
    "llvm-22-dev",
    "libpolly-22-dev",
    "libzstd-dev",
    "zlib1g-dev",
    "iproute2",
    "iptables",
    "nftables",
    "iperf3",
    // The benchmark's Podman peer (installs in seconds).
    "netavark",
    "util-linux",
    "iputils-ping",
    // The ARP-spoofing attack the neighbour anti-spoofing test replays.
    "iputils-arping",
    "python3",
    // The real engines pier is the network of (the Docker driver's tests, and
    // its bench peers): dockerd 20.10 with docker-proxy, and busybox-static
    // for an image imported without a registry.
    "docker.io",
    "busybox-static",
    "jq",
    // The CNI plugin's runtimes: podman 4.3 (CNI backend) and containerd 1.6
    // with runc, the reference plugins (loopback), and Go with libcni's
    // source for the libcni runner built at test time.
    "podman",
    "containerd",
    "runc",
    "containernetworking-plugins",
    "golang-go",
    "golang-github-appc-cni-dev",
    // The bench reads each kernel program's run time per packet with it.
    "bpftool",
    // pier as podman's netavark: aardvark-dns (names), and netavark's own
    // bats suite (`cargo xtask compat`) with the tools it drives.
    "aardvark-dns",
    "bats",
    "ncat",
    "bind9-dnsutils",
];

pub const NIGHTLY: &str = "nightly";

pub fn ensure() -> anyhow::Result<()> {
    (|| {
        apt_packages()?;
        rust_src()?;
        bpf_linker()
    })()
    .context("setting up the machine (cargo xtask setup)")
}

fn apt_packages() -> anyhow::Result<()> {
    let missing: Vec<&str> = PACKAGES
        .iter()
        .copied()
        .filter(|p| !dpkg_installed(p))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !crate::util::is_root() {
        bail!("missing Debian packages {missing:?}; run `cargo xtask setup` as root");
    }
    println!("setup: installing Debian packages {}", missing.join(" "));
    run(Command::new("apt-get").args(["update", "-q"]))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "-q", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))
}

fn dpkg_installed(pkg: &str) -> bool {
    output(Command::new("dpkg-query").args(["-W", "-f=${Status}", pkg]))
        .is_some_and(|s| s.contains("install ok installed"))
}

fn rust_src() -> anyhow::Result<()> {
    let installed =
        output(cmd("rustup").args(["component", "list", "--installed", "--toolchain", NIGHTLY]))
            .context(
                "rustup cannot list the nightly toolchain's components; is nightly installed?",
            )?;
    if installed.lines().any(|l| l.starts_with("rust-src")) {
        return Ok(());
    }
    println!("setup: adding rust-src to the {NIGHTLY} toolchain");
    run(cmd("rustup").args(["component", "add", "rust-src", "--toolchain", NIGHTLY]))
}

fn cargo_bin(name: &str) -> PathBuf {
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .unwrap_or_else(|| PathBuf::from("/root/.cargo"));
    home.join("bin").join(name)
}

fn bpf_linker() -> anyhow::Result<()> {
    let have = output(cmd(cargo_bin("bpf-linker")).arg("--version"))
        .or_else(|| output(cmd("bpf-linker").arg("--version")));
    if have.is_some() {
        return Ok(());
    }
    println!("setup: building bpf-linker against LLVM 22 (about a minute)");
    run(cmd("cargo")
        .args([
            "install",
            "bpf-linker",
            "--no-default-features",
            "--features",
            "llvm-22",
        ])
        // bpf-linker's build script finds LLVM through llvm-config on PATH.
        .env(
            "PATH",
            format!(
                "/usr/lib/llvm-22/bin:{}",
                std::env::var("PATH").unwrap_or_default()
            ),
        )
        .env("LLVM_PREFIX", "/usr/lib/llvm-22")
        .env("LLVM_SYS_221_PREFIX", "/usr/lib/llvm-22"))
}
