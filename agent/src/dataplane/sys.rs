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
    pub addrs6: Vec<std::net::Ipv6Addr>,
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
        } else if let Some(a) = addr.as_sockaddr_in6() {
            entry.addrs6.push(a.ip());
        }
    }
    Ok(out)
}

/// Write a sysctl of the calling thread's namespace through /proc/sys.
pub fn set_sysctl(name: &str, value: &str) -> Result<(), DataplaneError> {
    let path = PathBuf::from("/proc/sys").join(name.replace('.', "/"));
    // Already so: no write (a read-only /proc is then fine).
    if std::fs::read_to_string(&path).is_ok_and(|v| v.trim() == value) {
        return Ok(());
    }
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

/// The running kernel's `CONFIG_HZ`, from its configuration as the kernel
/// ships it: `/boot/config-<release>`, else `/proc/config.gz`
/// (`CONFIG_IKCONFIG_PROC`). `None` when neither is readable or names it.
pub fn kernel_hz() -> Option<u64> {
    let release = nix::sys::utsname::uname()
        .ok()?
        .release()
        .to_string_lossy()
        .into_owned();
    let text = std::fs::read_to_string(format!("/boot/config-{release}"))
        .ok()
        .or_else(|| {
            let gz = std::fs::read("/proc/config.gz").ok()?;
            String::from_utf8(gunzip(&gz)?).ok()
        })?;
    config_hz(&text)
}

/// `CONFIG_HZ` of a kernel configuration's text.
pub fn config_hz(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("CONFIG_HZ="))
        .and_then(|v| v.trim().parse().ok())
        .filter(|hz| *hz > 0)
}

/// The data of a gzip stream (flate2 reads the header and checks the CRC).
fn gunzip(gz: &[u8]) -> Option<Vec<u8>> {
    use std::io::Read;
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(gz)
        .read_to_end(&mut out)
        .ok()?;
    Some(out)
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

/// Delete the clsact qdisc (and so every filter on it) of interface `ifindex`
/// with one RTM_DELQDISC request; waits for the kernel's acknowledgement.
pub fn del_clsact(ifindex: u32) -> Result<(), DataplaneError> {
    use std::os::fd::{FromRawFd, OwnedFd};
    const TC_H_CLSACT: u32 = 0xffff_fff1;
    const CLSACT_HANDLE: u32 = 0xffff_0000;
    // SAFETY: plain socket(2); the fd is owned right away.
    let raw = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        )
    };
    if raw < 0 {
        return Err(err("netlink socket", std::io::Error::last_os_error()));
    }
    // SAFETY: `raw` is a fresh, valid descriptor nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    // nlmsghdr (16 bytes) + tcmsg (20 bytes).
    let mut msg = [0u8; 36];
    msg[0..4].copy_from_slice(&36u32.to_ne_bytes());
    msg[4..6].copy_from_slice(&libc::RTM_DELQDISC.to_ne_bytes());
    let flags = (libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16;
    msg[6..8].copy_from_slice(&flags.to_ne_bytes());
    msg[8..12].copy_from_slice(&1u32.to_ne_bytes());
    msg[16] = libc::AF_UNSPEC as u8;
    msg[20..24].copy_from_slice(&(ifindex as i32).to_ne_bytes());
    msg[24..28].copy_from_slice(&CLSACT_HANDLE.to_ne_bytes());
    msg[28..32].copy_from_slice(&TC_H_CLSACT.to_ne_bytes());
    // SAFETY: `msg` is a valid buffer of the given length; the kernel is the
    // default destination of an unbound netlink socket.
    let n = unsafe { libc::send(fd.as_raw_fd(), msg.as_ptr().cast(), msg.len(), 0) };
    if n < 0 {
        return Err(err("RTM_DELQDISC", std::io::Error::last_os_error()));
    }
    let mut buf = [0u8; 1024];
    // SAFETY: `buf` is a valid, writable buffer of the given length.
    let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n < 0 {
        return Err(err("RTM_DELQDISC", std::io::Error::last_os_error()));
    }
    // The acknowledgement: NLMSG_ERROR carrying errno 0 on success.
    let kind = u16::from_ne_bytes([buf[4], buf[5]]);
    if n >= 20 && kind == libc::NLMSG_ERROR as u16 {
        let code = i32::from_ne_bytes([buf[16], buf[17], buf[18], buf[19]]);
        if code == 0 {
            return Ok(());
        }
        return Err(err(
            "RTM_DELQDISC",
            std::io::Error::from_raw_os_error(-code),
        ));
    }
    Err(err("RTM_DELQDISC", "unexpected reply"))
}

/// Whether interface `ifname` exists in the calling thread's namespace.
pub fn interfaces_has(ifname: &str) -> bool {
    nix::net::if_::if_nametoindex(ifname).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kernel_hz_is_read_from_a_plain_or_gzipped_configuration() {
        assert_eq!(config_hz("CONFIG_HZ_250=y\nCONFIG_HZ=250\n"), Some(250));
        assert_eq!(config_hz("# CONFIG_HZ is not set\n"), None);
        // (Python's gzip, without and with a file name in the header.)
        let gz = [
            31, 139, 8, 0, 0, 0, 0, 0, 2, 3, 83, 86, 72, 206, 207, 205, 77, 205, 43, 225, 114, 246,
            247, 115, 243, 116, 143, 247, 136, 138, 55, 54, 48, 176, 173, 68, 240, 109, 129, 124,
            46, 0, 107, 242, 198, 106, 40, 0, 0, 0,
        ];
        let text = String::from_utf8(gunzip(&gz).unwrap()).unwrap();
        assert_eq!(config_hz(&text), Some(300));
        let named = [
            31, 139, 8, 8, 0, 0, 0, 0, 2, 255, 99, 111, 110, 102, 105, 103, 0, 115, 246, 247, 115,
            243, 116, 143, 247, 136, 178, 53, 52, 48, 48, 224, 2, 0, 195, 67, 110, 77, 15, 0, 0, 0,
        ];
        let text = String::from_utf8(gunzip(&named).unwrap()).unwrap();
        assert_eq!(config_hz(&text), Some(1000));
        assert_eq!(gunzip(&gz[..9]), None);
        assert_eq!(gunzip(b"CONFIG_HZ=250 and more bytes"), None);
        // This machine's own, where it ships one.
        if std::path::Path::new("/proc/config.gz").exists() {
            let hz = kernel_hz().expect("CONFIG_HZ from /proc/config.gz");
            assert!([100, 250, 300, 1000].contains(&hz), "{hz}");
        }
    }

    #[test]
    fn tick_and_initial_jiffies_are_the_kernels() {
        use pier_common::config::{initial_jiffies, tick_nsec};
        assert_eq!(tick_nsec(250), 4_000_000);
        assert_eq!(tick_nsec(300), 3_333_333);
        assert_eq!(tick_nsec(1000), 1_000_000);
        // (unsigned int)(-300 * HZ)
        assert_eq!(initial_jiffies(250), (1u64 << 32) - 75_000);
        assert_eq!(initial_jiffies(1000), (1u64 << 32) - 300_000);
    }
}
