//! Several ways in to one server, tried in order: the first is given a
//! head start, then the next joins the race, and so on (the idea of happy
//! eyeballs, applied to transports). The first stream that opens wins and
//! the others are dropped. A network that drops UDP kills iroh, one that
//! blocks port 22 needs TLS on 443: a client that lists all three gets in.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::task::JoinSet;

use crate::{BoxStream, Transport, TransportError};

/// How long each way in runs alone before the next one starts too.
pub const FALLBACK_HEAD_START: Duration = Duration::from_millis(500);

/// Transports to one server, raced in order with a head start each.
pub struct FallbackTransport {
    candidates: Vec<Arc<dyn Transport>>,
    head_start: Duration,
}

impl FallbackTransport {
    /// Tries `candidates` in order, each [`FALLBACK_HEAD_START`] after the
    /// one before it (or at once when it failed).
    pub fn new(candidates: Vec<Arc<dyn Transport>>) -> Self {
        Self {
            candidates,
            head_start: FALLBACK_HEAD_START,
        }
    }

    /// Changes the head start.
    pub fn with_head_start(mut self, head_start: Duration) -> Self {
        self.head_start = head_start;
        self
    }
}

#[async_trait]
impl Transport for FallbackTransport {
    async fn connect(&self) -> Result<BoxStream, TransportError> {
        let mut racing = JoinSet::new();
        let mut next = 0;
        let mut first_error = None;
        loop {
            if racing.is_empty() {
                let Some(candidate) = self.candidates.get(next) else {
                    return Err(first_error.unwrap_or(TransportError::NoTransport));
                };
                let candidate = candidate.clone();
                racing.spawn(async move { (next, candidate.connect().await) });
                next += 1;
            }
            let more = next < self.candidates.len();
            tokio::select! {
                Some(done) = racing.join_next() => match done {
                    Ok((index, Ok(stream))) => {
                        if index > 0 {
                            tracing::info!(via = %self.candidates[index].describe(), "connected by a fallback");
                        }
                        // Dropping `racing` abandons the slower attempts.
                        return Ok(stream);
                    }
                    Ok((index, Err(error))) => {
                        tracing::info!(via = %self.candidates[index].describe(), %error, "this way in failed");
                        first_error.get_or_insert(error);
                    }
                    Err(_) => {}
                },
                () = tokio::time::sleep(self.head_start), if more => {
                    let candidate = self.candidates[next].clone();
                    let index = next;
                    racing.spawn(async move { (index, candidate.connect().await) });
                    next += 1;
                }
            }
        }
    }

    fn describe(&self) -> String {
        self.candidates
            .iter()
            .map(|candidate| candidate.describe())
            .collect::<Vec<_>>()
            .join(" or ")
    }

    async fn close(&self) {
        for candidate in &self.candidates {
            candidate.close().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fails at once, never answers, or answers after a while.
    enum Fake {
        Refused,
        Silent,
        Opens(Duration),
    }

    #[async_trait]
    impl Transport for Fake {
        async fn connect(&self) -> Result<BoxStream, TransportError> {
            match self {
                Fake::Refused => Err(TransportError::Connect {
                    server: "refused".into(),
                    source: std::io::ErrorKind::ConnectionRefused.into(),
                }),
                Fake::Silent => std::future::pending().await,
                Fake::Opens(after) => {
                    tokio::time::sleep(*after).await;
                    Ok(Box::new(tokio::io::duplex(16).0))
                }
            }
        }

        fn describe(&self) -> String {
            "fake".into()
        }
    }

    fn race(candidates: Vec<Fake>) -> FallbackTransport {
        FallbackTransport::new(
            candidates
                .into_iter()
                .map(|fake| Arc::new(fake) as Arc<dyn Transport>)
                .collect(),
        )
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_first_way_is_overtaken_after_its_head_start() {
        let started = tokio::time::Instant::now();
        let transport = race(vec![Fake::Silent, Fake::Opens(Duration::from_millis(10))]);
        transport.connect().await.unwrap();
        assert_eq!(
            started.elapsed(),
            FALLBACK_HEAD_START + Duration::from_millis(10)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_refused_way_hands_over_at_once_and_all_refused_is_an_error() {
        let started = tokio::time::Instant::now();
        let transport = race(vec![Fake::Refused, Fake::Opens(Duration::from_millis(10))]);
        transport.connect().await.unwrap();
        assert_eq!(started.elapsed(), Duration::from_millis(10));
        let Err(error) = race(vec![Fake::Refused, Fake::Refused]).connect().await else {
            panic!("nothing opened, yet it connected");
        };
        assert!(error.to_string().contains("refused"), "{error}");
    }

    #[tokio::test(start_paused = true)]
    async fn the_first_way_wins_when_it_opens_within_its_head_start() {
        let transport = race(vec![
            Fake::Opens(Duration::from_millis(100)),
            Fake::Opens(Duration::from_millis(1)),
        ]);
        let started = tokio::time::Instant::now();
        transport.connect().await.unwrap();
        assert_eq!(started.elapsed(), Duration::from_millis(100));
    }
}
