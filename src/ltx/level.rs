//! The compaction level of an LTX file in a replica (`ltx/<level>/`): 0 holds one file per
//! sync, 1 to 8 the compacted levels, 9 the snapshots (Litestream's `SnapshotLevel`).

use std::fmt;

/// A replica level, `0..=9`. A newtype so that a level never mixes with a count or an index,
/// and so that a level out of range cannot be built: [`Level::new`] refuses it. Displays as
/// the decimal number, the way replica paths (`ltx/9/...`) and logs name it, and serializes as
/// that number (`"level": 9` in JSON answers).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct Level(u8);

impl Level {
    /// Level 0: one file per sync, as the database threads upload them.
    pub const L0: Level = Level(0);
    /// Level 1: the first compacted level, made from level 0.
    pub const L1: Level = Level(1);
    /// Level 9: snapshots, each covering the whole database from TXID 1.
    pub const SNAPSHOT: Level = Level(9);
    /// How many levels there are (0 to 9), e.g. to size a table indexed by [`Level::index`].
    pub const COUNT: usize = Level::SNAPSHOT.0 as usize + 1;

    /// The level with this number; `None` above 9.
    pub const fn new(n: u8) -> Option<Level> {
        if n <= Level::SNAPSHOT.0 {
            Some(Level(n))
        } else {
            None
        }
    }

    /// The number of this level, for encodings that are not decimal (S3 keys are hex).
    pub const fn get(self) -> u8 {
        self.0
    }

    /// This level as an index into a table of [`Level::COUNT`] entries.
    pub const fn index(self) -> usize {
        self.0 as usize
    }

    /// Every level, lowest first.
    pub fn all() -> impl Iterator<Item = Level> {
        (0..=Level::SNAPSHOT.0).map(Level)
    }

    /// Whether compaction writes this level from the one below (1 to 8): not level 0 (the
    /// syncs write it) and not the snapshots.
    pub const fn is_compacted(self) -> bool {
        self.0 > 0 && self.0 < Level::SNAPSHOT.0
    }

    /// The level below this one; `None` for level 0.
    pub const fn below(self) -> Option<Level> {
        match self.0.checked_sub(1) {
            Some(n) => Some(Level(n)),
            None => None,
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_0_to_9_are_levels_and_they_print_as_numbers() {
        assert_eq!(Level::new(0), Some(Level::L0));
        assert_eq!(Level::new(9), Some(Level::SNAPSHOT));
        assert_eq!(Level::new(10), None);
        assert_eq!(Level::new(255), None);
        let all: Vec<String> = Level::all().map(|l| l.to_string()).collect();
        assert_eq!(all, ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"]);
        assert_eq!(Level::COUNT, 10);
        assert_eq!(format!("ltx/{}/", Level::SNAPSHOT), "ltx/9/");
    }

    #[test]
    fn compacted_levels_are_1_to_8_and_below_steps_down() {
        let compacted: Vec<u8> = Level::all()
            .filter(|l| l.is_compacted())
            .map(Level::get)
            .collect();
        assert_eq!(compacted, [1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(Level::L1.below(), Some(Level::L0));
        assert_eq!(Level::L0.below(), None);
        assert_eq!(Level::SNAPSHOT.below(), Level::new(8));
    }
}
