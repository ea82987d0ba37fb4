//! `pier-cni`: pier's CNI plugin (`type: "pier"`), a thin client of the
//! agent's API socket. Install it as `/opt/cni/bin/pier` (or in
//! `/usr/lib/cni`); see `pier_agent::cni`.
fn main() {
    std::process::exit(pier_agent::cni::plugin::main());
}
