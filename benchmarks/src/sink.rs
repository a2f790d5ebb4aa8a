//! The benchmarks' HTTP destination: accepts every batch, optionally after a
//! fixed latency, and notes when each request arrived.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub struct Sink {
    pub url: String,
    arrivals: Arc<Mutex<Vec<Instant>>>,
}

impl Sink {
    /// A sink that answers at once.
    pub async fn start() -> anyhow::Result<Sink> {
        Sink::with_latency(Duration::ZERO).await
    }

    /// A sink that holds every request for `latency` before answering, like a
    /// SaaS API whose cost is its round trip, not its throughput.
    pub async fn with_latency(latency: Duration) -> anyhow::Result<Sink> {
        let arrivals = Arc::new(Mutex::new(Vec::new()));
        let noted = arrivals.clone();
        let app = axum::Router::new().route(
            "/",
            axum::routing::post(move |_body: axum::body::Bytes| {
                let noted = noted.clone();
                async move {
                    noted.lock().unwrap().push(Instant::now());
                    if !latency.is_zero() {
                        tokio::time::sleep(latency).await;
                    }
                    "{}"
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}/", listener.local_addr()?);
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok(Sink { url, arrivals })
    }

    /// When each request arrived, in order; clears the record.
    pub fn take_arrivals(&self) -> Vec<Instant> {
        let mut arrivals = std::mem::take(&mut *self.arrivals.lock().unwrap());
        arrivals.sort();
        arrivals
    }
}

/// Requests per second between the first and the last arrival.
pub fn mean_rate(arrivals: &[Instant]) -> f64 {
    match (arrivals.first(), arrivals.last()) {
        (Some(first), Some(last)) if arrivals.len() > 1 => {
            (arrivals.len() - 1) as f64 / last.duration_since(*first).as_secs_f64()
        }
        _ => 0.0,
    }
}

/// The most requests that arrived within any one-second window.
pub fn peak_in_any_second(arrivals: &[Instant]) -> usize {
    let mut peak = 0;
    let mut start = 0;
    for (end, at) in arrivals.iter().enumerate() {
        while at.duration_since(arrivals[start]) >= Duration::from_secs(1) {
            start += 1;
        }
        peak = peak.max(end - start + 1);
    }
    peak
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_of_evenly_spaced_arrivals() {
        let start = Instant::now();
        // 31 arrivals 100 ms apart: 10 per second, 10 in any one-second window.
        let arrivals: Vec<Instant> = (0..31).map(|i| start + Duration::from_millis(100 * i)).collect();
        assert!((mean_rate(&arrivals) - 10.0).abs() < 1e-9);
        assert_eq!(peak_in_any_second(&arrivals), 10);
        let mut burst = arrivals.clone();
        burst.extend((0..5).map(|i| start + Duration::from_millis(1500 + i)));
        burst.sort();
        assert_eq!(peak_in_any_second(&burst), 15);
    }
}
