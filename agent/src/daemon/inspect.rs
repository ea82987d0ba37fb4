//! Docker-shaped views of the records: `network inspect`, `inspect`, `ls`, `ps`.
use serde_json::{Value, json};

use super::{Daemon, process::Proc};
use crate::{
    api::types::{ContainerListEntry, ListHostConfig, ListNetworks, ListPort},
    error::{Result, not_found},
    state::{Container, NetMode, Network, State, mac_string},
};

pub fn network_json(st: &State, n: &Network) -> Value {
    let mut containers = serde_json::Map::new();
    for c in st.containers_on(n) {
        let e = c.endpoint_on(&n.id);
        containers.insert(
            c.id.clone(),
            json!({
                "Name": c.name,
                "EndpointID": e.map(|e| e.id.clone()).unwrap_or_default(),
                "MacAddress": e.map(|e| mac_string(&e.mac)).unwrap_or_default(),
                "IPv4Address": e.and_then(|e| e.ip.map(|ip| format!("{ip}/{}", e.prefix_len))).unwrap_or_default(),
                "IPv6Address": e.and_then(|e| e.ip6.map(|a| format!("{a}/{}", e.prefix_len6))).unwrap_or_default(),
            }),
        );
    }
    let mut config: Vec<Value> = match (n.subnet, n.gateway) {
        (Some(s), Some(g)) => {
            let mut c = json!({"Subnet": s.to_string(), "Gateway": g.to_string()});
            if let Some(r) = n.ip_range {
                c["IPRange"] = json!(r.to_string());
            }
            vec![c]
        }
        _ => vec![],
    };
    if let (Some(s), Some(g)) = (n.subnet6, n.gateway6) {
        let mut c = json!({"Subnet": s.to_string(), "Gateway": g.to_string()});
        if let Some(r) = n.ip_range6 {
            c["IPRange"] = json!(r.to_string());
        }
        config.push(c);
    }
    json!({
        "Name": n.name,
        "Id": n.id,
        "Created": n.created,
        "Scope": "local",
        "Driver": n.driver,
        "EnableIPv6": n.ipv6(),
        "IPAM": {"Driver": "default", "Options": null, "Config": config},
        "Internal": n.internal,
        "Attachable": false,
        "Ingress": false,
        "Containers": containers,
        "Options": n.options,
        "Labels": owner_labels(n.owner, &n.labels),
    })
}

/// Labels, plus `pier.owner` for what an engine manages.
fn owner_labels(
    owner: crate::state::Owner,
    labels: &std::collections::BTreeMap<String, String>,
) -> Value {
    let mut l = labels.clone();
    if owner.is_engine() {
        l.insert("pier.owner".into(), owner.as_str().into());
    }
    json!(l)
}

/// `HostConfig.PortBindings` (`served: false`: the bindings as given, no
/// address `""`) or `NetworkSettings.Ports` (`served: true`: each address
/// it is served on, `0.0.0.0` and `::` for a dual-stack one).
fn ports_json(c: &Container, served: bool) -> Value {
    let mut m = serde_json::Map::new();
    for p in &c.ports {
        let ips: Vec<String> = if served {
            c.served_host_ips(p).iter().map(|i| i.to_string()).collect()
        } else {
            vec![p.host_ip.map(|i| i.to_string()).unwrap_or_default()]
        };
        for (hp, cp) in p.pairs() {
            let key = format!("{cp}/{}", p.proto.as_str());
            for ip in &ips {
                let entry = json!({
                    "HostIp": ip,
                    "HostPort": hp.to_string(),
                });
                m.entry(key.clone())
                    .or_insert_with(|| json!([]))
                    .as_array_mut()
                    .unwrap()
                    .push(entry);
            }
        }
    }
    Value::Object(m)
}

impl Daemon {
    /// The recorded exit code, or the one the runner saw for a process that
    /// ended on its own.
    /// The file a container sees as `/etc/NAME`: its own, or in host mode
    /// the host's unless its flags gave it one.
    fn etc_path(&self, c: &Container, name: &str) -> std::path::PathBuf {
        if c.mode == NetMode::Host {
            let own = self.host_mode_etc(&c.id).join(name);
            return if own.exists() {
                own
            } else {
                std::path::Path::new("/etc").join(name)
            };
        }
        self.cfg.container_dir(&c.id).join(name)
    }

    fn exit_code_of(&self, c: &Container) -> Option<i32> {
        c.exit_code.or_else(|| {
            self.runner.exit_code(Proc {
                pid: c.pid?,
                start_time: c.pid_start?,
            })
        })
    }

    fn status_of(&self, c: &Container) -> (&'static str, bool, i32) {
        let live = match (c.pid, c.pid_start) {
            (Some(pid), Some(start_time)) => self.runner.alive(Proc { pid, start_time }),
            _ => false,
        };
        if live {
            return ("running", true, c.pid.unwrap_or(0));
        }
        if c.cmd.is_empty() {
            // A namespace that waits for exec.
            return if c.running {
                ("running", true, 0)
            } else {
                ("exited", false, 0)
            };
        }
        if c.running && c.pid.is_none() && c.exit_code.is_none() {
            return ("created", false, 0);
        }
        ("exited", false, 0)
    }

    pub fn container_json(&self, st: &State, c: &Container) -> Value {
        let (status, running, pid) = self.status_of(c);
        let mut networks = serde_json::Map::new();
        match &c.mode {
            NetMode::Bridge => {
                for e in &c.endpoints {
                    let Some(n) = st.networks.get(&e.network_id) else {
                        continue;
                    };
                    networks.insert(
                        n.name.clone(),
                        json!({
                            "NetworkID": n.id,
                            "EndpointID": e.id,
                            "Gateway": n.gateway.map(|g| g.to_string()).unwrap_or_default(),
                            "IPAddress": e.ip.map(|ip| ip.to_string()).unwrap_or_default(),
                            "IPPrefixLen": e.prefix_len,
                            "MacAddress": mac_string(&e.mac),
                            "Aliases": if e.aliases.is_empty() { Value::Null } else { json!(e.aliases) },
                            "DNSNames": if n.default { Value::Null } else { json!(super::serve::dns_names(c, e)) },
                            "IPv6Gateway": e.ip6.and(n.gateway6).map(|g| g.to_string()).unwrap_or_default(),
                            "GlobalIPv6Address": e.ip6.map(|a| a.to_string()).unwrap_or_default(),
                            "GlobalIPv6PrefixLen": if e.ip6.is_some() { e.prefix_len6 } else { 0 },
                        }),
                    );
                }
            }
            NetMode::Host | NetMode::None => {
                let driver = if c.mode == NetMode::Host {
                    "host"
                } else {
                    "null"
                };
                if let Some(n) = st.networks.values().find(|n| n.driver == driver) {
                    networks.insert(
                        n.name.clone(),
                        json!({
                            "NetworkID": n.id,
                            "EndpointID": "",
                            "Gateway": "",
                            "IPAddress": "",
                            "IPPrefixLen": 0,
                            "MacAddress": "",
                            "Aliases": null,
                            "IPv6Gateway": "",
                            "GlobalIPv6Address": "",
                            "GlobalIPv6PrefixLen": 0,
                        }),
                    );
                }
            }
            NetMode::Container(_) => {}
        }
        let first = c
            .endpoints
            .first()
            .and_then(|e| st.networks.get(&e.network_id).map(|n| (e, n)));
        let network_mode = match &c.mode {
            NetMode::Container(o) => format!("container:{o}"),
            _ => c.network_mode.clone(),
        };
        json!({
            "Id": c.id,
            "Created": c.created,
            "Name": format!("/{}", c.name),
            "Path": c.cmd.first().cloned().unwrap_or_default(),
            "Args": c.cmd.iter().skip(1).collect::<Vec<_>>(),
            "State": {
                "Status": status,
                "Running": running,
                "Pid": pid,
                "ExitCode": self.exit_code_of(c).unwrap_or(0),
            },
            "LogPath": self.cfg.container_dir(&c.id).join("log"),
            "HostnamePath": self.etc_path(c, "hostname"),
            "HostsPath": self.etc_path(c, "hosts"),
            "ResolvConfPath": self.etc_path(c, "resolv.conf"),
            "Config": {
                "Hostname": c.hostname,
                "Cmd": c.cmd,
                "Env": c.env,
                "Labels": owner_labels(c.owner, &Default::default()),
                "ExposedPorts": c
                    .exposed
                    .iter()
                    .map(|(p, proto)| (format!("{p}/{}", proto.as_str()), json!({})))
                    .collect::<serde_json::Map<_, _>>(),
            },
            "HostConfig": {
                "NetworkMode": network_mode,
                "AutoRemove": c.auto_remove,
                "PortBindings": ports_json(c, false),
                "PublishAllow": c.publish_allow.iter().map(|n| n.to_string()).collect::<Vec<_>>(),
                "Dns": c.dns.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
                "DnsSearch": c.dns_search,
                "DnsOptions": c.dns_options,
                "ExtraHosts": c.extra_hosts.iter().map(|(n, a)| format!("{n}:{a}")).collect::<Vec<_>>(),
                "Links": c.links.iter().map(|l| format!("/{}:/{}/{}", l.name, c.name, l.alias.as_deref().unwrap_or(&l.name))).collect::<Vec<_>>(),
            },
            "NetworkSettings": {
                "SandboxKey": c.netns.as_ref().map(|p| p.display().to_string()).unwrap_or_default(),
                "Ports": ports_json(c, true),
                // pier's: the source rules of each published host port
                // (`pier port` shows the same); a port not listed has none.
                "PublishPolicy": c
                    .ports
                    .iter()
                    .flat_map(|p| p.pairs().map(move |(hp, _)| (hp, p.proto)))
                    .filter_map(|(hp, proto)| {
                        let rules = super::policy::port_policy_text(st, c, hp, proto);
                        (!rules.is_empty()).then(|| (format!("{hp}/{}", proto.as_str()), json!(rules)))
                    })
                    .collect::<serde_json::Map<_, _>>(),
                "Gateway": first.and_then(|(_, n)| n.gateway).map(|g| g.to_string()).unwrap_or_default(),
                "IPAddress": first.and_then(|(e, _)| e.ip).map(|ip| ip.to_string()).unwrap_or_default(),
                "IPPrefixLen": first.map(|(e, _)| e.prefix_len).unwrap_or(0),
                "MacAddress": first.map(|(e, _)| mac_string(&e.mac)).unwrap_or_default(),
                "GlobalIPv6Address": first.and_then(|(e, _)| e.ip6).map(|a| a.to_string()).unwrap_or_default(),
                "GlobalIPv6PrefixLen": first.filter(|(e, _)| e.ip6.is_some()).map(|(e, _)| e.prefix_len6).unwrap_or(0),
                "IPv6Gateway": first.filter(|(e, _)| e.ip6.is_some()).and_then(|(_, n)| n.gateway6).map(|g| g.to_string()).unwrap_or_default(),
                "Networks": networks,
            },
        })
    }

    /// One entry of `GET /containers/json`, in Docker's shape.
    pub fn container_entry(&self, st: &State, c: &Container) -> ContainerListEntry {
        let (status, running, _) = self.status_of(c);
        let since = |t: Option<u64>| {
            t.map(|t| {
                crate::state::model::human_duration(crate::state::model::now_ms().saturating_sub(t))
            })
        };
        let words = match (status, self.exit_code_of(c)) {
            // The code `inspect` shows (0 when none was recorded).
            ("exited", code) => match since(c.finished_ms) {
                Some(d) => format!("Exited ({}) {d} ago", code.unwrap_or(0)),
                None => format!("Exited ({})", code.unwrap_or(0)),
            },
            ("running", _) => match since(c.started_ms) {
                Some(d) => format!("Up {d}"),
                None => "Up".into(),
            },
            ("created", _) => "Created".into(),
            (s, _) => s.to_string(),
        };
        // As Docker: only a running container shows its published ports,
        // one entry per port.
        let bound = if running { &c.ports[..] } else { &[] };
        let ports = bound
            .iter()
            .flat_map(|p| {
                c.served_host_ips(p).into_iter().flat_map(move |ip| {
                    p.pairs().map(move |(h, cp)| ListPort {
                        ip: ip.to_string(),
                        private_port: cp,
                        public_port: h,
                        proto: p.proto.as_str().into(),
                    })
                })
            })
            .collect();
        let mut networks = serde_json::Map::new();
        match &c.mode {
            NetMode::Bridge => {
                for e in &c.endpoints {
                    if let Some(n) = st.networks.get(&e.network_id) {
                        networks.insert(
                            n.name.clone(),
                            json!({
                                "NetworkID": n.id,
                                "EndpointID": e.id,
                                "Gateway": n.gateway.map(|g| g.to_string()).unwrap_or_default(),
                                "IPAddress": e.ip.map(|ip| ip.to_string()).unwrap_or_default(),
                                "IPPrefixLen": e.prefix_len,
                                "MacAddress": mac_string(&e.mac),
                            }),
                        );
                    }
                }
            }
            NetMode::Host | NetMode::None => {
                let (name, driver) = if c.mode == NetMode::Host {
                    ("host", "host")
                } else {
                    ("none", "null")
                };
                let id = st
                    .networks
                    .values()
                    .find(|n| n.driver == driver)
                    .map(|n| n.id.clone())
                    .unwrap_or_default();
                networks.insert(name.into(), json!({ "NetworkID": id }));
            }
            NetMode::Container(_) => {}
        }
        let network_mode = match &c.mode {
            NetMode::Container(o) => format!(
                "container:{}",
                st.containers.get(o).map(|o| o.name.as_str()).unwrap_or(o)
            ),
            _ => c.network_mode.clone(),
        };
        let mut labels = std::collections::BTreeMap::new();
        if c.owner.is_engine() {
            labels.insert("pier.owner".to_string(), c.owner.as_str().to_string());
        }
        ContainerListEntry {
            id: c.id.clone(),
            names: vec![format!("/{}", c.name)],
            image: String::new(),
            image_id: String::new(),
            command: c.cmd.join(" "),
            created: crate::state::model::rfc3339_secs(&c.created).unwrap_or(0),
            ports,
            labels,
            state: status.into(),
            status: words,
            host_config: ListHostConfig { network_mode },
            network_settings: ListNetworks { networks },
            mounts: Vec::new(),
        }
    }

    pub fn inspect_network(&self, key: &str) -> Result<Value> {
        let st = self.snapshot();
        let n = st
            .find_network(key)
            .ok_or_else(|| not_found(format!("network {key} not found")))?;
        Ok(network_json(&st, n))
    }

    pub fn inspect_container(&self, key: &str) -> Result<Value> {
        let st = self.snapshot();
        let c = st
            .find_container(key)
            .ok_or_else(|| not_found(format!("No such container: {key}")))?;
        Ok(self.container_json(&st, c))
    }

    /// `GET /networks`: Docker's network objects, by name, filtered.
    pub fn list_networks_json(
        &self,
        filters: &std::collections::BTreeMap<String, Vec<String>>,
    ) -> Result<Vec<Value>> {
        let st = self.snapshot();
        let mut v: Vec<_> = st.networks.values().collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        let mut out = Vec::new();
        for n in v {
            if crate::api::compat::network_matches(&st, n, filters)? {
                out.push(network_json(&st, n));
            }
        }
        Ok(out)
    }

    pub fn list_containers(&self, all: bool) -> Vec<ContainerListEntry> {
        self.list_containers_filtered(all, &Default::default())
            .unwrap_or_default()
    }

    /// `GET /containers/json`: newest first; stopped ones with `all` (or a
    /// `status` filter); Docker's filters.
    pub fn list_containers_filtered(
        &self,
        all: bool,
        filters: &std::collections::BTreeMap<String, Vec<String>>,
    ) -> Result<Vec<ContainerListEntry>> {
        let st = self.snapshot();
        let all = all || filters.get("status").is_some_and(|v| !v.is_empty());
        let mut v: Vec<_> = st.containers.values().collect();
        v.sort_by(|a, b| b.created.cmp(&a.created));
        let mut out = Vec::new();
        for c in v {
            let e = self.container_entry(&st, c);
            if !(all || e.state == "running") {
                continue;
            }
            if crate::api::compat::container_matches(&st, c, &e.state, filters)? {
                out.push(e);
            }
        }
        Ok(out)
    }
}
