//! The daemon's side of observability: the dataplane's counters and
//! monitor, with the names of the state (see `crate::observe`).
use std::sync::Arc;

use super::{Daemon, Result};
use crate::{
    dataplane::{MonitorHub, Observed},
    observe::{self, Names, TrafficRow},
};

impl Daemon {
    /// The monitor's event hub (none with a dataplane that has no kernel part).
    pub fn dataplane_monitor(&self) -> Option<Arc<MonitorHub>> {
        self.lock_inner().dataplane.monitor()
    }

    /// Drop counters, map fill, kernel event counters.
    pub fn dataplane_observed(&self) -> Result<Observed> {
        Ok(self.lock_inner().dataplane.observed()?)
    }

    /// `pier stats`: per container, per network, per uplink.
    pub fn traffic(&self) -> Result<Vec<TrafficRow>> {
        let counters = self.lock_inner().dataplane.if_stats()?;
        Ok(observe::traffic(
            &self.snapshot(),
            &counters,
            &self.cfg.uplinks,
        ))
    }

    /// Names for the monitor's events, from the state and the host's
    /// interfaces now.
    pub fn monitor_names(&self) -> Names {
        let ifaces = crate::dataplane::sys::interfaces()
            .map(|m| m.into_iter().map(|(n, i)| (n, i.ifindex)).collect())
            .unwrap_or_default();
        Names::build(&self.snapshot(), &ifaces)
    }
}
