//! File selection (`download --select`, a magnet's BEP-53 `so=`): which
//! files are wanted, which pieces that makes wanted, and which files must
//! exist on disk.
//!
//! Indexes are positions in the info dictionary's file list, pad entries
//! included, as BEP-53 and other clients count them; `xorrent info` prints
//! them. Selecting a pad file selects no bytes.

use std::ops::RangeInclusive;

use super::{FileKind, Torrent};
use crate::types::Bitfield;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectError {
    #[error(
        "the file selection names file {index}, but the torrent has only {count} file{} \
         (indexes 0 to {}; `xorrent info` lists them)",
        if *count == 1 { "" } else { "s" },
        count - 1
    )]
    NoSuchFile { index: u32, count: usize },
    #[error("the file selection names no file")]
    Empty,
}

/// The selected files, one flag per entry of `torrent.files`.
pub(crate) fn select_files(
    torrent: &Torrent,
    ranges: &[RangeInclusive<u32>],
) -> Result<Vec<bool>, SelectError> {
    let count = torrent.files.len();
    if ranges.is_empty() {
        return Err(SelectError::Empty);
    }
    let mut selected = vec![false; count];
    for r in ranges {
        // Checked before the loop: `4-4000000000` must not spin.
        if *r.end() as usize >= count {
            let index = (*r.start()).max(u32::try_from(count).expect("below *r.end()"));
            return Err(SelectError::NoSuchFile { index, count });
        }
        for i in r.clone() {
            selected[i as usize] = true;
        }
    }
    Ok(selected)
}

/// Pieces holding any byte of a selected file (pad files never count).
pub(crate) fn wanted_pieces(torrent: &Torrent, selected: &[bool]) -> Bitfield {
    let geo = torrent.geometry();
    let mut wanted = Bitfield::new(torrent.num_pieces());
    for (f, _) in torrent
        .files
        .iter()
        .zip(selected)
        .filter(|(f, &s)| s && f.kind == FileKind::Regular && f.length > 0)
    {
        for p in geo.pieces_over(f.offset..f.offset + f.length) {
            wanted.set(p);
        }
    }
    wanted
}

/// Bytes of the pieces in `pieces`.
pub(crate) fn piece_bytes(torrent: &Torrent, pieces: &Bitfield) -> u64 {
    let geo = torrent.geometry();
    pieces
        .iter_ones()
        .map(|p| u64::from(geo.piece_size(p)))
        .sum()
}

/// Files to create: the selected ones (empty files and symlinks too) and
/// every regular file a wanted piece is written across.
pub(crate) fn files_to_create(
    torrent: &Torrent,
    selected: &[bool],
    wanted: &Bitfield,
) -> Vec<bool> {
    let geo = torrent.geometry();
    torrent
        .files
        .iter()
        .zip(selected)
        .map(|(f, &s)| {
            if f.kind == FileKind::Pad {
                return false;
            }
            if s {
                return true;
            }
            if f.kind != FileKind::Regular || f.length == 0 {
                return false;
            }
            geo.pieces_over(f.offset..f.offset + f.length)
                .any(|p| wanted.get(p))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::PieceIndex;

    /// Piece length 10; file `i` is `t/i`.
    fn torrent(files: &[(u64, FileKind)]) -> Torrent {
        let names: Vec<String> = (0..files.len()).map(|i| format!("t/{i}")).collect();
        let spec: Vec<(&str, u64, FileKind)> = names
            .iter()
            .zip(files)
            .map(|(n, (l, k))| (n.as_str(), *l, k.clone()))
            .collect();
        crate::metainfo::test_torrent(10, &spec)
    }

    #[test]
    fn wanted_pieces_cover_selected_files_and_nothing_else() {
        use FileKind::*;
        // Bytes: f0 0..15, f1 15..15 (empty), pad 15..20, f3 20..45, f4 45..50.
        let t = torrent(&[
            (15, Regular),
            (0, Regular),
            (5, Pad),
            (25, Regular),
            (5, Regular),
        ]);
        let sel = select_files(&t, &[1..=2, 4..=4]).unwrap();
        let w = wanted_pieces(&t, &sel);
        assert_eq!(
            w.iter_ones().map(PieceIndex::get).collect::<Vec<_>>(),
            vec![4],
            "pads and empty files want nothing"
        );
        let create = files_to_create(&t, &sel, &w);
        assert_eq!(
            create,
            vec![false, true, false, true, true],
            "f3 shares piece 4 with f4"
        );
        let sel = select_files(&t, &[0..=0]).unwrap();
        let w = wanted_pieces(&t, &sel);
        assert_eq!(
            w.iter_ones().map(PieceIndex::get).collect::<Vec<_>>(),
            vec![0, 1]
        );
        assert_eq!(piece_bytes(&t, &w), 20);
        assert_eq!(
            files_to_create(&t, &sel, &w),
            vec![true, false, false, false, false]
        );
    }

    #[test]
    fn an_index_past_the_last_file_is_an_error() {
        let t = torrent(&[(15, FileKind::Regular), (5, FileKind::Regular)]);
        let e = select_files(&t, &[0..=0, 1..=u32::MAX]).unwrap_err();
        assert_eq!(e, SelectError::NoSuchFile { index: 2, count: 2 });
        assert!(e.to_string().contains("names file 2"), "{e}");
        assert!(e.to_string().contains("0 to 1"), "{e}");
        assert_eq!(select_files(&t, &[]), Err(SelectError::Empty));
        assert_eq!(select_files(&t, &[1..=1]).unwrap(), vec![false, true]);
    }
}
