//! Frames and run counts of the `BPF_PROG_TEST_RUN` profiles
//! (`dataplane_prog_cost`, `dataplane_prim_cost`).

/// An Ethernet + IPv4 + TCP/UDP frame (checksums left zero: the programs
/// update them incrementally and never verify them).
pub fn frame(proto: u8, src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, flags: u8) -> Vec<u8> {
    let mut l4 = Vec::new();
    l4.extend_from_slice(&sport.to_be_bytes());
    l4.extend_from_slice(&dport.to_be_bytes());
    if proto == 6 {
        l4.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 1, 0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
    } else {
        l4.extend_from_slice(&[0, 8 + 32, 0, 0]);
    }
    l4.extend_from_slice(&[0x61; 32]);
    let mut f = vec![0x02, 0, 0, 0, 0, 0x01, 0x02, 0, 0, 0, 0, 0x02, 0x08, 0x00];
    let total = (20 + l4.len()) as u16;
    f.extend_from_slice(&[0x45, 0]);
    f.extend_from_slice(&total.to_be_bytes());
    f.extend_from_slice(&[0x12, 0x34, 0x40, 0, 64, proto, 0, 0]);
    f.extend_from_slice(&src);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&l4);
    f
}

/// Runs per path and round: `PIER_PROG_RUNS`, default 20 000.
pub fn runs_per_round() -> usize {
    std::env::var("PIER_PROG_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_000)
}
