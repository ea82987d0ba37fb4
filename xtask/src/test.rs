//! `cargo xtask test`: the one test command (README, .ci/run).
use anyhow::bail;

use crate::{
    build, setup,
    util::{self, cargo, is_root},
};

pub fn run(no_lint: bool, args: &[String]) -> anyhow::Result<()> {
    setup::ensure()?;
    build::ebpf()?;
    if !no_lint {
        println!("test: cargo fmt --check");
        util::run(cargo().args(["fmt", "--all", "--check"]))?;
        println!("test: cargo clippy");
        util::run(cargo().args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]))?;
    }
    build::agent(false)?;
    if !is_root() {
        bail!("the integration tests build network namespaces: run `cargo xtask test` as root");
    }
    println!("test: cargo test (unit and root integration tests)");
    util::run(cargo().args(["test", "--workspace"]).arg("--").args(args))?;
    // A filtered run (`cargo xtask test -- NAME`) is for iterating: no suite.
    if args.is_empty() {
        println!("test: netavark's own suite against pier and Debian's netavark");
        crate::compat::run()?;
    }
    Ok(())
}
