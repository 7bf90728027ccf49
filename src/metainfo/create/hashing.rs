//! Hashing the pieces: files read in order on several threads, each
//! piece from whichever files it spans.

use super::*;

/// SHA-1 of every piece, concatenated. Workers take indexes from a shared
/// counter; each holds one piece-sized buffer.
pub(super) fn hash_pieces(
    files: &[SourceFile],
    total: u64,
    piece_length: u32,
    threads: usize,
    progress: &AtomicU64,
    cancel: &AtomicBool,
) -> Result<Vec<u8>, CreateError> {
    let count = usize::try_from(total.div_ceil(u64::from(piece_length)))
        .expect("the caller checked it against MAX_PIECES");
    let threads = threads.clamp(1, count.max(1));
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let work = || -> Result<Vec<(usize, [u8; 20])>, CreateError> {
        let mut reader = Reader { files, open: None };
        let mut buf = vec![0u8; piece_length as usize];
        let mut out = Vec::new();
        loop {
            if cancel.load(Ordering::Relaxed) {
                return Err(CreateError::Cancelled);
            }
            if failed.load(Ordering::Relaxed) {
                return Ok(out);
            }
            let i = next.fetch_add(1, Ordering::Relaxed);
            if i >= count {
                return Ok(out);
            }
            let start = i as u64 * u64::from(piece_length);
            let len = usize::try_from((total - start).min(u64::from(piece_length)))
                .expect("at most piece_length");
            if let Err(e) = reader.read_at(start, &mut buf[..len]) {
                failed.store(true, Ordering::Relaxed);
                return Err(e);
            }
            out.push((i, Sha1::digest(&buf[..len]).into()));
            progress.fetch_add(len as u64, Ordering::Relaxed);
        }
    };
    let results: Vec<_> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads).map(|_| s.spawn(work)).collect();
        workers
            .into_iter()
            .map(|w| w.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    });
    let mut pieces = vec![0u8; count * 20];
    for r in results {
        for (i, h) in r? {
            pieces[i * 20..(i + 1) * 20].copy_from_slice(&h);
        }
    }
    Ok(pieces)
}

/// Positional reads of the torrent byte stream, keeping the last file open.
pub(super) struct Reader<'a> {
    files: &'a [SourceFile],
    open: Option<(usize, File)>,
}

impl Reader<'_> {
    pub(super) fn read_at(
        &mut self,
        mut offset: u64,
        mut buf: &mut [u8],
    ) -> Result<(), CreateError> {
        while !buf.is_empty() {
            // The file holding `offset`; empty files are passed over.
            let i = self
                .files
                .partition_point(|f| f.offset + f.length <= offset);
            let f = &self.files[i];
            let at = offset - f.offset;
            let n = usize::try_from(f.length - at)
                .unwrap_or(usize::MAX)
                .min(buf.len());
            let (now, rest) = buf.split_at_mut(n);
            let file = self.file(i)?;
            file.read_exact_at(now, at).map_err(|source| {
                if source.kind() == std::io::ErrorKind::UnexpectedEof {
                    CreateError::Changed {
                        path: f.disk.clone(),
                    }
                } else {
                    CreateError::Io {
                        path: f.disk.clone(),
                        source,
                    }
                }
            })?;
            buf = rest;
            offset += n as u64;
        }
        Ok(())
    }

    pub(super) fn file(&mut self, i: usize) -> Result<&File, CreateError> {
        if self.open.as_ref().map(|(j, _)| *j) != Some(i) {
            let f = &self.files[i];
            let mut o = std::fs::OpenOptions::new();
            o.read(true);
            if f.nofollow {
                // Never through a link; and a FIFO swapped in since the
                // scan must not block the open (it is refused below).
                o.custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK);
            }
            let file = o.open(&f.disk).map_err(|source| CreateError::Io {
                path: f.disk.clone(),
                source,
            })?;
            if !file.metadata().is_ok_and(|m| m.is_file()) {
                return Err(CreateError::Changed {
                    path: f.disk.clone(),
                });
            }
            self.open = Some((i, file));
        }
        Ok(&self.open.as_ref().expect("just opened").1)
    }
}
