//! The embedded DNS resolver that containers on user-defined networks use.
