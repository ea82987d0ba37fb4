//! Facts about the host namespace the dataplane runs in, read with syscalls
//! (never by running `ip`, `sysctl` or `bpftool`).
use std::{
    collections::BTreeMap,
    net::Ipv4Addr,
    os::fd::AsRawFd,
    path::{Path, PathBuf},
};

use nix::sys::socket::{AddressFamily, SockFlag, SockType, socket};

use super::DataplaneError;

const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
/// Where bpffs is mounted when nothing is.
pub const BPFFS_ROOT: &str = "/sys/fs/bpf";

fn err(what: impl std::fmt::Display, e: impl std::fmt::Display) -> DataplaneError {
    DataplaneError::Other(format!("{what}: {e}"))
}

/// The network-namespace cookie of the calling thread's namespace.
pub fn netns_cookie() -> Result<u64, DataplaneError> {
    let fd = socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(|e| err("socket", e))?;
    let mut cookie: u64 = 0;
    let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
    // SO_NETNS_COOKIE (Linux 5.14).
    let r = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_NETNS_COOKIE,
            (&mut cookie as *mut u64).cast(),
            &mut len,
        )
    };
    if r != 0 {
        return Err(err("SO_NETNS_COOKIE", std::io::Error::last_os_error()));
    }
    Ok(cookie)
}

fn is_bpffs(p: &Path) -> bool {
    nix::sys::statfs::statfs(p)
        .map(|s| s.filesystem_type().0 == BPF_FS_MAGIC)
        .unwrap_or(false)
}

/// Make sure `dir` is on a bpffs (mounting one at /sys/fs/bpf when `dir` lives
/// there and nothing is mounted) and exists.
pub fn ensure_bpffs(dir: &Path) -> Result<(), DataplaneError> {
    let root = Path::new(BPFFS_ROOT);
    if dir.starts_with(root) && !is_bpffs(root) {
        std::fs::create_dir_all(root).map_err(|e| err(root.display(), e))?;
        let r = nix::mount::mount(
            Some("bpf"),
            root,
            Some("bpf"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        );
        // Another agent may have mounted it meanwhile.
        if let Err(e) = r
            && !is_bpffs(root)
        {
            return Err(err("mounting bpffs at /sys/fs/bpf", e));
        }
    }
    std::fs::create_dir_all(dir).map_err(|e| err(dir.display(), e))?;
    if !is_bpffs(dir) {
        return Err(DataplaneError::Other(format!(
            "{} is not on a bpf filesystem",
            dir.display()
        )));
    }
    Ok(())
}

/// An interface of the host namespace.
#[derive(Debug, Clone, Default)]
pub struct Iface {
    pub ifindex: u32,
    pub mac: Option<[u8; 6]>,
    pub addrs: Vec<Ipv4Addr>,
}

/// Every interface of the calling thread's namespace, by name.
pub fn interfaces() -> Result<BTreeMap<String, Iface>, DataplaneError> {
    let mut out: BTreeMap<String, Iface> = BTreeMap::new();
    for ifa in nix::ifaddrs::getifaddrs().map_err(|e| err("getifaddrs", e))? {
        let entry = out.entry(ifa.interface_name.clone()).or_default();
        let Some(addr) = ifa.address else { continue };
        if let Some(l) = addr.as_link_addr() {
            entry.ifindex = l.ifindex() as u32;
            if let Some(mac) = l.addr() {
                entry.mac = Some(mac);
            }
        } else if let Some(a) = addr.as_sockaddr_in() {
            entry.addrs.push(a.ip());
        }
    }
    Ok(out)
}

/// Write a sysctl of the calling thread's namespace through /proc/sys.
pub fn set_sysctl(name: &str, value: &str) -> Result<(), DataplaneError> {
    let path = PathBuf::from("/proc/sys").join(name.replace('.', "/"));
    std::fs::write(&path, value).map_err(|e| err(path.display(), e))
}

/// CLOCK_MONOTONIC in nanoseconds: the clock of `bpf_ktime_get_ns`.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Raise the soft open-files limit to the hard one: every published port
/// holds a reservation socket.
pub fn raise_nofile() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}
