//! Simulated-clock harness.
