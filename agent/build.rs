//! Embeds the kernel programs built by `cargo xtask build-ebpf`.
use std::path::PathBuf;

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap());
    let obj = std::env::var_os("PIER_EBPF_OBJECT")
        .map(PathBuf::from)
        .unwrap_or_else(|| manifest.join("../target/ebpf/pier-dataplane.o"));
    println!("cargo:rerun-if-env-changed=PIER_EBPF_OBJECT");
    println!("cargo:rerun-if-changed={}", obj.display());
    if !obj.exists() {
        panic!(
            "\n\npier embeds its eBPF programs, and {} does not exist.\n\
             Run `cargo xtask build-ebpf` first (or `cargo xtask build`).\n\n",
            obj.display()
        );
    }
    println!("cargo:rustc-env=PIER_EBPF_OBJECT={}", obj.display());
}
