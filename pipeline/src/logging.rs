//! How the `pipeline` binary logs: human-readable lines (the default) or one JSON object per
//! line for log collectors (`--log-format json`, `PIPELINE_LOG_FORMAT=json`), to stderr, at
//! `RUST_LOG`'s levels or `info`.
//!
//! The format is plain configuration and compiles everywhere; the subscriber itself needs the
//! `services` feature (`tracing-subscriber`).

/// The shape of log lines.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Text for people: time, level, target, message, then the fields as `key=value`.
    #[default]
    Human,
    /// One JSON object per line: `timestamp`, `level`, `target`, `message` and every field at
    /// the top level.
    Json,
}

#[cfg(feature = "services")]
pub use setup::{init, subscriber};

#[cfg(feature = "services")]
mod setup {
    use tracing_subscriber::EnvFilter;
    use tracing_subscriber::fmt::MakeWriter;
    use tracing_subscriber::util::SubscriberInitExt;

    use super::LogFormat;

    /// A subscriber writing `format` lines to `writer`, filtered by `filter`.
    fn build<W>(
        format: LogFormat,
        filter: EnvFilter,
        writer: W,
    ) -> Box<dyn tracing::Subscriber + Send + Sync>
    where
        W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
    {
        let builder = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(writer);
        match format {
            LogFormat::Human => Box::new(builder.finish()),
            LogFormat::Json => Box::new(builder.json().flatten_event(true).finish()),
        }
    }

    /// A subscriber writing `format` lines to `writer`, at `RUST_LOG`'s levels or `info`.
    pub fn subscriber<W>(format: LogFormat, writer: W) -> Box<dyn tracing::Subscriber + Send + Sync>
    where
        W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
    {
        let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
        build(format, filter, writer)
    }

    /// Logs to stderr in `format` for the rest of the process (and takes the `log` crate's
    /// records too). A second call changes nothing.
    pub fn init(format: LogFormat) {
        let _ = subscriber(format, std::io::stderr).try_init();
    }

    #[cfg(test)]
    mod tests {
        use std::sync::{Arc, Mutex};

        use super::*;

        /// A writer into shared memory, one per event.
        #[derive(Clone, Default)]
        struct Buffer(Arc<Mutex<Vec<u8>>>);

        impl std::io::Write for Buffer {
            fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
                self.0
                    .lock()
                    .map_err(|_| std::io::Error::other("poisoned"))?
                    .extend_from_slice(bytes);
                Ok(bytes.len())
            }

            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }

        impl<'a> MakeWriter<'a> for Buffer {
            type Writer = Buffer;

            fn make_writer(&'a self) -> Self::Writer {
                self.clone()
            }
        }

        /// The lines one event logged in `format`.
        fn log_one(format: LogFormat) -> Vec<String> {
            let buffer = Buffer::default();
            let sub = build(format, EnvFilter::new("info"), buffer.clone());
            tracing::subscriber::with_default(sub, || {
                tracing::info!(
                    sink = "postgresql",
                    attempts = 3_u32,
                    failed_for_s = 1.5,
                    "A sink answers again."
                );
                tracing::debug!("Below the level: not written.");
            });
            let bytes = buffer.0.lock().expect("not poisoned").clone();
            String::from_utf8(bytes)
                .expect("UTF-8")
                .lines()
                .map(str::to_owned)
                .collect()
        }

        // Proves `--log-format json` writes each event as one parseable JSON object with the
        // level, the message and every field at the top level, and `human` does not.
        #[test]
        fn json_lines_parse_and_carry_the_fields() {
            let lines = log_one(LogFormat::Json);
            assert_eq!(lines.len(), 1, "{lines:?}");
            let v: serde_json::Value =
                serde_json::from_str(&lines[0]).expect("the line is one JSON object");
            assert_eq!(v["level"], "INFO", "{v}");
            assert_eq!(v["message"], "A sink answers again.", "{v}");
            assert_eq!(v["sink"], "postgresql", "{v}");
            assert_eq!(v["attempts"], 3, "{v}");
            assert_eq!(v["failed_for_s"], 1.5, "{v}");
            assert!(v["timestamp"].is_string(), "{v}");
            assert!(v["target"].is_string(), "{v}");

            let lines = log_one(LogFormat::Human);
            assert_eq!(lines.len(), 1, "{lines:?}");
            assert!(serde_json::from_str::<serde_json::Value>(&lines[0]).is_err());
            assert!(lines[0].contains("A sink answers again."), "{lines:?}");
            assert!(lines[0].contains("postgresql"), "{lines:?}");
        }
    }
}
