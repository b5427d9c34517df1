//! Client-side pacing of requests by the node's token bucket.
//!
//! The node announces `requests_per_second` and `request_burst` in `Welcome.limits`; every request
//! (and ping) takes a token from its bucket, and a client that keeps sending into an empty bucket
//! earns `RATE_LIMITED` and then a `POLICY_VIOLATION` disconnect. The client keeps its own bucket
//! that is a little smaller and slower than the node's ([`Pacer::for_limits`]), so that network
//! jitter, which can bunch frames sent apart, and the pings it sends on the side never empty the
//! node's bucket. Requests that find no token wait in the client's bounded queue.
//!
//! Tokens are counted in thousandths so the refill is exact in integer milliseconds.

use signal_mesh_proto::Limits;

use super::Millis;

/// One token, in the pacer's unit.
const TOKEN: u64 = 1000;

/// A token bucket with explicit time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pacer {
    /// Thousandths of a token added per millisecond (= tokens per second).
    rate: u64,
    /// Bucket size, in thousandths of a token.
    capacity: u64,
    /// Tokens now, in thousandths.
    tokens: u64,
    /// When `tokens` was last brought up to date.
    last: Millis,
}

impl Pacer {
    /// A full bucket for the node's `limits` at `now`: 90 % of its rate, and 90 % of its burst less
    /// two tokens kept for pings (at least one token, at least one per second).
    pub fn for_limits(limits: &Limits, now: Millis) -> Pacer {
        let rate = u64::from(limits.requests_per_second).max(1);
        let burst = u64::from(limits.request_burst).max(1);
        let rate = (rate * 9 / 10).max(1);
        let burst = (burst * 9 / 10).saturating_sub(2).max(1);
        Pacer { rate, capacity: burst * TOKEN, tokens: burst * TOKEN, last: now }
    }

    fn refill(&mut self, now: Millis) {
        let elapsed = now.saturating_sub(self.last);
        self.tokens = self.tokens.saturating_add(elapsed.saturating_mul(self.rate)).min(self.capacity);
        self.last = self.last.max(now);
    }

    /// Takes a token if there is one at `now`.
    pub fn try_take(&mut self, now: Millis) -> bool {
        self.refill(now);
        if self.tokens >= TOKEN {
            self.tokens -= TOKEN;
            true
        } else {
            false
        }
    }

    /// When the next token is there, as far as the pacer knows (it was last used at `last`).
    pub fn next_token(&self) -> Millis {
        self.next_token_at(self.last)
    }

    /// When the next token is there (`now` if it is already).
    pub fn next_token_at(&self, now: Millis) -> Millis {
        let mut p = self.clone();
        p.refill(now);
        if p.tokens >= TOKEN { now } else { now + (TOKEN - p.tokens).div_ceil(p.rate) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(rps: u32, burst: u32) -> Limits {
        Limits { requests_per_second: rps, request_burst: burst, ..Limits::default() }
    }

    #[test]
    fn given_a_full_bucket_then_it_allows_a_burst_then_the_rate() {
        let mut p = Pacer::for_limits(&limits(100, 20), 0);
        // 90 % of 20 is 18, less 2 for pings: 16 back to back.
        assert_eq!((0..100).filter(|_| p.try_take(0)).count(), 16);
        assert!(!p.try_take(0));
        // 90 tokens per second: one every 11.1 ms.
        assert_eq!(p.next_token_at(0), 12);
        assert!(!p.try_take(11));
        assert!(p.try_take(12));
        let sent = (13..=1012).filter(|t| p.try_take(*t)).count();
        assert!((89..=91).contains(&sent), "{sent} in one second");
    }

    #[test]
    fn given_zero_limits_then_the_pacer_still_moves() {
        let mut p = Pacer::for_limits(&limits(0, 0), 0);
        assert!(p.try_take(0));
        assert!(!p.try_take(0));
        assert_eq!(p.next_token_at(0), 1000);
        assert!(p.try_take(1000));
    }

    /// Whatever the send times, the client never takes more than the node's bucket allows.
    #[test]
    fn given_any_send_times_then_a_node_bucket_never_runs_dry() {
        let l = limits(50, 10);
        let mut p = Pacer::for_limits(&l, 0);
        // The node's bucket in floating point, as the node keeps it.
        let (mut node, mut last) = (f64::from(l.request_burst), 0u64);
        let mut t = 0;
        let mut rng = super::super::backoff::Rng::new(9);
        for _ in 0..10_000 {
            t += rng.next_u64() % 7;
            if p.try_take(t) {
                node = (node + (t - last) as f64 * f64::from(l.requests_per_second) / 1000.0)
                    .min(f64::from(l.request_burst));
                last = t;
                assert!(node >= 1.0, "node bucket empty at {t}");
                node -= 1.0;
            }
        }
    }
}
