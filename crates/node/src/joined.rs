//! The topics one connected peer joined, and whether it announces itself in each.
//!
//! A peer joins a handful of topics (at most `max_topics_per_peer`), so a short list scanned
//! linearly is as fast as a hash map and much smaller: the capacity benchmark's heap profile
//! showed the per-peer `HashMap<TopicId, bool>` at ~200 B for one topic (48 B inline and a
//! 153 B table); this list is 24 B inline and 33 B per topic, and a peer that joined nothing
//! allocates nothing.

use signal_mesh_proto::TopicId;

/// Joined topics of one peer, each with its announce flag; no topic twice.
#[derive(Debug, Default)]
pub(crate) struct Joined(Vec<(TopicId, bool)>);

impl Joined {
    /// How many topics.
    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    /// The announce flag of `topic`, if joined.
    pub(crate) fn get(&self, topic: &TopicId) -> Option<bool> {
        self.0.iter().find(|(t, _)| t == topic).map(|&(_, a)| a)
    }

    /// Joins `topic` (or updates its flag); returns the previous flag.
    pub(crate) fn insert(&mut self, topic: TopicId, announce: bool) -> Option<bool> {
        if let Some(entry) = self.0.iter_mut().find(|(t, _)| *t == topic) {
            return Some(std::mem::replace(&mut entry.1, announce));
        }
        // Grow one at a time while small: most peers join one or two topics.
        if self.0.len() < 4 {
            self.0.reserve_exact(1);
        }
        self.0.push((topic, announce));
        None
    }

    /// Leaves `topic`; returns its flag if it was joined.
    pub(crate) fn remove(&mut self, topic: &TopicId) -> Option<bool> {
        let i = self.0.iter().position(|(t, _)| t == topic)?;
        let (_, announced) = self.0.swap_remove(i);
        if self.0.is_empty() {
            self.0 = Vec::new();
        }
        Some(announced)
    }

    /// The topics and their flags.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (TopicId, bool)> + '_ {
        self.0.iter().copied()
    }

    /// Takes every topic out, leaving the list empty.
    pub(crate) fn take(&mut self) -> Vec<(TopicId, bool)> {
        std::mem::take(&mut self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topic(n: u8) -> TopicId {
        TopicId::from_array([n; 32])
    }

    #[test]
    fn insert_get_remove_keep_one_entry_per_topic() {
        let mut j = Joined::default();
        assert_eq!(j.insert(topic(1), true), None);
        assert_eq!(j.insert(topic(2), false), None);
        assert_eq!(j.insert(topic(1), false), Some(true));
        assert_eq!(j.len(), 2);
        assert_eq!(j.get(&topic(1)), Some(false));
        assert_eq!(j.get(&topic(3)), None);
        assert_eq!(j.remove(&topic(1)), Some(false));
        assert_eq!(j.remove(&topic(1)), None);
        assert_eq!(j.iter().collect::<Vec<_>>(), vec![(topic(2), false)]);
        assert_eq!(j.take(), vec![(topic(2), false)]);
        assert_eq!(j.len(), 0);
    }

    #[test]
    fn an_emptied_list_frees_its_buffer() {
        let mut j = Joined::default();
        j.insert(topic(1), true);
        assert_eq!(j.0.capacity(), 1);
        j.remove(&topic(1));
        assert_eq!(j.0.capacity(), 0);
    }
}
