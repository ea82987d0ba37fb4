//! pier's CNI plugin under test: the `pier-cni` binary invoked as a runtime
//! does (CNI_* variables, the config on stdin), a CNI bin dir holding it as
//! `pier` next to Debian's reference plugins, and the runtimes' helpers.
use std::{
    io::Write,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use serde_json::Value;

/// Debian's reference plugins (containernetworking-plugins).
pub const REFERENCE_PLUGINS: &str = "/usr/lib/cni";

/// The plugin under test: `$PIER_CNI_BIN`, else target/debug/pier-cni.
pub fn plugin_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("PIER_CNI_BIN") {
        return p.into();
    }
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/pier-cni");
    assert!(
        p.exists(),
        "{} is missing: build it with `cargo xtask build` (cargo xtask test does)",
        p.display()
    );
    p
}

/// What one invocation printed and how it ended.
#[derive(Debug)]
pub struct Outcome {
    pub status: i32,
    /// stdout as JSON (`Null` when empty).
    pub out: Value,
    pub stderr: String,
}

impl Outcome {
    /// The error code of a failed invocation (panics on success).
    pub fn code(&self) -> u64 {
        assert_ne!(self.status, 0, "the plugin succeeded: {:?}", self.out);
        self.out["code"]
            .as_u64()
            .unwrap_or_else(|| panic!("no error code in {:?}", self))
    }

    /// Panics unless it succeeded; the result.
    pub fn ok(&self) -> &Value {
        assert_eq!(self.status, 0, "the plugin failed: {self:?}");
        &self.out
    }
}

/// Run the plugin with `CNI_COMMAND=command`, the other `CNI_*` in `env`,
/// and `conf` on stdin.
pub fn invoke(command: &str, env: &[(&str, &str)], conf: &Value) -> Outcome {
    let mut c = Command::new(plugin_bin());
    c.env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("CNI_COMMAND", command)
        .env("CNI_PATH", REFERENCE_PLUGINS);
    for (k, v) in env {
        c.env(k, v);
    }
    let mut child = c
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn pier-cni");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(conf.to_string().as_bytes())
        .unwrap();
    let o = child.wait_with_output().expect("wait pier-cni");
    let text = String::from_utf8_lossy(&o.stdout);
    Outcome {
        status: o.status.code().unwrap_or(-1),
        out: if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("stdout {text:?}: {e}"))
        },
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

/// A CNI bin dir under `dir`: `pier` (the plugin under test) and Debian's
/// `loopback`.
pub fn bin_dir(dir: &Path) -> PathBuf {
    let b = dir.join("cni-bin");
    std::fs::create_dir_all(&b).unwrap();
    let _ = std::fs::remove_file(b.join("pier"));
    std::os::unix::fs::symlink(plugin_bin(), b.join("pier")).unwrap();
    let lo = Path::new(REFERENCE_PLUGINS).join("loopback");
    if lo.exists() {
        let _ = std::os::unix::fs::symlink(&lo, b.join("loopback"));
    }
    b
}

/// Why the CNI runtime tests cannot run here, if they cannot.
pub fn reference_plugins_missing() -> Option<String> {
    let lo = Path::new(REFERENCE_PLUGINS).join("loopback");
    (!lo.exists()).then(|| {
        format!(
            "{} is not installed (cargo xtask setup installs containernetworking-plugins)",
            lo.display()
        )
    })
}

/// Where the plugin queues DELs for the agent of `socket`.
pub fn queue_dir(socket: &Path) -> PathBuf {
    pier_agent::cni::delete_queue_dir(socket)
}
