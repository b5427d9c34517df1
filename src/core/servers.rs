//! The failover list: the node URLs the client tries, in order.
//!
//! The configured URLs come first and always stay. After them come the URLs the client *learned*
//! from nodes: each `Welcome` carries `node_urls`, the edge URLs of the other live nodes of the
//! mesh, so a browser configured with one URL survives that node's death. Learned URLs are
//! deduplicated (against each other and the configured ones), checked (`ws://` / `wss://`, at most
//! [`MAX_NODE_URL_BYTES`]) and bounded ([`MAX_LEARNED`]): the newest `Welcome`'s URLs go first, the
//! node in use stays, and the oldest learned ones fall off the end.

use alloc::{borrow::ToOwned, string::String, vec::Vec};

use signal_mesh_proto::message::{MAX_NODE_URL_BYTES, MAX_NODE_URLS};

/// Most learned URLs kept: one `Welcome`'s worth plus the node in use.
pub const MAX_LEARNED: usize = MAX_NODE_URLS + 1;

/// The node URLs, configured then learned, and which one is in use.
#[derive(Clone, Debug)]
pub struct ServerList {
    urls: Vec<String>,
    configured: usize,
    current: usize,
}

fn acceptable(url: &str) -> bool {
    url.len() <= MAX_NODE_URL_BYTES && (url.starts_with("ws://") || url.starts_with("wss://"))
}

impl ServerList {
    /// The configured list (tried in order); may be empty, which the client refuses.
    pub fn new(configured: Vec<String>) -> Self {
        let configured_len = configured.len();
        ServerList { urls: configured, configured: configured_len, current: 0 }
    }

    /// Whether there is no URL at all.
    pub fn is_empty(&self) -> bool {
        self.urls.is_empty()
    }

    /// The index of the URL in use (or being tried).
    pub fn index(&self) -> usize {
        self.current
    }

    /// The URL in use (or being tried).
    pub fn current(&self) -> &str {
        self.urls.get(self.current).map(String::as_str).unwrap_or_default()
    }

    /// Moves on to the next URL, wrapping around.
    pub fn advance(&mut self) {
        if !self.urls.is_empty() {
            self.current = (self.current + 1) % self.urls.len();
        }
    }

    /// Every URL, configured first.
    pub fn urls(&self) -> &[String] {
        &self.urls
    }

    /// The node in use sent `node_urls` in its `Welcome`: they become the first learned URLs.
    pub fn learn(&mut self, node_urls: &[String]) {
        let in_use = self.current().to_owned();
        // The node in use stays (when it was learned): it is where a reconnect goes first.
        let fresh = if self.current >= self.configured { core::slice::from_ref(&in_use) } else { &[] };
        let learned_old = self.urls.split_off(self.configured);
        let mut learned: Vec<String> = Vec::new();
        // Plain loops over the three lists: an iterator chain costs more wasm.
        for list in [fresh, node_urls, &learned_old] {
            for url in list {
                if learned.len() < MAX_LEARNED
                    && acceptable(url)
                    && !self.urls.contains(url)
                    && !learned.contains(url)
                {
                    learned.push(url.clone());
                }
            }
        }
        self.urls.append(&mut learned);
        self.current = self.urls.iter().position(|u| *u == in_use).unwrap_or(0);
    }
}

#[cfg(test)]
mod tests {
    use std::{
        format,
        string::{String, ToString},
        vec::Vec,
    };

    use super::*;

    fn list(urls: &[&str]) -> Vec<String> {
        urls.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn given_node_urls_then_they_follow_the_configured_ones_deduplicated() {
        let mut s = ServerList::new(list(&["ws://a/s", "ws://b/s"]));
        s.learn(&list(&["ws://b/s", "ws://c/s", "ws://c/s", "wss://d/s"]));
        assert_eq!(s.urls(), list(&["ws://a/s", "ws://b/s", "ws://c/s", "wss://d/s"]));
        assert_eq!(s.current(), "ws://a/s");
    }

    #[test]
    fn given_bad_urls_then_they_are_not_learned() {
        let mut s = ServerList::new(list(&["ws://a/s"]));
        let long = ["ws://", &"x".repeat(MAX_NODE_URL_BYTES)].concat();
        s.learn(&[
            "http://c/s".into(),
            "javascript:alert(1)".into(),
            String::new(),
            long,
            "wss://ok/s".into(),
        ]);
        assert_eq!(s.urls(), list(&["ws://a/s", "wss://ok/s"]));
    }

    #[test]
    fn given_many_welcomes_then_the_learned_list_stays_bounded_newest_first() {
        let mut s = ServerList::new(list(&["ws://a/s"]));
        for round in 0..10 {
            let urls: Vec<String> = (0..MAX_NODE_URLS).map(|i| format!("ws://n{round}-{i}/s")).collect();
            s.learn(&urls);
            assert!(s.urls().len() <= 1 + MAX_LEARNED);
            assert_eq!(s.urls()[1], format!("ws://n{round}-0/s"));
        }
        assert_eq!(s.urls()[0], "ws://a/s");
    }

    #[test]
    fn given_a_learned_node_in_use_then_it_stays_in_the_list_and_stays_current() {
        let mut s = ServerList::new(list(&["ws://a/s"]));
        s.learn(&list(&["ws://b/s", "ws://c/s"]));
        s.advance();
        assert_eq!(s.current(), "ws://b/s");
        // b's Welcome lists the others but not itself: b stays, and stays in use.
        let others: Vec<String> = (0..MAX_NODE_URLS).map(|i| format!("ws://o{i}/s")).collect();
        s.learn(&others);
        assert_eq!(s.current(), "ws://b/s");
        assert_eq!(s.urls()[1], "ws://b/s");
        assert_eq!(s.urls().len(), 1 + MAX_LEARNED);
    }
}
