//! One file per attach point; each holds a thin entry that calls shared logic.
pub mod smoke;
