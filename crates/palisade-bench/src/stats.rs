//! Latency samples and the summary line each run prints (JSON, one object per line,
//! so the bench script can build its table from them).

use crate::percentile::percentile;
use serde::Serialize;
use std::time::Duration;

/// Per-request latencies in microseconds; a `u32` holds over an hour.
#[derive(Default)]
pub struct Samples {
    micros: Vec<u32>,
    pub errors: u64,
    pub first_error: Option<String>,
}

impl Samples {
    pub fn record(&mut self, took: Duration) {
        self.micros
            .push(u32::try_from(took.as_micros()).unwrap_or(u32::MAX));
    }

    pub fn fail(&mut self, error: anyhow::Error) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(format!("{error:#}"));
        }
    }

    pub fn merge(&mut self, other: Samples) {
        self.micros.extend(other.micros);
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }

    pub fn summarize(
        mut self,
        label: &str,
        mode: &str,
        connections: usize,
        elapsed: Duration,
    ) -> Summary {
        self.micros.sort_unstable();
        let seconds = elapsed.as_secs_f64();
        Summary {
            label: label.to_string(),
            mode: mode.to_string(),
            connections,
            requests: self.micros.len() as u64,
            errors: self.errors,
            seconds,
            requests_per_second: if seconds > 0.0 {
                self.micros.len() as f64 / seconds
            } else {
                0.0
            },
            p50_ms: percentile(&self.micros, 50.0),
            p99_ms: percentile(&self.micros, 99.0),
            first_error: self.first_error,
        }
    }
}

#[derive(Serialize)]
pub struct Summary {
    pub label: String,
    pub mode: String,
    pub connections: usize,
    pub requests: u64,
    pub errors: u64,
    pub seconds: f64,
    pub requests_per_second: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_error: Option<String>,
}
