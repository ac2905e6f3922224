//! The master's `/metrics` page in Prometheus' text exposition format (version 0.0.4).

use std::fmt::Write;

use super::shm::{Totals, BUCKETS, CLASSES, METHODS};

/// Why workers were replaced, for `ferricorn_worker_restarts_total{reason=...}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartReason {
    Timeout,
    Crash,
    MaxRequests,
    Memory,
}

impl RestartReason {
    pub const ALL: [RestartReason; 4] = [Self::Timeout, Self::Crash, Self::MaxRequests, Self::Memory];

    pub fn label(self) -> &'static str {
        match self {
            Self::Timeout => "timeout",
            Self::Crash => "crash",
            Self::MaxRequests => "max_requests",
            Self::Memory => "memory",
        }
    }
}

/// What only the master knows.
#[derive(Debug, Clone, Default)]
pub struct MasterState {
    pub workers: u64,
    pub restarts: [u64; 4],
    /// Connections waiting in the listen queues (`None`: not measurable here).
    pub backlog: Option<u64>,
}

pub fn render(t: &Totals, m: &MasterState) -> String {
    let mut out = String::with_capacity(4096);
    let _ = writeln!(
        out,
        "# HELP ferricorn_http_requests_total HTTP requests answered, by method and status class."
    );
    let _ = writeln!(out, "# TYPE ferricorn_http_requests_total counter");
    for (c, class) in CLASSES.iter().enumerate() {
        for (i, method) in METHODS.iter().enumerate() {
            let _ = writeln!(
                out,
                "ferricorn_http_requests_total{{method=\"{method}\",status=\"{class}\"}} {}",
                t.requests[c][i]
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP ferricorn_http_request_duration_seconds Time from the request head to the end of the response."
    );
    let _ = writeln!(out, "# TYPE ferricorn_http_request_duration_seconds histogram");
    for (i, le) in BUCKETS.iter().enumerate() {
        let _ = writeln!(
            out,
            "ferricorn_http_request_duration_seconds_bucket{{le=\"{le:?}\"}} {}",
            t.buckets[i]
        );
    }
    let count = t.buckets[BUCKETS.len()];
    let _ = writeln!(
        out,
        "ferricorn_http_request_duration_seconds_bucket{{le=\"+Inf\"}} {count}"
    );
    let _ = writeln!(
        out,
        "ferricorn_http_request_duration_seconds_sum {:?}",
        t.duration_us as f64 / 1e6
    );
    let _ = writeln!(out, "ferricorn_http_request_duration_seconds_count {count}");
    let simple: [(&str, &str, &str, u64); 5] = [
        (
            "ferricorn_http_requests_in_flight",
            "gauge",
            "Requests being answered now.",
            t.in_flight,
        ),
        (
            "ferricorn_http_request_body_bytes_total",
            "counter",
            "Request body bytes received.",
            t.bytes_in,
        ),
        (
            "ferricorn_http_response_body_bytes_total",
            "counter",
            "Response body bytes sent.",
            t.bytes_out,
        ),
        ("ferricorn_workers", "gauge", "Worker processes running.", m.workers),
        (
            "ferricorn_listen_backlog",
            "gauge",
            "Connections waiting in the listen queues.",
            m.backlog.unwrap_or(0),
        ),
    ];
    for (name, kind, help, value) in simple {
        if name == "ferricorn_listen_backlog" && m.backlog.is_none() {
            continue;
        }
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        let _ = writeln!(out, "{name} {value}");
    }
    let _ = writeln!(
        out,
        "# HELP ferricorn_worker_restarts_total Workers replaced, by reason."
    );
    let _ = writeln!(out, "# TYPE ferricorn_worker_restarts_total counter");
    for r in RestartReason::ALL {
        let _ = writeln!(
            out,
            "ferricorn_worker_restarts_total{{reason=\"{}\"}} {}",
            r.label(),
            m.restarts[r as usize]
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_family() {
        let mut t = Totals::default();
        t.requests[1][0] = 3;
        t.buckets = [1; BUCKETS.len() + 1];
        t.buckets[BUCKETS.len()] = 3;
        t.duration_us = 1_500_000;
        let m = MasterState {
            workers: 2,
            restarts: [1, 0, 0, 0],
            backlog: Some(4),
        };
        let text = render(&t, &m);
        assert!(text.contains("ferricorn_http_requests_total{method=\"GET\",status=\"2xx\"} 3\n"));
        assert!(text.contains("ferricorn_http_request_duration_seconds_bucket{le=\"0.005\"} 1\n"));
        assert!(text.contains("ferricorn_http_request_duration_seconds_bucket{le=\"+Inf\"} 3\n"));
        assert!(text.contains("ferricorn_http_request_duration_seconds_sum 1.5\n"));
        assert!(text.contains("ferricorn_workers 2\n"));
        assert!(text.contains("ferricorn_listen_backlog 4\n"));
        assert!(text.contains("ferricorn_worker_restarts_total{reason=\"timeout\"} 1\n"));
    }
}
