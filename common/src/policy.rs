//! Who may reach a published port: the source policy (`PIER_POLICY`).
//!
//! One LPM trie holds every rule. Its key data is a *scope* (which ports the
//! rule is for) followed by the source address; the prefix length covers the
//! whole scope (fixed, [`SCOPE_BITS`]) plus the rule's source prefix, so the
//! scope matches exactly and the source by longest prefix. Two scopes exist:
//! a published port's own `PortKey` (rules the agent compiled for that port:
//! per port, per container, per network) and the host-wide scope
//! ([`PolicyKey::host`]: every field zero but the family). Each comes in two
//! kinds: for every uplink (`ifindex` 0) and for the packets arriving on one
//! uplink (`ifindex` set; `pier policy … --uplink NAME`). A port whose
//! `PortVal::policy` is 0 has no policy and costs no lookup; each scope is
//! asked only when its flag is set.
//!
//! The address is 16 bytes with a family byte in the scope: IPv4 and IPv6
//! rules share the map. A v4 rule's source is its 4 bytes followed by zeros
//! and its prefix never reaches into them; a v6 rule's scope is
//! [`PolicyKey::port6`]/[`PolicyKey::host6`].

/// `PortVal::policy` bits: which scopes hold rules for this port.
pub const POLICY_F_PORT: u16 = 1;
/// Host-wide rules exist (look up [`PolicyKey::host`]).
pub const POLICY_F_HOST: u16 = 2;
/// Some allow rule applies to the port: a source no rule matches is denied.
/// (An uplink-scoped allow makes its own uplink default-deny with a `/0`
/// deny in its scope instead, so other uplinks stay open.)
pub const POLICY_F_DEFAULT_DENY: u16 = 4;
/// Rules for this port on one uplink exist (its scope with `ifindex`).
pub const POLICY_F_PORT_UPLINK: u16 = 8;
/// Host-wide rules for one uplink exist.
pub const POLICY_F_HOST_UPLINK: u16 = 16;

/// `PolicyVal::action`.
pub const POLICY_ALLOW: u8 = 1;
pub const POLICY_DENY: u8 = 2;

/// `PolicyKey::family` of an IPv4 rule.
pub const FAMILY_V4: u8 = 4;
/// `PolicyKey::family` of an IPv6 rule. An IPv6 published port's scope has
/// no room for its 16-byte host address: `addr_be` is then the port's
/// `PortVal6::scope` (0 for `::`, else the agent's number for that address).
pub const FAMILY_V6: u8 = 6;
/// The highest IPv6 port scope number (`PortVal6::policy`'s high byte): the
/// 255th explicit IPv6 host address and those after it share it (their
/// ports' own rules are then merged, per port and protocol).
pub const SCOPES6: u32 = 255;

/// Bits of the key data before the source address (address, port, proto,
/// family, ifindex): always part of the prefix.
pub const SCOPE_BITS: u32 = 96;

/// The LPM key data (aya's `Key<PolicyKey>` adds the prefix length).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PolicyKey {
    /// The published port's `PortKey` fields (all zero: host-wide).
    pub addr_be: u32,
    pub port_be: u16,
    pub proto: u8,
    pub family: u8,
    /// The uplink the packet arrived on, for an uplink's own rules; 0: any.
    pub ifindex: u32,
    /// The source, in packet order (v4: the first 4 bytes).
    pub src: [u8; 16],
}

const _: () = assert!(core::mem::size_of::<PolicyKey>() == 28);

impl PolicyKey {
    /// The scope of published port `(addr_be, port_be, proto)`.
    pub const fn port(addr_be: u32, port_be: u16, proto: u8, src_be: u32) -> Self {
        let b = src_be.to_ne_bytes();
        PolicyKey {
            addr_be,
            port_be,
            proto,
            family: FAMILY_V4,
            ifindex: 0,
            src: [b[0], b[1], b[2], b[3], 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        }
    }
    /// The host-wide scope.
    pub const fn host(src_be: u32) -> Self {
        Self::port(0, 0, 0, src_be)
    }
    /// The scope of IPv6 published port `(scope, port_be, proto)` for IPv6
    /// source `src` (16 bytes in packet order).
    pub const fn port6(scope: u32, port_be: u16, proto: u8, src: [u8; 16]) -> Self {
        PolicyKey {
            addr_be: scope,
            port_be,
            proto,
            family: FAMILY_V6,
            ifindex: 0,
            src,
        }
    }
    /// The host-wide scope for IPv6 sources.
    pub const fn host6(src: [u8; 16]) -> Self {
        Self::port6(0, 0, 0, src)
    }
    /// The same scope, for packets arriving on uplink `ifindex` only.
    pub const fn on_uplink(mut self, ifindex: u32) -> Self {
        self.ifindex = ifindex;
        self
    }
}

/// What a matching rule says, and the length of its source prefix (the LPM
/// lookup does not tell which prefix matched; comparing the two scopes'
/// answers needs it).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PolicyVal {
    pub action: u8,
    pub prefix_len: u8,
    pub _pad: u16,
}

const _: () = assert!(core::mem::size_of::<PolicyVal>() == 4);

/// No rule matched (`PolicyVal::action` 0). Plain values rather than
/// `Option`s: the BPF backend turns selects of an `Option`'s unset payload
/// into reads of uninitialised registers, which the verifier refuses.
pub const NO_MATCH: PolicyVal = PolicyVal {
    action: 0,
    prefix_len: 0,
    _pad: 0,
};

/// The stronger of two matches: the longer prefix, deny at the same
/// length; a match beats [`NO_MATCH`].
#[inline(always)]
pub fn stronger(a: PolicyVal, b: PolicyVal) -> PolicyVal {
    if a.action == 0 {
        return b;
    }
    if b.action == 0 {
        return a;
    }
    if a.prefix_len > b.prefix_len || (a.prefix_len == b.prefix_len && a.action == POLICY_DENY) {
        a
    } else {
        b
    }
}

/// The decision from the strongest match of the scopes asked (the port's,
/// the host-wide one, and their per-uplink kinds, folded with
/// [`stronger`]): no match: denied when an allow applies.
#[inline(always)]
pub fn decide(flags: u16, best: PolicyVal) -> bool {
    if best.action == 0 {
        flags & POLICY_F_DEFAULT_DENY == 0
    } else {
        best.action == POLICY_ALLOW
    }
}

crate::pod!(PolicyKey, PolicyVal);
