//! Where a follower may resume after a restart: just after the last message
//! such that it and every message before it were fully handled. Messages are
//! handled concurrently and finish out of order; saving the cursor of a
//! message as soon as it is *read* would lose any message still being
//! handled when the process dies.

use std::collections::BTreeSet;

/// Messages read and not yet handled, and those handled past the save point.
#[derive(Debug)]
pub struct Progress<C> {
    outstanding: BTreeSet<C>,
    handled: BTreeSet<C>,
}

impl<C: Ord + Copy> Default for Progress<C> {
    fn default() -> Self {
        Self {
            outstanding: BTreeSet::new(),
            handled: BTreeSet::new(),
        }
    }
}

impl<C: Ord + Copy> Progress<C> {
    /// Message `c` was read and handed on.
    pub fn read(&mut self, c: C) {
        self.outstanding.insert(c);
    }

    /// Message `c` was fully handled; returns the new save point, if it moved.
    pub fn handled(&mut self, c: C) -> Option<C> {
        if !self.outstanding.remove(&c) {
            return None;
        }
        self.handled.insert(c);
        let limit = self.outstanding.first().copied();
        let mut save = None;
        while let Some(&h) = self.handled.first() {
            if limit.is_some_and(|l| h > l) {
                break;
            }
            self.handled.pop_first();
            save = Some(h);
        }
        save
    }

    /// Messages read and not yet handled.
    pub fn in_flight(&self) -> usize {
        self.outstanding.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_save_point_never_passes_a_message_still_being_handled() {
        let mut p = Progress::default();
        for c in 1..=4 {
            p.read(c);
        }
        assert_eq!(p.handled(2), None, "1 is still being handled");
        assert_eq!(p.handled(4), None);
        assert_eq!(p.handled(1), Some(2), "1 and 2 done; 3 is not");
        assert_eq!(p.handled(3), Some(4));
        assert_eq!(p.handled(3), None, "once");
        p.read(5);
        assert_eq!(p.handled(5), Some(5));
        assert_eq!(p.in_flight(), 0);
    }
}
