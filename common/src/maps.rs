//! Map names (at most 15 bytes, the kernel's limit) and sizes.
//!
//! The maps in [`PINNED`] live under the agent's bpffs directory and outlive an
//! agent restart; the others are per load.

/// Per-CPU packet/byte counters of the smoke-test program, indexed by [`crate::metrics::CounterIdx`].
pub const SMOKE_COUNTERS: &str = "SMOKE_COUNTERS";
/// Number of slots in [`SMOKE_COUNTERS`].
pub const SMOKE_COUNTERS_LEN: u32 = 4;

/// Published ports: [`crate::nat::PortKey`] → [`crate::nat::PortVal`]. Pinned.
pub const PORTS: &str = "PIER_PORTS";
pub const PORTS_LEN: u32 = 65536;
/// Published backends: [`crate::nat::PortKey`] of the container side
/// (address, port, proto) → the host side's `PortKey`. Lets a reply whose
/// conntrack entry was evicted still leave with the published address. Pinned.
pub const BACKENDS: &str = "PIER_BACKENDS";
/// Per published port counters: a per-CPU array of [`crate::metrics::Counter`]
/// indexed by the port's `crate::nat::PortVal::slot` ([`PORTS_LEN`] slots).
/// Pinned.
pub const PORT_STATS: &str = "PIER_PORT_STATS";
/// Denied packets per published port: [`crate::nat::PortKey`] → per-CPU
/// [`crate::metrics::Counter`] (source policy, `DropReason::PolicyDenied`). Pinned.
pub const PORT_DROPS: &str = "PIER_PORT_DROPS";
/// Source policy of published ports: LPM trie of [`crate::policy::PolicyKey`]
/// → [`crate::policy::PolicyVal`]. Pinned.
pub const POLICY: &str = "PIER_POLICY";
pub const POLICY_LEN: u32 = 65536;
/// Container interfaces: container IPv4 (`_be`) → [`crate::endpoint::EndpointVal`]. Pinned.
pub const ENDPOINTS: &str = "PIER_ENDPOINTS";
pub const ENDPOINTS_LEN: u32 = 16384;
/// Networks: network id → [`crate::endpoint::NetworkVal`]. Pinned.
pub const NETWORKS: &str = "PIER_NETWORKS";
pub const NETWORKS_LEN: u32 = 1024;
/// Subnets of the networks: LPM trie of IPv4 prefixes (`_be`) → network id. Pinned.
pub const SUBNETS: &str = "PIER_SUBNETS";
/// The host's own IPv4 addresses (`_be`) → 1. Pinned.
pub const HOST_ADDRS: &str = "PIER_HOST_ADDRS";
pub const HOST_ADDRS_LEN: u32 = 256;
/// One slot: the uplink masquerade leaves by ([`crate::endpoint::UplinkVal`]). Pinned.
pub const UPLINK: &str = "PIER_UPLINK";
/// Every `--uplink` that exists: ifindex → [`crate::endpoint::UplinkVal`] (its
/// first IPv4 address). Masquerade leaves by the uplink its route picks
/// (`bpf_fib_lookup`). Pinned.
pub const UPLINKS: &str = "PIER_UPLINKS";
pub const UPLINKS_LEN: u32 = 64;
/// Every uplink with a global IPv6 address: ifindex →
/// [`crate::nat6::UplinkVal6`] (the route's uplink must be one). Pinned.
pub const UPLINKS6: &str = "PIER_UPLINKS6";
/// Container interfaces by IPv6 address: [`crate::endpoint::Addr6`] →
/// [`crate::endpoint::EndpointVal`]. Pinned.
pub const ENDPOINTS6: &str = "PIER_ENDPOINTS6";
/// IPv6 subnets of the networks: LPM trie of [`crate::endpoint::Addr6`]
/// prefixes → network id. Pinned.
pub const SUBNETS6: &str = "PIER_SUBNETS6";
/// The host's own IPv6 addresses → 1. Pinned.
pub const HOST_ADDRS6: &str = "PIER_HOST_ADDR6";
/// Host-side veths: ifindex → [`crate::endpoint::VethVal`]. Pinned.
pub const VETHS: &str = "PIER_VETHS";
/// Published-connection tracking, keyed by the reply direction
/// ([`crate::ct::FlowKey`] → [`crate::ct::CtVal`]). LRU, pinned.
pub const CT: &str = "PIER_CT";
pub const CT_LEN: u32 = 65536;
/// Masquerade, outbound: container flow → allocated (address, port). A plain
/// hash, not LRU ([`SNAT_FLAGS`]), pinned: an LRU evicts live flows'
/// entries before it is full; this one refuses a new flow when full
/// (`DropReason::NatExhausted`, counted) and the agent's conntrack gc
/// retires expired and closed flows.
pub const SNAT_FWD: &str = "PIER_SNAT_FWD";
/// Masquerade, inbound: reply flow → container (address, port). Hash as
/// [`SNAT_FWD`], pinned.
pub const SNAT_REV: &str = "PIER_SNAT_REV";
/// Entries of each `PIER_SNAT_*` map (IPv6 too): room for every port of the
/// pool towards one peer (64 512) twice over, so closing flows awaiting gc
/// do not crowd out live ones.
pub const SNAT_LEN: u32 = 131072;
/// Map flags of the `PIER_SNAT_*` maps: `BPF_F_NO_PREALLOC` (memory for the
/// entries present only; a freed entry is reused after an RCU grace period,
/// never under a reader's pointer).
pub const SNAT_FLAGS: u32 = 1;
/// Socket-hook translations: [`crate::nat::SockKey`] → [`crate::nat::SockVal`]. LRU, pinned.
pub const SOCK_NAT: &str = "PIER_SOCK_NAT";
pub const SOCK_NAT_LEN: u32 = 65536;
/// IPv6 published ports: [`crate::nat6::PortKey6`] → [`crate::nat6::PortVal6`]. Pinned.
pub const PORTS6: &str = "PIER_PORTS6";
/// IPv6 published backends: container side [`crate::nat6::PortKey6`] → the
/// host side's (a reply whose conntrack entry is gone). Pinned.
pub const BACKENDS6: &str = "PIER_BACKENDS6";
/// Per IPv6 published port counters: a per-CPU array of
/// [`crate::metrics::Counter`] indexed by `crate::nat6::PortVal6::slot`
/// ([`PORTS_LEN`] slots). Pinned.
pub const PORT_STATS6: &str = "PIER_PORT_STAT6";
/// Per-CPU packets the source policy dropped, per IPv6 published port
/// (`PortKey6`; entries made by the agent). Pinned.
pub const PORT_DROPS6: &str = "PIER_PORT_DROP6";
/// IPv6 gateways of the networks: network id → [`crate::endpoint::Addr6`]
/// (the hairpin source of a container on its own published port). Pinned.
pub const NETWORKS6: &str = "PIER_NETWORKS6";
/// One slot: the IPv6 uplink masquerade leaves by ([`crate::nat6::UplinkVal6`]). Pinned.
pub const UPLINK6: &str = "PIER_UPLINK6";
/// IPv6 published-connection tracking, keyed by the reply direction
/// ([`crate::nat6::FlowKey6`] → [`crate::nat6::CtVal6`]). LRU, pinned.
pub const CT6: &str = "PIER_CT6";
/// IPv6 masquerade, outbound: container flow → [`crate::nat6::NatVal6`].
/// Hash as [`SNAT_FWD`] ([`SNAT_LEN`], [`SNAT_FLAGS`]), pinned.
pub const SNAT_FWD6: &str = "PIER_SNAT_FWD6";
/// IPv6 masquerade, inbound: reply flow → container (address, port). Hash
/// as [`SNAT_FWD`], pinned.
pub const SNAT_REV6: &str = "PIER_SNAT_REV6";
/// IPv6 socket-hook translations: [`crate::nat6::SockKey6`] → [`crate::nat6::SockVal6`]. LRU, pinned.
pub const SOCK_NAT6: &str = "PIER_SOCK_NAT6";
/// Fragments of translated datagrams: [`crate::frag::FragKey`] →
/// [`crate::frag::FragVal`], written for each first fragment. LRU, per load
/// (not pinned: fragments live milliseconds).
pub const FRAGS: &str = "PIER_FRAGS";
pub const FRAGS_LEN: u32 = 8192;
/// IPv6 fragments of translated datagrams: [`crate::frag::FragKey6`] →
/// [`crate::frag::FragVal6`]. LRU, per load, [`FRAGS_LEN`] entries.
pub const FRAGS6: &str = "PIER_FRAGS6";
/// Per-CPU drop counters indexed by [`crate::drop::DropReason`]. Pinned.
pub const DROPS: &str = "PIER_DROPS";
pub const DROPS_LEN: u32 = 32;

/// One slot: `PORTS_F_*` of the whole `PIER_PORTS` table, written by the
/// agent at each sync. Per load (0, the safe default, until the first sync).
pub const PORT_CFG: &str = "PIER_PORT_CFG";
/// `PORT_CFG` bit: no port is bound to one host address (only to all of
/// them), so a lookup asks the all-addresses key alone.
pub const PORTS_F_WILD_ONLY: u32 = 1;

/// Container endpoints by veth ifindex: an array of
/// [`crate::endpoint::VethEp4`] (ifindex below [`IF_PKTS_LEN`]), copies of
/// `PIER_ENDPOINTS` entries. Per load (all zero until the first sync: the
/// hash is asked).
pub const VETH_EP4: &str = "PIER_VETH_EP4";

/// One slot: a [`crate::nat::PortBits`] of the destination ports no IPv4
/// port publishes (a packet to one skips the `PIER_PORTS` lookup), written
/// by the agent at each sync. Per load (all zero, the safe default: every
/// port may be published, until the first sync).
pub const PORT_UNPUB: &str = "PIER_PORT_UNPUB";

/// Monitor events: a ring buffer of [`crate::event::Event`], written only
/// while `PIER_MON_CFG` says a monitor is attached. Per load.
pub const EVENTS: &str = "PIER_EVENTS";
/// Default size of [`EVENTS`] in bytes (the agent may set another power of two).
pub const EVENTS_BYTES: u32 = 256 * 1024;
/// One slot: `crate::event::MON_ON` while a monitor is attached. Per load.
pub const MON_CFG: &str = "PIER_MON_CFG";
/// Per-CPU u64 counters indexed by `crate::event::LOST_EVENTS` etc. Pinned.
pub const KCOUNTERS: &str = "PIER_KCOUNTERS";
/// Per-interface counters: ifindex → per-CPU [`crate::event::IfStats`]
/// (entries made by the agent for each veth and uplink). Pinned.
pub const IF_STATS: &str = "PIER_IF_STATS";
pub const IF_STATS_LEN: u32 = 16384;
/// Per-interface packet counters by ifindex: a per-CPU array of
/// [`crate::event::IfPkts`] (ifindex below [`IF_PKTS_LEN`]; others count in
/// [`IF_STATS`]). Pinned.
pub const IF_PKTS: &str = "PIER_IF_PKTS";
pub const IF_PKTS_LEN: u32 = 4096;

/// The maps the agent pins under its bpffs directory (they outlive a restart).
pub const PINNED: [&str; 34] = [
    PORT_DROPS6,
    UPLINKS,
    UPLINKS6,
    PORTS,
    BACKENDS,
    PORT_STATS,
    ENDPOINTS,
    NETWORKS,
    SUBNETS,
    HOST_ADDRS,
    UPLINK,
    CT,
    SNAT_FWD,
    SNAT_REV,
    SOCK_NAT,
    DROPS,
    ENDPOINTS6,
    SUBNETS6,
    HOST_ADDRS6,
    VETHS,
    PORT_DROPS,
    POLICY,
    PORTS6,
    BACKENDS6,
    PORT_STATS6,
    NETWORKS6,
    UPLINK6,
    CT6,
    SNAT_FWD6,
    SNAT_REV6,
    SOCK_NAT6,
    KCOUNTERS,
    IF_STATS,
    IF_PKTS,
];

const _: () = {
    let names = [
        SMOKE_COUNTERS,
        PORTS,
        BACKENDS,
        PORT_STATS,
        ENDPOINTS,
        NETWORKS,
        SUBNETS,
        HOST_ADDRS,
        UPLINK,
        UPLINKS,
        UPLINKS6,
        CT,
        SNAT_FWD,
        SNAT_REV,
        SOCK_NAT,
        FRAGS,
        FRAGS6,
        DROPS,
        ENDPOINTS6,
        SUBNETS6,
        HOST_ADDRS6,
        VETHS,
        PORT_DROPS,
        POLICY,
        PORTS6,
        BACKENDS6,
        PORT_STATS6,
        PORT_DROPS6,
        NETWORKS6,
        UPLINK6,
        CT6,
        SNAT_FWD6,
        SNAT_REV6,
        SOCK_NAT6,
        EVENTS,
        MON_CFG,
        PORT_CFG,
        PORT_UNPUB,
        VETH_EP4,
        KCOUNTERS,
        IF_STATS,
        IF_PKTS,
    ];
    let mut i = 0;
    while i < names.len() {
        assert!(names[i].len() <= 15);
        i += 1;
    }
};
