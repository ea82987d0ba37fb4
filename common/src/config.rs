//! Load-time globals (set with `EbpfLoader::override_global`) and constants the
//! kernel and user side agree on.

/// Global: the network-namespace cookie of the agent's host namespace. The
/// socket hooks act only on sockets of that namespace.
pub const GLOBAL_HOST_NETNS_COOKIE: &str = "HOST_NETNS_COOKIE";

/// Masquerade keeps a flow's own source port when it is free; otherwise it
/// picks one at random from this range (unprivileged ports; ports published
/// on the uplink address and tuples a host socket owns are skipped).
pub const NAT_PORT_MIN: u16 = 1024;
pub const NAT_PORT_MAX: u16 = 65535;
/// How many random ports the allocator tries (after the flow's own) before
/// giving up on a flow (`NatExhausted`).
pub const NAT_PORT_TRIES: u32 = 64;
/// The same for IPv6 masquerade, whose allocator is verified in more
/// program states (see `nat6::allocate6`): at half of a peer's ports taken,
/// 8 tries fail 1 flow in 250.
pub const NAT_PORT_TRIES6: u32 = 8;

/// Global: unread bytes in the monitor's ring past which the programs wake
/// the agent's reader (below it they submit with `BPF_RB_NO_WAKEUP`). The
/// agent sets a quarter of the ring; the default is for the default ring.
pub const GLOBAL_EVENTS_WAKE_BYTES: &str = "EVENTS_WAKE_BYTES";
pub const EVENTS_WAKE_BYTES_DEFAULT: u64 = 64 * 1024;

/// Globals: conntrack lifetimes in nanoseconds (defaults below).
pub const GLOBAL_CT_TCP_EST_NS: &str = "CT_TCP_EST_NS";
pub const GLOBAL_CT_TCP_CLOSING_NS: &str = "CT_TCP_CLOSING_NS";
pub const GLOBAL_CT_UDP_NS: &str = "CT_UDP_NS";
pub const GLOBAL_CT_ICMP_NS: &str = "CT_ICMP_NS";

/// Globals: the clock conntrack and fragment lifetimes are stamped with.
/// With `CLOCK_TICK_NS` set (the kernel's `TICK_NSEC`: `(10^9 + HZ/2) /
/// HZ`, from its `CONFIG_HZ`), the programs read `(jiffies64 -
/// CLOCK_JIFFIES0) * CLOCK_TICK_NS` (`bpf_jiffies64` is inlined, ~1 ns;
/// `CLOCK_JIFFIES0` the kernel's `INITIAL_JIFFIES`, so the clock is near
/// `CLOCK_MONOTONIC`); left 0 (the kernel's HZ not known), they read
/// `bpf_ktime_get_coarse_ns` (~20 ns). The agent reads the same clock with
/// `pier_clock`.
pub const GLOBAL_CLOCK_TICK_NS: &str = "CLOCK_TICK_NS";
pub const GLOBAL_CLOCK_JIFFIES0: &str = "CLOCK_JIFFIES0";

/// The kernel's `INITIAL_JIFFIES` on a 64-bit kernel of `HZ` `hz`:
/// `(unsigned long)(unsigned int)(-300 * HZ)`.
pub const fn initial_jiffies(hz: u64) -> u64 {
    (0u32.wrapping_sub((300 * hz) as u32)) as u64
}

/// The kernel's `TICK_NSEC` for `HZ` `hz`.
pub const fn tick_nsec(hz: u64) -> u64 {
    (1_000_000_000 + hz / 2) / hz
}

/// Default conntrack lifetimes (nanoseconds of the programs' clock, `GLOBAL_CLOCK_TICK_NS`).
pub const CT_TCP_ESTABLISHED_NS: u64 = 6 * 3600 * 1_000_000_000;
pub const CT_TCP_CLOSING_NS: u64 = 10 * 1_000_000_000;
pub const CT_UDP_NS: u64 = 60 * 1_000_000_000;
pub const CT_ICMP_NS: u64 = 30 * 1_000_000_000;

/// How long later fragments of a datagram follow its first one (Linux's
/// `ipfrag_time` default).
pub const FRAG_TIMEOUT_NS: u64 = 30 * 1_000_000_000;

/// TTL of the ICMP time-exceeded errors the dataplane answers with.
pub const ICMP_ERROR_TTL: u8 = 64;

/// How many times `pier_prof` runs the primitive a frame names.
pub const PROF_REPS: u32 = 32;
/// `pier_prof`'s primitives (byte 14 of its frame → what it runs, and on
/// which key: bytes 16.. of the frame). 0 runs nothing (the harness).
pub const PROF_OPS: [(u8, &str); 19] = [
    (1, "PIER_PORTS lookup (hash, 8-byte key)"),
    (2, "PIER_CT lookup (LRU hash, 16-byte key)"),
    (3, "PIER_SNAT_FWD lookup (hash, no prealloc, 16-byte key)"),
    (13, "PIER_SNAT_REV lookup (hash, no prealloc, 16-byte key)"),
    (
        4,
        "PIER_PORT_DROPS lookup + add (per-CPU hash, 8-byte key: PIER_PORT_STATS before slots)",
    ),
    (16, "PIER_PORT_STATS lookup + add (per-CPU array, by slot)"),
    (5, "PIER_ENDPOINTS lookup (hash, 4-byte key)"),
    (6, "PIER_VETH_EP4 lookup (array)"),
    (7, "PIER_IF_PKTS lookup + add (per-CPU array)"),
    (12, "PIER_SUBNETS lookup (LPM trie, /32)"),
    (8, "bpf_ktime_get_coarse_ns"),
    (9, "bpf_ktime_get_ns"),
    (17, "bpf_jiffies64"),
    (18, "ct::now (the programs' clock, as loaded)"),
    (10, "l4_csum_replace (2 bytes)"),
    (11, "bpf_get_prandom_u32"),
    (14, "bpf_redirect_peer"),
    (15, "bpf_redirect_neigh"),
    (
        0x45,
        "parse::ipv4 (Ethernet + IPv4 + TCP headers into a Pkt)",
    ),
];
