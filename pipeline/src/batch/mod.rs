//! The batch job (SPEC §4, the original's `SPARK_JOB_TYPE=batch`): historical features from the
//! PostgreSQL raw archive, written back to PostgreSQL tables.
//!
//! - [`sql`]: the feature tables and the statements PostgreSQL runs (windows, grouping).
//! - [`forecast`]: the seasonal baseline forecast of speed per zone and its held-out error, in
//!   Rust (model logic over a few thousand hourly rows).
//! - `job` (feature `services`): waits for PostgreSQL, resolves the range, runs the statements
//!   and the forecast in one transaction, and reports each stage.
//!
//! What it writes, all from `traffic_data`:
//! - `sensor_features`, `zone_features` (zones in steps of `--zone-step`, 5 min by default):
//!   hour of day, ISO day of week, weekend and rush-hour flags, rolling means of speed and flow
//!   over 15 min and 1 h, the previous value, and the value exactly 1 h, 1 day and 7 days
//!   earlier. Rows of the range are replaced; rows outside it are kept.
//! - `hour_of_week_profile`, `congestion_distribution` (per sensor and per zone),
//!   `speed_forecast` (per zone, 1-24 h after the last hour), `speed_forecast_error` (the
//!   seasonal forecast's and the naive "same hour last week" forecast's MAE on the last week
//!   held out), and `batch_range` (the range these describe): replaced as a whole on every run.
//!
//! **Invariant:** a run is one transaction under an advisory lock: readers see the previous
//! results or the new ones, never a mix, and a run over the same archive and range writes the
//! same rows (no wall-clock column anywhere).

pub mod forecast;
pub mod sql;

#[cfg(feature = "services")]
mod job;
#[cfg(feature = "services")]
pub use job::{BatchConfig, BatchError, BatchReport, StageReport, run, wait_for_postgres};
