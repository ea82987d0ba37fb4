//! Who may reach a published port: the source policy (`PIER_POLICY`).
//!
//! One LPM trie holds every rule. Its key data is a *scope* (which ports the
//! rule is for) followed by the source address; the prefix length covers the
//! whole scope (fixed, [`SCOPE_BITS`]) plus the rule's source prefix, so the
//! scope matches exactly and the source by longest prefix. Two scopes exist:
//! a published port's own `PortKey` (rules the agent compiled for that port:
//! per port, per container, per network) and the host-wide scope
//! ([`PolicyKey::host`]: every field zero but the family). A port whose
//! `PortVal::policy` is 0 has no policy and costs no lookup.
//!
//! The address is 16 bytes with a family byte in the scope, so IPv6 rules
//! can join the same map later: a v4 rule's source is its 4 bytes followed
//! by zeros and its prefix never reaches into them.

/// `PortVal::policy` bits: which scopes hold rules for this port.
pub const POLICY_F_PORT: u16 = 1;
/// Host-wide rules exist (look up [`PolicyKey::host`]).
pub const POLICY_F_HOST: u16 = 2;
/// Some allow rule applies to the port: a source no rule matches is denied.
pub const POLICY_F_DEFAULT_DENY: u16 = 4;

/// `PolicyVal::action`.
pub const POLICY_ALLOW: u8 = 1;
pub const POLICY_DENY: u8 = 2;

/// `PolicyKey::family` of an IPv4 rule.
pub const FAMILY_V4: u8 = 4;

/// Bits of the key data before the source address (address, port, proto,
/// family): always part of the prefix.
pub const SCOPE_BITS: u32 = 64;

/// The LPM key data (aya's `Key<PolicyKey>` adds the prefix length).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PolicyKey {
    /// The published port's `PortKey` fields (all zero: host-wide).
    pub addr_be: u32,
    pub port_be: u16,
    pub proto: u8,
    pub family: u8,
    /// The source, in packet order (v4: the first 4 bytes).
    pub src: [u8; 16],
}

const _: () = assert!(core::mem::size_of::<PolicyKey>() == 24);

impl PolicyKey {
    /// The scope of published port `(addr_be, port_be, proto)`.
    pub const fn port(addr_be: u32, port_be: u16, proto: u8, src_be: u32) -> Self {
        let b = src_be.to_ne_bytes();
        PolicyKey {
            addr_be,
            port_be,
            proto,
            family: FAMILY_V4,
            src: [b[0], b[1], b[2], b[3], 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        }
    }
    /// The host-wide scope.
    pub const fn host(src_be: u32) -> Self {
        Self::port(0, 0, 0, src_be)
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

/// The decision from the two scopes' matches: the longer prefix wins, deny
/// wins at the same length; no match: denied when an allow applies.
#[inline(always)]
pub fn decide(flags: u16, port: Option<PolicyVal>, host: Option<PolicyVal>) -> bool {
    let best = match (port, host) {
        (Some(p), Some(h)) => {
            if p.prefix_len > h.prefix_len
                || (p.prefix_len == h.prefix_len && p.action == POLICY_DENY)
            {
                Some(p)
            } else {
                Some(h)
            }
        }
        (p, h) => p.or(h),
    };
    match best {
        Some(v) => v.action == POLICY_ALLOW,
        None => flags & POLICY_F_DEFAULT_DENY == 0,
    }
}

crate::pod!(PolicyKey, PolicyVal);
