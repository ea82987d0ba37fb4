//! Kernel parameters through `/proc/sys` (file writes, not the `sysctl`
//! program). Keys under `net.` apply to the network namespace of the calling
//! thread.
use std::path::PathBuf;

use super::{Result, TopologyError, worker::os};

fn key_path(key: &str) -> Result<PathBuf> {
    let ok = !key.is_empty()
        && key
            .split('.')
            .all(|p| !p.is_empty() && p != ".." && !p.contains('/'));
    if !ok {
        return Err(TopologyError::Invalid(format!(
            "invalid sysctl key {key:?}"
        )));
    }
    Ok(PathBuf::from("/proc/sys").join(key.replace('.', "/")))
}

/// Read a parameter, e.g. `get("net.ipv4.ip_forward")` → `"1"`.
pub fn get(key: &str) -> Result<String> {
    let p = key_path(key)?;
    std::fs::read_to_string(&p)
        .map(|s| s.trim_end().to_string())
        .map_err(|e| os(format!("read sysctl {key}"), e))
}

/// Write a parameter, e.g. `set("net.ipv4.ip_forward", "1")`. Writes only
/// when the value differs.
pub fn set(key: &str, value: &str) -> Result<()> {
    let p = key_path(key)?;
    if get(key)? == value {
        return Ok(());
    }
    std::fs::write(&p, value).map_err(|e| os(format!("write sysctl {key}={value}"), e))
}

#[cfg(test)]
mod tests {
    use super::key_path;

    #[test]
    fn keys_map_to_proc_sys() {
        assert_eq!(
            key_path("net.ipv4.ip_forward").unwrap().to_str(),
            Some("/proc/sys/net/ipv4/ip_forward")
        );
        for bad in ["", "net..ipv4", "net.ipv4/../../x", "net.."] {
            assert!(key_path(bad).is_err(), "{bad}");
        }
    }
}
