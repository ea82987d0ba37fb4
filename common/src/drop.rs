//! Why a packet was dropped: one per-CPU counter per reason (map `PIER_DROPS`).

#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// Headers shorter than they claim.
    Malformed = 1,
    /// Between two different pier networks.
    Isolation = 2,
    /// Leaving an `--internal` network.
    Internal = 3,
    /// Between containers of a network with `enable_icc=false`.
    NoIcc = 4,
    /// From outside, to a container address or port that is not published.
    NotPublished = 5,
    /// A published port whose container is unknown.
    NoBackend = 6,
    /// Masquerade could not allocate a source port.
    NatExhausted = 7,
    /// Masquerade cannot rewrite this packet (fragment, unknown protocol).
    NatUnsupported = 8,
    /// A packet helper (store, checksum, redirect) failed.
    Helper = 9,
    /// From a container, with a source address that is not its own; or
    /// from outside (an uplink), with a source in a container subnet.
    Spoofed = 10,
    /// An ICMP error whose quoted packet is not one pier sent: it quotes a
    /// published port's packet with no connection behind it, a packet its
    /// addressee did not send, or it would leave a masquerading network
    /// quoting a flow the container does not have.
    IcmpForged = 11,
    /// A later IP fragment (offset > 0) of a datagram whose first fragment
    /// was not seen (or is forgotten), where it would need translating.
    FragNoFirst = 12,
    /// The TTL ran out on a hop pier routes and no time-exceeded answer could
    /// be made (an ICMP error itself, IP options, a GSO packet).
    TtlExceeded = 13,
    /// ARP from a container whose sender address or MAC is not its own (a
    /// gratuitous ARP or a reply for a neighbour's address: cache poisoning),
    /// or that is not Ethernet/IPv4 ARP.
    ArpSpoofed = 14,
    /// An IPv6 extension-header chain pier does not walk: longer than
    /// `IPV6_EXT_MAX` headers or bytes, or a header it does not know, where
    /// the transport header matters (from a container, to a container).
    Ipv6ExtHdrs = 15,
    /// An IPv6 router advertisement or redirect sent by a container (only
    /// the host routes for pier's bridges).
    RouterAdvert = 16,
    /// An IPv4-mapped or IPv4-compatible IPv6 address (`::ffff:0:0/96`,
    /// `::/96`) as a container's source or destination: never translated.
    V4Mapped = 17,
    /// A published port's source policy does not let this source in
    /// (`pier policy`, `--publish-allow`, `pier.publish.allow`).
    PolicyDenied = 18,
    /// A frame from a container whose Ethernet source is not the container's
    /// own MAC: it would move the bridge's forwarding entry for that MAC (a
    /// neighbour's) to the sender's port.
    MacSpoofed = 19,
}

impl DropReason {
    pub const ALL: [DropReason; 19] = [
        DropReason::Malformed,
        DropReason::Isolation,
        DropReason::Internal,
        DropReason::NoIcc,
        DropReason::NotPublished,
        DropReason::NoBackend,
        DropReason::NatExhausted,
        DropReason::NatUnsupported,
        DropReason::Helper,
        DropReason::Spoofed,
        DropReason::IcmpForged,
        DropReason::FragNoFirst,
        DropReason::TtlExceeded,
        DropReason::ArpSpoofed,
        DropReason::Ipv6ExtHdrs,
        DropReason::RouterAdvert,
        DropReason::V4Mapped,
        DropReason::PolicyDenied,
        DropReason::MacSpoofed,
    ];
}

const _: () = assert!((DropReason::MacSpoofed as u32) < crate::maps::DROPS_LEN);
