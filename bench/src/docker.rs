//! The real Docker peers: Debian's dockerd 20.10 started inside the bench's
//! own host namespace, with its own data, exec and config dirs, API socket,
//! pidfile and cgroup parent, stopped by PID. Its image is imported from a
//! rootfs the bench assembles (busybox-static, pier-echo, iperf3 and their
//! libraries): no registry.
//!
//! - `docker`: Docker's own bridge driver (`docker0`, its iptables rules,
//!   one docker-proxy per published port and family).
//! - `docker+pier`: `--iptables=false --ip-forward=false --bridge=none`,
//!   the network made by pier's remote driver (`pier agent --docker-plugin
//!   SOCKET`; dockerd finds it through `/etc/docker/plugins/pier.spec`,
//!   which only its private mount namespace sees).
use std::{
    fs::File,
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};

use crate::{
    peers::{Peer, inspect_ip, log_reason, start_pier_agent},
    results::Dataplane,
    world::{self, Ctx, Targets, World, cmd_in, run},
};

pub const DOCKERD: &str = "/usr/sbin/dockerd";
const IMAGE: &str = "pier-bench:1";
/// The network of `docker+pier` (beside pier's own default bridge).
const PIER_NET: &str = "pbnet";
const PIER_SUBNET: &str = "172.18.0.0/16";
const PIER_GATEWAY: &str = "172.18.0.1";
const READY: Duration = Duration::from_secs(30);

/// The cgroup parent of a run's containers (found again by a later run's
/// clean-up if this one crashed).
pub fn cgroup_parent(prefix: &str) -> String {
    format!("{prefix}-docker")
}

pub struct Docker {
    pier_driver: bool,
    w: Option<World>,
    /// DOCKER_HOST socket.
    sock: PathBuf,
    config: PathBuf,
    dockerd_pid: Option<u32>,
    log: PathBuf,
    network: String,
    /// pier's agent (docker+pier).
    agent_pid: Option<u32>,
    bpffs: PathBuf,
    idle: usize,
    cpu: usize,
    echo_in_image: String,
}

impl Docker {
    pub fn new(ctx: &Ctx, pier_driver: bool) -> anyhow::Result<Self> {
        for p in [DOCKERD, crate::peers::DOCKER_PROXY, "/usr/bin/busybox"] {
            anyhow::ensure!(
                Path::new(p).exists(),
                "{p} is missing (Debian's docker.io and busybox-static; `cargo xtask setup` installs them)"
            );
        }
        which("docker").context("the docker CLI is missing (Debian's docker.io)")?;
        if pier_driver {
            let help =
                run(Command::new(&ctx.bins.pier).args(["agent", "--help"])).unwrap_or_default();
            anyhow::ensure!(
                help.contains("--docker-plugin"),
                "this pier has no Docker network driver (`pier agent --docker-plugin`)"
            );
        }
        Ok(Docker {
            pier_driver,
            w: None,
            sock: PathBuf::new(),
            config: PathBuf::new(),
            dockerd_pid: None,
            log: PathBuf::new(),
            network: String::new(),
            agent_pid: None,
            bpffs: PathBuf::new(),
            idle: 0,
            cpu: ctx.cpu,
            echo_in_image: "/pier-echo".into(),
        })
    }

    fn docker(&self, args: &[&str]) -> anyhow::Result<String> {
        run(Command::new("docker")
            .env("DOCKER_HOST", format!("unix://{}", self.sock.display()))
            .env("DOCKER_CONFIG", &self.config)
            .args(args))
    }

    fn dockerd_log_tail(&self) -> String {
        log_reason(&std::fs::read_to_string(&self.log).unwrap_or_default())
    }

    /// Start dockerd in the host namespace, in a mount namespace of its own
    /// where `/etc/docker` is an empty tmpfs (no daemon.json, key.json goes
    /// there, plugin specs are the bench's).
    fn start_dockerd(
        &mut self,
        ctx: &Ctx,
        w: &mut World,
        plugin: Option<&Path>,
    ) -> anyhow::Result<()> {
        let d = w.dir.join("d");
        std::fs::create_dir_all(&d)?;
        self.sock = d.join("docker.sock");
        self.config = d.join("cli");
        self.log = w.dir.join("dockerd.log");
        let mut script = String::from(
            "set -e; mount -t tmpfs -o mode=0755 pier-bench /etc/docker; mkdir -p /etc/docker/plugins; ",
        );
        if let Some(p) = plugin {
            script.push_str(&format!(
                "echo 'unix://{}' > /etc/docker/plugins/pier.spec; ",
                p.display()
            ));
        }
        script.push_str("exec \"$@\"");
        let mut c = cmd_in(&w.host, "unshare");
        c.args([
            "--mount",
            "--propagation",
            "private",
            "--",
            "sh",
            "-c",
            &script,
            "sh",
        ])
        .arg(DOCKERD)
        .arg("--data-root")
        .arg(d.join("root"))
        .arg("--exec-root")
        .arg(d.join("x"))
        .arg("--pidfile")
        .arg(d.join("dockerd.pid"))
        .arg("-H")
        .arg(format!("unix://{}", self.sock.display()))
        .arg("--cgroup-parent")
        .arg(cgroup_parent(&ctx.prefix))
        .args(["--storage-driver", "overlay2", "--log-level", "warn"]);
        if self.pier_driver {
            c.args(["--iptables=false", "--ip-forward=false", "--bridge=none"]);
        }
        let log = File::create(&self.log)?;
        c.stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0);
        let mut child = c.spawn().context("starting dockerd")?;
        // nsenter, unshare and sh exec: the child's pid is dockerd's.
        self.dockerd_pid = Some(child.id());
        let deadline = Instant::now() + READY;
        loop {
            if let Some(st) = child.try_wait()? {
                bail!("dockerd exited ({st}): {}", self.dockerd_log_tail());
            }
            if self.sock.exists() && self.docker(&["version"]).is_ok() {
                break;
            }
            if Instant::now() > deadline {
                w.adopt(child);
                bail!(
                    "dockerd did not serve in {} s: {}",
                    READY.as_secs(),
                    self.dockerd_log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        w.adopt(child);
        Ok(())
    }

    /// The image: busybox-static, pier-echo and iperf3 with their libraries.
    fn import_image(&mut self, ctx: &Ctx, w: &World) -> anyhow::Result<()> {
        let root = w.dir.join("rootfs");
        let bin = root.join("bin");
        std::fs::create_dir_all(&bin)?;
        std::fs::copy("/usr/bin/busybox", bin.join("busybox"))?;
        for a in ["sh", "sleep", "cat", "ls", "ip", "nc"] {
            std::os::unix::fs::symlink("busybox", bin.join(a))?;
        }
        std::fs::copy(&ctx.bins.echo, root.join("pier-echo"))?;
        let iperf = which("iperf3").context("iperf3 is missing")?;
        std::fs::copy(&iperf, bin.join("iperf3"))?;
        for exe in [ctx.bins.echo.clone(), iperf] {
            for lib in libraries(&exe)? {
                let dst = root.join(lib.strip_prefix("/").unwrap_or(&lib));
                if !dst.exists() {
                    std::fs::create_dir_all(dst.parent().unwrap())?;
                    std::fs::copy(&lib, &dst)
                        .with_context(|| format!("copying {}", lib.display()))?;
                }
            }
        }
        for d in ["tmp", "etc", "proc", "sys", "dev"] {
            std::fs::create_dir_all(root.join(d))?;
        }
        let tar = w.dir.join("rootfs.tar");
        run(Command::new("tar")
            .arg("-C")
            .arg(&root)
            .arg("-cf")
            .arg(&tar)
            .arg("."))?;
        self.docker(&["import", &tar.to_string_lossy(), IMAGE])?;
        Ok(())
    }

    fn server_args(&self) -> Vec<String> {
        let mut a: Vec<String> = ["run", "-d", "--name", "srv", "--network", &self.network]
            .map(String::from)
            .to_vec();
        for p in ["8081:8080", "9001:9000/udp", "5202:5201"] {
            a.push("-p".into());
            a.push(p.into());
        }
        a.extend(
            [
                "--sysctl",
                "net.ipv4.tcp_max_tw_buckets=0",
                IMAGE,
                "/bin/sh",
                "-c",
            ]
            .map(String::from),
        );
        a.push(format!(
            "iperf3 -s -p {} -A {cpu} >/dev/null 2>&1 & exec {} --tcp {} --udp {} --cpu {cpu}",
            world::IPERF,
            self.echo_in_image,
            world::ECHO_TCP,
            world::ECHO_UDP,
            cpu = self.cpu
        ));
        a
    }

    fn stop(&mut self) {
        if self.dockerd_pid.is_none() {
            return;
        }
        // The containers first (a `docker rm -f` each would take about 0.3 s
        // apiece): every process under this dockerd's cgroup parent.
        crate::cleanup::kill_cgroup(&cgroup_parent_of(&self.sock));
        if let Some(pid) = self.dockerd_pid.take() {
            let p = nix::unistd::Pid::from_raw(pid as i32);
            let _ = nix::sys::signal::kill(p, nix::sys::signal::Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(15);
            while Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < deadline {
                // Reaped by the World (adopted child) at drop; a zombie counts as gone.
                if std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .map(|s| s.contains(") Z"))
                    .unwrap_or(true)
                {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = nix::sys::signal::kill(p, nix::sys::signal::Signal::SIGKILL);
        }
        crate::cleanup::kill_cgroup(&cgroup_parent_of(&self.sock));
    }
}

/// The cgroup parent of the dockerd that serves `sock` (from the run's prefix
/// in its path).
fn cgroup_parent_of(sock: &Path) -> String {
    let s = sock.to_string_lossy();
    let prefix = s
        .split('/')
        .find_map(|c| c.strip_prefix("pier-bench-"))
        .unwrap_or("pb0");
    cgroup_parent(prefix)
}

impl Drop for Docker {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Peer for Docker {
    fn dataplane(&self) -> Dataplane {
        if self.pier_driver {
            Dataplane::DockerPier
        } else {
            Dataplane::Docker
        }
    }

    fn build(&mut self, ctx: &Ctx) -> anyhow::Result<Targets> {
        let tag = if self.pier_driver {
            "docker-pier"
        } else {
            "docker"
        };
        let mut w = World::new(ctx, tag)?;
        let r = (|| {
            let plugin = if self.pier_driver {
                let a = start_pier_agent(ctx, &mut w, &["--docker-plugin".into()], true)?;
                self.agent_pid = Some(a.pid);
                self.bpffs = a.bpffs;
                Some(a.plugin.expect("asked for a plugin socket"))
            } else {
                None
            };
            self.start_dockerd(ctx, &mut w, plugin.as_deref())?;
            self.import_image(ctx, &w)?;
            if self.pier_driver {
                self.network = PIER_NET.into();
                self.docker(&[
                    "network",
                    "create",
                    "-d",
                    "pier",
                    "--subnet",
                    PIER_SUBNET,
                    "--gateway",
                    PIER_GATEWAY,
                    PIER_NET,
                ])?;
            } else {
                self.network = "bridge".into();
                // As for the other netfilter peers: TIME_WAIT entries 1 s.
                w.sysctl(
                    &w.host,
                    "net.netfilter.nf_conntrack_tcp_timeout_time_wait",
                    "1",
                )?;
            }
            let args = self.server_args();
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            self.docker(&args)?;
            w.wait_tcp(Targets::published().tcp, READY)
                .with_context(|| {
                    let ip = self
                        .docker(&["inspect", "srv"])
                        .ok()
                        .and_then(|j| inspect_ip(&j));
                    format!("the published port of container srv (address {ip:?})")
                })
        })();
        self.w = Some(w);
        r?;
        Ok(Targets::published())
    }

    fn world(&self) -> &World {
        self.w.as_ref().expect("built")
    }

    /// Docker's fillers would be more containers; the port figures measure
    /// the published port with the bench's own container only.
    fn set_other_ports(&mut self, _: &Ctx, _: usize) -> anyhow::Result<Duration> {
        Ok(Duration::ZERO)
    }

    fn other_ports_limit(&self, n: usize) -> Option<String> {
        (n > 1).then(|| {
            "skipped: the Docker peers measure other published ports only as containers \
             (the container axis)"
                .to_string()
        })
    }

    fn publish_1000(&mut self, _: &Ctx, _: usize) -> anyhow::Result<Option<Duration>> {
        Ok(None)
    }

    fn create_remove(&mut self, _: &Ctx, _: usize) -> anyhow::Result<Option<Duration>> {
        Ok(None)
    }

    fn rule_count(&self) -> anyhow::Result<Option<usize>> {
        let out = run(&mut cmd_in(&self.world().host, "iptables-save"))?;
        Ok(Some(crate::iptables::rule_count(&out)))
    }

    fn rss_mib(&self) -> anyhow::Result<Option<f64>> {
        Ok(None)
    }

    fn set_containers(&mut self, _: &Ctx, n: usize) -> anyhow::Result<Option<Duration>> {
        let t = Instant::now();
        while self.idle + 1 < n {
            let name = format!("idle{}", self.idle);
            let net = self.network.clone();
            self.docker(&[
                "run",
                "-d",
                "--name",
                &name,
                "--network",
                &net,
                IMAGE,
                "sleep",
                "1000000",
            ])?;
            self.idle += 1;
        }
        Ok(Some(t.elapsed()))
    }

    fn run_rm(&mut self, _: &Ctx, i: usize) -> anyhow::Result<Option<(Duration, Duration)>> {
        let name = format!("ax{i}");
        let net = self.network.clone();
        let t = Instant::now();
        self.docker(&[
            "run",
            "-d",
            "--name",
            &name,
            "--network",
            &net,
            IMAGE,
            "sleep",
            "1000000",
        ])?;
        let created = t.elapsed();
        let t = Instant::now();
        self.docker(&["rm", "-f", &name])?;
        Ok(Some((created, t.elapsed())))
    }

    fn pier_bpffs(&self) -> Option<PathBuf> {
        self.pier_driver.then(|| self.bpffs.clone())
    }
}

/// The shared libraries `exe` loads (and the loader), from `ldd`.
fn libraries(exe: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let out = run(Command::new("ldd").arg(exe))?;
    Ok(out
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            let path = match l.split_once("=>") {
                Some((_, rest)) => rest.split_whitespace().next()?,
                None => l.split_whitespace().next()?,
            };
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect())
}

fn which(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(tool))
            .find(|p| p.exists())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_parent_from_the_socket_path() {
        assert_eq!(
            cgroup_parent_of(Path::new("/tmp/pier-bench-pb42/docker/d/docker.sock")),
            "pb42-docker"
        );
    }
}
