//! What the running kernel offers pier.
use std::path::Path;

use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct Features {
    pub kernel: String,
    /// Kernel BTF at /sys/kernel/btf/vmlinux (CO-RE, typed maps).
    pub btf: bool,
    /// A bpffs is mounted at /sys/fs/bpf (pins survive an agent restart).
    pub bpffs: bool,
    /// Where cgroup v2 is mounted, if anywhere (socket hooks attach there).
    pub cgroup2: Option<String>,
    /// TCX attachment (kernel 6.6+): ordered, link-based TC programs.
    pub tcx: bool,
}

impl Features {
    pub fn probe() -> Self {
        let kernel = nix::sys::utsname::uname()
            .map(|u| u.release().to_string_lossy().into_owned())
            .unwrap_or_default();
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
        let bpffs = mounts
            .lines()
            .any(|l| l.split_whitespace().nth(2) == Some("bpf"));
        let cgroup2 = mounts.lines().find_map(|l| {
            let mut f = l.split_whitespace();
            let (_, dir, fs) = (f.next(), f.next()?, f.next()?);
            (fs == "cgroup2").then(|| dir.to_string())
        });
        Features {
            btf: Path::new("/sys/kernel/btf/vmlinux").exists(),
            bpffs,
            cgroup2,
            tcx: kernel_at_least(&kernel, 6, 6),
            kernel,
        }
    }

    pub fn report(&self) -> String {
        let yes = |b: bool| if b { "yes" } else { "no" };
        format!(
            "kernel:  {}\nBTF:     {}\nbpffs:   {}\ncgroup2: {}\nTCX:     {}\n",
            self.kernel,
            yes(self.btf),
            yes(self.bpffs),
            self.cgroup2.as_deref().unwrap_or("no"),
            yes(self.tcx)
        )
    }
}

/// `true` when `release` ("6.18.44-foo") is at least `major.minor`.
pub fn kernel_at_least(release: &str, major: u32, minor: u32) -> bool {
    let mut parts = release
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<u32>().unwrap_or(0));
    let (ma, mi) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (ma, mi) >= (major, minor)
}

#[cfg(test)]
mod tests {
    use super::kernel_at_least;

    #[test]
    fn kernel_versions_compare() {
        assert!(kernel_at_least("6.18.44-fc-v669", 6, 6));
        assert!(kernel_at_least("6.6.0", 6, 6));
        assert!(!kernel_at_least("6.5.13", 6, 6));
        assert!(!kernel_at_least("5.15.0-91-generic", 6, 6));
        assert!(kernel_at_least("7.0", 6, 6));
        assert!(!kernel_at_least("", 6, 6));
    }
}
