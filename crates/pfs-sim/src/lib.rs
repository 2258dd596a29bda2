//! Simulators of the Lustre and BeeGFS tools for tests and the quickstart; never part of the driver image
