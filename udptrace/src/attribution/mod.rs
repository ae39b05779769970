//! Who an event belongs to beyond its task: cgroups, and the containers
//! and pods their paths name.

pub(crate) mod cgroups;
