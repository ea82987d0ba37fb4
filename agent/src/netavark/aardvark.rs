//! aardvark-dns, configured as netavark 1.4 does it, so podman's names and
//! the files its users (and netavark's suite) read are the same.
//!
//! `D` = netavark's `--config`: one file `D/aardvark-dns/<network>` per
//! DNS-enabled network, first line `<gateway>[,<gateway>…][ <dns>,…]`, then
//! one line per container `<id> <ipv4,…> <ipv6,…> <name,alias,…>[ <dns>,…]`;
//! writes under the lock `D/aardvark.lock`; aardvark-dns's pid in
//! `D/aardvark-dns/aardvark.pid`, SIGHUP after each change, started with
//! `<aardvark> --config D/aardvark-dns -p <port> run` when not running.
use std::{
    fs::{File, OpenOptions},
    io::{ErrorKind, Write},
    net::IpAddr,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use super::{Failure, NetworkOptions, Plan};

/// `NETAVARK_DNS_PORT`, else 53 (netavark's words for a bad value).
pub fn dns_port() -> Result<u16, Failure> {
    match std::env::var("NETAVARK_DNS_PORT") {
        Ok(v) => v.parse::<u16>().map_err(|_| {
            Failure::new(format!(
                "port {v} is not a valid port number: must be in range 0-65535"
            ))
        }),
        Err(_) => Ok(53),
    }
}

pub struct Aardvark {
    dir: PathBuf,
    bin: PathBuf,
    rootless: bool,
    port: u16,
}

fn join(v: &[impl ToString]) -> String {
    v.iter()
        .map(|x| x.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

fn io(e: std::io::Error) -> Failure {
    Failure::new(super::io_error(&e))
}

/// One container's line in a network's file.
pub struct Entry {
    pub network: String,
    pub gateways: Vec<IpAddr>,
    pub network_dns: Vec<IpAddr>,
    pub container_id: String,
    pub ipv4: Vec<IpAddr>,
    pub ipv6: Vec<IpAddr>,
    pub names: Vec<String>,
    pub container_dns: Vec<IpAddr>,
}

/// The entries a setup writes (its DNS-enabled networks).
pub fn entries(o: &NetworkOptions, plans: &[Plan]) -> Vec<Entry> {
    plans
        .iter()
        .filter(|p| p.dns_enabled)
        .map(|p| {
            let mut names = vec![o.container_name.clone()];
            names.extend(p.aliases.iter().cloned());
            Entry {
                network: p.name.clone(),
                gateways: p.gateways(),
                network_dns: p.network_dns_servers.clone(),
                container_id: o.container_id.clone(),
                ipv4: p.ip4().map(IpAddr::V4).into_iter().collect(),
                ipv6: p.ip6().map(IpAddr::V6).into_iter().collect(),
                names,
                container_dns: o.dns_servers.clone().unwrap_or_default(),
            }
        })
        .collect()
}

impl Aardvark {
    pub fn new(config: &Path, bin: &Path, rootless: bool) -> Result<Self, Failure> {
        Ok(Aardvark {
            dir: config.join("aardvark-dns"),
            bin: bin.to_path_buf(),
            rootless,
            port: dns_port()?,
        })
    }

    fn locked(&self) -> Result<nix::fcntl::Flock<File>, Failure> {
        let p = self.dir.join("..").join("aardvark.lock");
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&p)
            .map_err(|e| Failure::new(format!("Failed to open/create lockfile {p:?}: {e}")))?;
        nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusive).map_err(|(_, e)| {
            Failure::new(format!("Failed to acquire exclusive lock on {p:?}: {e}"))
        })
    }

    /// Append the entries (a network's file made with its header), then
    /// tell aardvark-dns, starting it if it does not run.
    pub fn commit(&self, entries: &[Entry]) -> Result<(), Failure> {
        if entries.is_empty() {
            return Ok(());
        }
        self.write(entries)?;
        self.notify(true)
    }

    /// The files' part of [`Aardvark::commit`].
    fn write(&self, entries: &[Entry]) -> Result<(), Failure> {
        match std::fs::create_dir(&self.dir) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
            Err(e) => {
                return Err(Failure::new(format!(
                    "IO error: failed to create aardvark-dns directory: {e}"
                )));
            }
        }
        {
            let _l = self.locked()?;
            for e in entries {
                let p = self.dir.join(&e.network);
                let mut f = match OpenOptions::new().write(true).create_new(true).open(&p) {
                    Ok(mut f) => {
                        let dns = if e.network_dns.is_empty() {
                            String::new()
                        } else {
                            format!(" {}", join(&e.network_dns))
                        };
                        writeln!(f, "{}{dns}", join(&e.gateways)).map_err(io)?;
                        f
                    }
                    Err(x) if x.kind() == ErrorKind::AlreadyExists => {
                        OpenOptions::new().append(true).open(&p).map_err(io)?
                    }
                    Err(x) => return Err(io(x)),
                };
                let dns = if e.container_dns.is_empty() {
                    String::new()
                } else {
                    format!(" {}", join(&e.container_dns))
                };
                // `<id> <ipv4,…> <ipv6,…> <names>`.
                writeln!(
                    f,
                    "{} {} {} {}{dns}",
                    e.container_id,
                    join(&e.ipv4),
                    join(&e.ipv6),
                    e.names.join(",")
                )
                .map_err(io)?;
            }
        }
        Ok(())
    }

    /// Remove the container's lines from its DNS-enabled networks' files
    /// (a file left with its header only goes), then SIGHUP.
    pub fn delete(&self, o: &NetworkOptions) -> Result<(), Failure> {
        let mut modified = false;
        let mut names: Vec<&String> = o.network_info.keys().collect();
        names.sort();
        for name in names {
            let n = &o.network_info[name];
            if !(n.dns_enabled && n.driver == "bridge") {
                continue;
            }
            modified = true;
            let p = self.dir.join(name);
            let text = std::fs::read_to_string(&p).map_err(io)?;
            let kept: Vec<&str> = text
                .split_terminator('\n')
                .filter(|l| !l.contains(&o.container_id))
                .collect();
            if kept.len() <= 1 {
                std::fs::remove_file(&p).map_err(io)?;
            } else {
                let mut body = kept.join("\n");
                body.push('\n');
                std::fs::write(&p, body).map_err(io)?;
            }
        }
        if modified {
            self.notify(false)?;
        }
        Ok(())
    }

    fn pid(&self) -> Option<i32> {
        std::fs::read_to_string(self.dir.join("aardvark.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    fn notify(&self, start: bool) -> Result<(), Failure> {
        if let Some(pid) = self.pid() {
            match nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGHUP,
            ) {
                Ok(()) => return Ok(()),
                Err(nix::errno::Errno::ESRCH) => {}
                Err(e) => {
                    return Err(Failure::new(format!(
                        "IO error: failed to send SIGHUP to aardvark: {e}"
                    )));
                }
            }
        }
        if !start {
            return Err(Failure::new("IO error: aardvark pid not found"));
        }
        self.start()
    }

    fn start(&self) -> Result<(), Failure> {
        let mut argv: Vec<String> = Vec::new();
        let systemd = Path::new("/run/systemd/system").exists()
            && std::env::var("PATH")
                .unwrap_or_default()
                .split(':')
                .any(|d| Path::new(d).join("systemd-run").exists());
        if systemd {
            argv.extend(["systemd-run", "-q", "--scope"].map(String::from));
            if self.rootless {
                argv.push("--user".into());
            }
        }
        argv.push(self.bin.display().to_string());
        argv.extend([
            "--config".to_string(),
            self.dir.display().to_string(),
            "-p".to_string(),
            self.port.to_string(),
            "run".to_string(),
        ]);
        tracing::debug!("start aardvark-dns: {argv:?}");
        // aardvark-dns forks and its parent returns once it serves; the
        // child keeps what it inherits, so hand it nothing of ours.
        Command::new(&argv[0])
            .args(&argv[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .output()
            .map_err(|e| {
                Failure::new(format!(
                    "IO error: Error while applying dns entries: starting {}: {e}",
                    argv[0]
                ))
            })?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str, ip: &str, names: &[&str]) -> Entry {
        Entry {
            network: "n1".into(),
            gateways: vec!["10.91.1.1".parse().unwrap()],
            network_dns: vec!["1.1.1.1".parse().unwrap()],
            container_id: id.into(),
            ipv4: vec![ip.parse().unwrap()],
            ipv6: Vec::new(),
            names: names.iter().map(|s| s.to_string()).collect(),
            container_dns: Vec::new(),
        }
    }

    #[test]
    fn files_as_netavark_writes_them() {
        let d = std::env::temp_dir().join(format!("pier-aardvark-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join("aardvark-dns")).unwrap();
        let a = Aardvark::new(&d, Path::new("/nonexistent/aardvark-dns"), false).unwrap();
        a.write(&[entry("aaa", "10.91.1.2", &["web1", "w1"])])
            .unwrap();
        a.write(&[entry("bbb", "10.91.1.3", &["web2"])]).unwrap();
        let f = d.join("aardvark-dns/n1");
        assert_eq!(
            std::fs::read_to_string(&f).unwrap(),
            "10.91.1.1 1.1.1.1\naaa 10.91.1.2  web1,w1\nbbb 10.91.1.3  web2\n"
        );
        assert!(d.join("aardvark.lock").exists());
        let opts = |id: &str| -> NetworkOptions {
            serde_json::from_value(serde_json::json!({
                "container_id": id, "container_name": "x",
                "networks": {"n1": {"interface_name": "eth0"}},
                "network_info": {"n1": {"name": "n1", "id": "1", "driver": "bridge",
                    "ipv6_enabled": false, "internal": false, "dns_enabled": true}}
            }))
            .unwrap()
        };
        // No aardvark-dns runs: the lines go, then netavark's error.
        assert_eq!(
            a.delete(&opts("aaa")).unwrap_err().error,
            "IO error: aardvark pid not found"
        );
        assert_eq!(
            std::fs::read_to_string(&f).unwrap(),
            "10.91.1.1 1.1.1.1\nbbb 10.91.1.3  web2\n"
        );
        let _ = a.delete(&opts("bbb"));
        assert!(!f.exists(), "a file with its header only goes");
        let _ = std::fs::remove_dir_all(&d);
    }
}
