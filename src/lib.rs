//! Workspace root package. It owns the end-to-end tests in `tests/` and the criterion benches in
//! `benches/`; the product lives in the `pipeline`, `generator` and `simulator` crates, re-exported
//! here so tests and benches can name them from one place.

pub use generator;
pub use pipeline;
pub use simulator;
