//! Bencode (BEP-3) values, a bounded, borrowing decoder, and the writer.
//!
//! The decoder never recurses on the machine stack and checks every length
//! against the input before slicing, so hostile input costs at most
//! `max_tokens` small allocations. Each dictionary entry keeps the raw bytes
//! of its value: the info-hash is taken over those, never over a re-encoding.
//!
//! Everything we write by hand goes through `write` ([`Dict`], [`List`]),
//! whose dictionaries sort their keys themselves.

use std::fmt;

mod write;

pub use write::{encode_bytes, encode_int, Dict, List};

/// Limits and strictness for one decode.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Deepest nesting of lists and dictionaries.
    pub max_depth: usize,
    /// Most values (of any kind) in one document.
    pub max_tokens: usize,
    /// Require dictionary keys in strictly increasing raw-byte order.
    pub require_sorted_keys: bool,
    /// Accept bytes after the top-level value (they are reported, not parsed).
    pub allow_trailing: bool,
}

impl Limits {
    /// BEP-3 as written: sorted keys, nothing after the value.
    pub const STRICT: Limits = Limits {
        max_depth: 100,
        max_tokens: 3_000_000,
        require_sorted_keys: true,
        allow_trailing: false,
    };
    /// What real .torrent files need (see docs/DESIGN.md, "Bencode policy").
    pub const TORRENT: Limits = Limits {
        max_depth: 100,
        max_tokens: 3_000_000,
        require_sorted_keys: false,
        allow_trailing: true,
    };
    /// Sorted keys are not required, but trailing bytes are refused.
    pub const LENIENT_KEYS: Limits = Limits {
        max_depth: 100,
        max_tokens: 3_000_000,
        require_sorted_keys: false,
        allow_trailing: false,
    };
}

/// A decoded value borrowing from the input.
#[derive(Clone, PartialEq, Eq)]
pub enum Value<'a> {
    Int(i64),
    Bytes(&'a [u8]),
    List(Vec<Value<'a>>),
    Dict(Vec<Entry<'a>>),
}

/// One dictionary entry, with the exact input bytes of its value.
#[derive(Clone, PartialEq, Eq)]
pub struct Entry<'a> {
    pub key: &'a [u8],
    pub value: Value<'a>,
    pub raw: &'a [u8],
}

impl fmt::Debug for Value<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Int(i) => write!(f, "{i}"),
            Value::Bytes(b) => write!(f, "{:?}", String::from_utf8_lossy(b)),
            Value::List(l) => f.debug_list().entries(l).finish(),
            Value::Dict(d) => f
                .debug_map()
                .entries(d.iter().map(|e| (String::from_utf8_lossy(e.key), &e.value)))
                .finish(),
        }
    }
}

impl fmt::Debug for Entry<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?}: {:?}",
            String::from_utf8_lossy(self.key),
            self.value
        )
    }
}

impl<'a> Value<'a> {
    /// The first entry named `key`, when this is a dictionary.
    pub fn get(&self, key: &str) -> Option<&Value<'a>> {
        self.entry(key).map(|e| &e.value)
    }

    pub fn entry(&self, key: &str) -> Option<&Entry<'a>> {
        match self {
            Value::Dict(d) => d.iter().find(|e| e.key == key.as_bytes()),
            _ => None,
        }
    }

    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }

    pub fn as_bytes(&self) -> Option<&'a [u8]> {
        match self {
            Value::Bytes(b) => Some(b),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&'a str> {
        self.as_bytes().and_then(|b| std::str::from_utf8(b).ok())
    }

    pub fn as_list(&self) -> Option<&[Value<'a>]> {
        match self {
            Value::List(l) => Some(l),
            _ => None,
        }
    }

    pub fn as_dict(&self) -> Option<&[Entry<'a>]> {
        match self {
            Value::Dict(d) => Some(d),
            _ => None,
        }
    }

    /// Canonical encoding: keys sorted by raw bytes (the first of
    /// duplicate keys, which only a hand-built value can have, is kept).
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Value::Int(i) => encode_int(*i, out),
            Value::Bytes(b) => encode_bytes(b, out),
            Value::List(l) => {
                let mut w = List::new();
                for v in l {
                    w.value(v);
                }
                w.write(out);
            }
            Value::Dict(d) => {
                let mut w = Dict::new();
                for e in d {
                    w.value(e.key, &e.value);
                }
                w.write(out);
            }
        }
    }
}

/// Unsorted dictionaries are allowed in lenient mode, so duplicates are
/// found by sorting (n log n) instead of comparing with every earlier key.
fn check_unique_keys(entries: &[Entry<'_>], at: usize) -> Result<(), Error> {
    if entries.windows(2).all(|w| w[0].key < w[1].key) {
        return Ok(());
    }
    let mut keys: Vec<&[u8]> = entries.iter().map(|e| e.key).collect();
    keys.sort_unstable();
    if keys.windows(2).any(|w| w[0] == w[1]) {
        return Err(Error::DuplicateKey { at });
    }
    Ok(())
}

/// Why input is not acceptable bencode; `at` is a byte offset.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("unexpected end of input at byte {at}")]
    UnexpectedEof { at: usize },
    #[error("invalid byte {byte:#04x} at byte {at}")]
    InvalidTypeByte { at: usize, byte: u8 },
    #[error("malformed integer at byte {at}")]
    InvalidInteger { at: usize },
    #[error("integer with a leading zero at byte {at}")]
    LeadingZero { at: usize },
    #[error("negative zero at byte {at}")]
    NegativeZero { at: usize },
    #[error("integer out of the 64-bit range at byte {at}")]
    IntegerOverflow { at: usize },
    #[error("string length {len} at byte {at} runs past the end of the input")]
    LengthExceedsInput { at: usize, len: u64 },
    #[error("string length too large at byte {at}")]
    LengthOverflow { at: usize },
    #[error("dictionary key at byte {at} is not a string")]
    NonStringKey { at: usize },
    #[error("dictionary key at byte {at} has no value")]
    MissingValue { at: usize },
    #[error("duplicate dictionary key at byte {at}")]
    DuplicateKey { at: usize },
    #[error("dictionary keys out of order at byte {at}")]
    UnsortedKeys { at: usize },
    #[error("nesting deeper than {limit} at byte {at}")]
    DepthLimit { at: usize, limit: usize },
    #[error("more than {limit} values")]
    TokenLimit { limit: usize },
    #[error("{count} unexpected byte(s) after the value at byte {at}")]
    TrailingData { at: usize, count: usize },
}

/// Decodes exactly one value that fills `input`.
pub fn decode(input: &[u8]) -> Result<Value<'_>, Error> {
    decode_with(input, Limits::STRICT).map(|(v, _)| v)
}

/// Decodes one value; returns it and where it ends (any trailing bytes are
/// an error unless `limits.allow_trailing`).
pub fn decode_with(input: &[u8], limits: Limits) -> Result<(Value<'_>, usize), Error> {
    let mut d = Decoder {
        input,
        pos: 0,
        tokens: 0,
        limits,
    };
    let v = d.value()?;
    if d.pos != input.len() && !limits.allow_trailing {
        return Err(Error::TrailingData {
            at: d.pos,
            count: input.len() - d.pos,
        });
    }
    Ok((v, d.pos))
}

/// Decodes one value at the start of `input` and returns it with the number
/// of bytes it used; bytes after it are the caller's (BEP-9 data messages).
pub fn decode_prefix(input: &[u8]) -> Result<(Value<'_>, usize), Error> {
    decode_with(
        input,
        Limits {
            allow_trailing: true,
            ..Limits::STRICT
        },
    )
}

enum Frame<'a> {
    List {
        items: Vec<Value<'a>>,
    },
    Dict {
        entries: Vec<Entry<'a>>,
        key: Option<(&'a [u8], usize)>,
        value_start: usize,
    },
}

struct Decoder<'a> {
    input: &'a [u8],
    pos: usize,
    tokens: usize,
    limits: Limits,
}

impl<'a> Decoder<'a> {
    fn peek(&self) -> Result<u8, Error> {
        self.input
            .get(self.pos)
            .copied()
            .ok_or(Error::UnexpectedEof { at: self.pos })
    }

    fn count(&mut self) -> Result<(), Error> {
        self.tokens += 1;
        if self.tokens > self.limits.max_tokens {
            return Err(Error::TokenLimit {
                limit: self.limits.max_tokens,
            });
        }
        Ok(())
    }

    /// Iterative decode: containers live on an explicit stack.
    fn value(&mut self) -> Result<Value<'a>, Error> {
        let mut stack: Vec<Frame<'a>> = Vec::new();
        loop {
            let v = match self.key_or_end(&mut stack)? {
                Some(dict) => dict,
                None => match self.item(&mut stack)? {
                    Some(v) => v,
                    None => continue,
                },
            };
            if let Some(done) = self.finish(&mut stack, v)? {
                return Ok(done);
            }
        }
    }

    /// Inside a dictionary, a key (or the end) comes first: reads the key
    /// into the frame, or returns the dictionary its `e` closes.
    fn key_or_end(&mut self, stack: &mut Vec<Frame<'a>>) -> Result<Option<Value<'a>>, Error> {
        let Some(Frame::Dict {
            entries,
            key,
            value_start,
        }) = stack.last_mut()
        else {
            return Ok(None);
        };
        if key.is_some() {
            return Ok(None);
        }
        let at = self.pos;
        if self.peek()? == b'e' {
            self.pos += 1;
            let entries = std::mem::take(entries);
            check_unique_keys(&entries, at)?;
            stack.pop();
            return Ok(Some(Value::Dict(entries)));
        }
        if !self.peek()?.is_ascii_digit() {
            return Err(Error::NonStringKey { at });
        }
        let k = self.string()?;
        if let Some(last) = entries.last() {
            match last.key.cmp(k) {
                std::cmp::Ordering::Equal => return Err(Error::DuplicateKey { at }),
                std::cmp::Ordering::Greater if self.limits.require_sorted_keys => {
                    return Err(Error::UnsortedKeys { at })
                }
                _ => {}
            }
        }
        // Input that simply stops is truncated (callers reading a stream
        // wait for more); an 'e' here is malformed.
        if self.peek()? == b'e' {
            return Err(Error::MissingValue { at });
        }
        *key = Some((k, at));
        *value_start = self.pos;
        Ok(None)
    }

    /// The next value: a scalar, or a list its `e` closes; `None` when it
    /// opens a container, which is pushed on the stack.
    fn item(&mut self, stack: &mut Vec<Frame<'a>>) -> Result<Option<Value<'a>>, Error> {
        let at = self.pos;
        let b = self.peek()?;
        self.count()?;
        let v = match b {
            b'i' => self.integer()?,
            b'0'..=b'9' => Value::Bytes(self.string()?),
            b'l' | b'd' => {
                if stack.len() >= self.limits.max_depth {
                    return Err(Error::DepthLimit {
                        at,
                        limit: self.limits.max_depth,
                    });
                }
                self.pos += 1;
                if b == b'l' {
                    stack.push(Frame::List { items: Vec::new() });
                } else {
                    stack.push(Frame::Dict {
                        entries: Vec::new(),
                        key: None,
                        value_start: 0,
                    });
                }
                return Ok(None);
            }
            b'e' if matches!(stack.last(), Some(Frame::List { .. })) => {
                self.pos += 1;
                let Some(Frame::List { items }) = stack.pop() else {
                    unreachable!("checked above")
                };
                Value::List(items)
            }
            byte => return Err(Error::InvalidTypeByte { at, byte }),
        };
        Ok(Some(v))
    }

    /// Hands a finished value to its parent; returns it when it is the root.
    fn finish(
        &mut self,
        stack: &mut [Frame<'a>],
        v: Value<'a>,
    ) -> Result<Option<Value<'a>>, Error> {
        match stack.last_mut() {
            None => Ok(Some(v)),
            Some(Frame::List { items }) => {
                items.push(v);
                Ok(None)
            }
            Some(Frame::Dict {
                entries,
                key,
                value_start,
            }) => {
                let (k, _) = key.take().expect("a dict value always follows its key");
                entries.push(Entry {
                    key: k,
                    value: v,
                    raw: &self.input[*value_start..self.pos],
                });
                Ok(None)
            }
        }
    }

    fn integer(&mut self) -> Result<Value<'a>, Error> {
        let start = self.pos;
        self.pos += 1; // 'i'
        let neg = self.input.get(self.pos) == Some(&b'-');
        if neg {
            self.pos += 1;
        }
        let digits_start = self.pos;
        while self.pos < self.input.len() && self.input[self.pos].is_ascii_digit() {
            self.pos += 1;
        }
        let digits = &self.input[digits_start..self.pos];
        match self.input.get(self.pos) {
            None => return Err(Error::UnexpectedEof { at: self.pos }),
            Some(b'e') => {}
            Some(_) => return Err(Error::InvalidInteger { at: start }),
        }
        if digits.is_empty() {
            return Err(Error::InvalidInteger { at: start });
        }
        if digits[0] == b'0' && digits.len() > 1 {
            return Err(Error::LeadingZero { at: start });
        }
        if neg && digits == b"0" {
            return Err(Error::NegativeZero { at: start });
        }
        let mut n: i64 = 0;
        for &d in digits {
            let d = i64::from(d - b'0');
            n = n
                .checked_mul(10)
                .and_then(|n| {
                    if neg {
                        n.checked_sub(d)
                    } else {
                        n.checked_add(d)
                    }
                })
                .ok_or(Error::IntegerOverflow { at: start })?;
        }
        self.pos += 1; // 'e'
        Ok(Value::Int(n))
    }

    fn string(&mut self) -> Result<&'a [u8], Error> {
        let start = self.pos;
        let mut len: u64 = 0;
        let mut ndigits = 0;
        while let Some(&c) = self.input.get(self.pos) {
            if !c.is_ascii_digit() {
                break;
            }
            len = len
                .checked_mul(10)
                .and_then(|l| l.checked_add(u64::from(c - b'0')))
                .ok_or(Error::LengthOverflow { at: start })?;
            ndigits += 1;
            self.pos += 1;
        }
        match self.input.get(self.pos) {
            None => return Err(Error::UnexpectedEof { at: self.pos }),
            Some(b':') => {}
            Some(&byte) => return Err(Error::InvalidTypeByte { at: self.pos, byte }),
        }
        if ndigits > 1 && self.input[start] == b'0' {
            return Err(Error::LeadingZero { at: start });
        }
        self.pos += 1;
        let n = match usize::try_from(len) {
            Ok(n) if n <= self.input.len() - self.pos => n,
            _ => return Err(Error::LengthExceedsInput { at: start, len }),
        };
        let s = &self.input[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_nested_values_and_keeps_raw_spans() {
        let input = b"d3:fool1:ai-3ee4:infod6:lengthi5eee";
        let v = decode(input).unwrap();
        let info = v.entry("info").unwrap();
        assert_eq!(info.raw, b"d6:lengthi5ee");
        assert_eq!(
            v.get("foo").unwrap().as_list().unwrap()[1].as_int(),
            Some(-3)
        );
    }

    #[test]
    fn rejects_deep_nesting_without_overflowing_the_stack() {
        let input = vec![b'l'; 1_000_000];
        assert!(matches!(decode(&input), Err(Error::DepthLimit { .. })));
    }

    #[test]
    fn refuses_a_length_larger_than_the_input() {
        assert!(matches!(
            decode(b"4294967297:x"),
            Err(Error::LengthExceedsInput { .. })
        ));
        assert!(matches!(
            decode(b"99999999999999999999999:x"),
            Err(Error::LengthOverflow { .. })
        ));
    }

    #[test]
    fn torrent_limits_accept_unsorted_keys_and_trailing_bytes() {
        let input = b"d1:bi1e1:ai2ee\n";
        assert!(decode(input).is_err());
        let (v, end) = decode_with(input, Limits::TORRENT).unwrap();
        assert_eq!(end, input.len() - 1);
        assert_eq!(v.get("a").unwrap().as_int(), Some(2));
    }

    #[test]
    fn tells_a_truncated_dict_from_a_key_without_value() {
        assert!(matches!(
            decode(b"d0:"),
            Err(Error::UnexpectedEof { at: 3 })
        ));
        assert!(matches!(
            decode(b"d1:ai1e1:be"),
            Err(Error::MissingValue { .. })
        ));
    }

    #[test]
    fn rejects_duplicate_keys_in_every_mode() {
        assert!(matches!(
            decode_with(b"d1:ai1e1:bi1e1:ai2ee", Limits::TORRENT),
            Err(Error::DuplicateKey { .. })
        ));
    }

    #[test]
    fn encodes_canonically() {
        let v = decode_with(b"d1:bi1e1:a2:xye", Limits::TORRENT).unwrap().0;
        let mut out = Vec::new();
        v.encode(&mut out);
        assert_eq!(out, b"d1:a2:xy1:bi1ee");
    }
}
