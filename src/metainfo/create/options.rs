//! Parsing what `xorrent create` is given: piece lengths and tracker
//! tiers.

use super::*;

/// `--piece-length`: `auto` or a fixed power of two.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PieceLength {
    #[default]
    Auto,
    Fixed(u32),
}

impl PieceLength {
    /// The piece length for `total` bytes.
    pub fn resolve(self, total: u64) -> u32 {
        match self {
            PieceLength::Auto => auto_piece_length(total),
            PieceLength::Fixed(n) => n,
        }
    }
}

impl FromStr for PieceLength {
    type Err = CreateError;
    fn from_str(s: &str) -> Result<PieceLength, CreateError> {
        if s.trim().eq_ignore_ascii_case("auto") {
            Ok(PieceLength::Auto)
        } else {
            parse_piece_length(s).map(PieceLength::Fixed)
        }
    }
}

/// Parses `262144`, `256K`, `256KB`, `256KiB`, `1M`, `1MiB` (case-insensitive,
/// K = KB = KiB = 1024) and checks it is a power of two from 16 KiB to 16 MiB.
pub fn parse_piece_length(s: &str) -> Result<u32, CreateError> {
    let bad = || CreateError::InvalidPieceLength(s.to_string());
    let t = s.trim().to_ascii_lowercase();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(digits);
    let num: u64 = num.parse().map_err(|_| bad())?;
    let mult: u64 = match unit.trim_start() {
        "" => 1,
        "k" | "kb" | "kib" => 1024,
        "m" | "mb" | "mib" => 1024 * 1024,
        _ => return Err(bad()),
    };
    let n = num
        .checked_mul(mult)
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(bad)?;
    if !n.is_power_of_two() || !(MIN_PIECE_LENGTH..=MAX_PIECE_LENGTH).contains(&n) {
        return Err(bad());
    }
    Ok(n)
}

/// The `auto` rule: the smallest power of two from 16 KiB to 16 MiB giving
/// at most [`AUTO_MAX_PIECES`] pieces (clamped to the range).
pub fn auto_piece_length(total: u64) -> u32 {
    let mut p = MIN_PIECE_LENGTH;
    while p < MAX_PIECE_LENGTH && total.div_ceil(u64::from(p)) > AUTO_MAX_PIECES {
        p *= 2;
    }
    p
}

/// Splits `-t` values into BEP-12 tiers: each value is a tier, `sep`
/// separates URLs within it (an empty `sep` means one URL per value).
/// Blank parts are ignored, repeated URLs dropped, every URL must parse.
pub fn parse_tiers(values: &[String], sep: &str) -> Result<Vec<Vec<String>>, CreateError> {
    let mut seen = HashSet::new();
    let mut tiers = Vec::new();
    for v in values {
        let parts: Vec<&str> = if sep.is_empty() {
            vec![v.as_str()]
        } else {
            v.split(sep).collect()
        };
        let urls: Vec<&str> = parts
            .into_iter()
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .collect();
        if urls.is_empty() {
            return Err(CreateError::InvalidUrl {
                url: v.clone(),
                reason: "no tracker URL in it".into(),
            });
        }
        let mut tier = Vec::new();
        for u in urls {
            check_url(u)?;
            if seen.insert(u.to_string()) {
                tier.push(u.to_string());
            }
        }
        if !tier.is_empty() {
            tiers.push(tier);
        }
    }
    Ok(tiers)
}

pub(super) fn check_url(u: &str) -> Result<(), CreateError> {
    match url::Url::parse(u) {
        Ok(p) if p.has_host() => Ok(()),
        Ok(_) => Err(CreateError::InvalidUrl {
            url: u.to_string(),
            reason: "it has no host".into(),
        }),
        Err(e) => Err(CreateError::InvalidUrl {
            url: u.to_string(),
            reason: e.to_string(),
        }),
    }
}
