//! One file per attach point; each holds a thin entry that calls shared logic.
pub mod clock;
pub mod connect4;
pub mod connect6;
pub mod getpeername4;
pub mod getpeername6;
pub mod prof;
pub mod recvmsg4;
pub mod recvmsg6;
pub mod sendmsg4;
pub mod sendmsg6;
pub mod smoke;
pub mod sock_release;
pub mod uplink_in;
pub mod veth_in;
