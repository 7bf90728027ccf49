//! The one bencode writer. Dictionaries are built with [`Dict`], which
//! sorts its keys by raw bytes when it is written, so no caller can emit
//! an unsorted (non-canonical) dictionary whatever order it adds entries
//! in. Lists are built with [`List`]; [`encode_int`] and [`encode_bytes`]
//! are the primitives under both (and under [`super::Value::encode`]).
//!
//! Typed documents with many fields (`.torrent` creation) go through
//! `serde_bencode` instead; everything hand-assembled goes through here.

use std::ops::Range;

use super::Value;

/// `i<n>e`.
pub fn encode_int(i: i64, out: &mut Vec<u8>) {
    out.push(b'i');
    out.extend_from_slice(i.to_string().as_bytes());
    out.push(b'e');
}

/// `<len>:<bytes>`.
pub fn encode_bytes(b: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(b.len().to_string().as_bytes());
    out.push(b':');
    out.extend_from_slice(b);
}

/// A dictionary being built. Entries are encoded as they are added (into
/// one buffer) and put in key order by [`Dict::write`].
///
/// A key added twice keeps its first value; later ones are dropped, the
/// way [`Value::get`] reads the first of duplicate keys. (The decoder
/// refuses duplicates, so writing them would make undecodable output.)
#[derive(Debug, Default, Clone)]
pub struct Dict {
    buf: Vec<u8>,
    /// Key and encoded value, as spans of `buf`, in insertion order.
    entries: Vec<(Range<usize>, Range<usize>)>,
}

impl Dict {
    pub fn new() -> Dict {
        Dict::default()
    }

    /// Room for `bytes` of encoded keys and values.
    pub fn with_capacity(bytes: usize) -> Dict {
        Dict {
            buf: Vec::with_capacity(bytes),
            entries: Vec::new(),
        }
    }

    /// Adds `key` and a value written by `f`, which must write exactly
    /// one bencoded value.
    fn entry(&mut self, key: &[u8], f: impl FnOnce(&mut Vec<u8>)) -> &mut Dict {
        let k = self.buf.len();
        self.buf.extend_from_slice(key);
        let v = self.buf.len();
        f(&mut self.buf);
        self.entries.push((k..v, v..self.buf.len()));
        self
    }

    pub fn int(&mut self, key: impl AsRef<[u8]>, i: i64) -> &mut Dict {
        self.entry(key.as_ref(), |out| encode_int(i, out))
    }

    /// A byte string (`&str`, `&[u8]`, `Vec<u8>` and arrays all fit).
    pub fn bytes(&mut self, key: impl AsRef<[u8]>, b: impl AsRef<[u8]>) -> &mut Dict {
        self.entry(key.as_ref(), |out| encode_bytes(b.as_ref(), out))
    }

    pub fn list(&mut self, key: impl AsRef<[u8]>, l: &List) -> &mut Dict {
        self.entry(key.as_ref(), |out| l.write(out))
    }

    pub fn dict(&mut self, key: impl AsRef<[u8]>, d: &Dict) -> &mut Dict {
        self.entry(key.as_ref(), |out| d.write(out))
    }

    /// A decoded value, re-encoded canonically.
    pub fn value(&mut self, key: impl AsRef<[u8]>, v: &Value<'_>) -> &mut Dict {
        self.entry(key.as_ref(), |out| v.encode(out))
    }

    /// One value that is already bencoded, copied verbatim (an `info`
    /// dictionary, whose exact bytes carry the info-hash). The caller
    /// vouches that `encoded` is exactly one value.
    pub fn raw(&mut self, key: impl AsRef<[u8]>, encoded: &[u8]) -> &mut Dict {
        self.entry(key.as_ref(), |out| out.extend_from_slice(encoded))
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Appends `d…e` with the keys in increasing raw-byte order.
    pub fn write(&self, out: &mut Vec<u8>) {
        let key = |r: &Range<usize>| &self.buf[r.clone()];
        let mut order: Vec<&(Range<usize>, Range<usize>)> = self.entries.iter().collect();
        // Stable, so the first of equal keys stays first and is kept.
        order.sort_by(|a, b| key(&a.0).cmp(key(&b.0)));
        order.dedup_by(|later, first| key(&later.0) == key(&first.0));
        out.reserve(self.buf.len() + 8 * order.len() + 2);
        out.push(b'd');
        for (k, v) in order {
            encode_bytes(key(k), out);
            out.extend_from_slice(&self.buf[v.clone()]);
        }
        out.push(b'e');
    }

    /// The encoded dictionary.
    pub fn finish(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write(&mut out);
        out
    }
}

/// A list being built; items keep the order they are added in.
#[derive(Debug, Default, Clone)]
pub struct List {
    buf: Vec<u8>,
}

impl List {
    pub fn new() -> List {
        List::default()
    }

    pub fn int(&mut self, i: i64) -> &mut List {
        encode_int(i, &mut self.buf);
        self
    }

    pub fn bytes(&mut self, b: impl AsRef<[u8]>) -> &mut List {
        encode_bytes(b.as_ref(), &mut self.buf);
        self
    }

    pub fn list(&mut self, l: &List) -> &mut List {
        l.write(&mut self.buf);
        self
    }

    pub fn dict(&mut self, d: &Dict) -> &mut List {
        d.write(&mut self.buf);
        self
    }

    pub fn value(&mut self, v: &Value<'_>) -> &mut List {
        v.encode(&mut self.buf);
        self
    }

    /// One already-bencoded value, copied verbatim.
    pub fn raw(&mut self, encoded: &[u8]) -> &mut List {
        self.buf.extend_from_slice(encoded);
        self
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Appends `l…e`.
    pub fn write(&self, out: &mut Vec<u8>) {
        out.reserve(self.buf.len() + 2);
        out.push(b'l');
        out.extend_from_slice(&self.buf);
        out.push(b'e');
    }

    pub fn finish(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write(&mut out);
        out
    }
}

/// A list of byte strings, the commonest list in a `.torrent`.
impl<B: AsRef<[u8]>> FromIterator<B> for List {
    fn from_iter<I: IntoIterator<Item = B>>(items: I) -> List {
        let mut l = List::new();
        for b in items {
            l.bytes(b);
        }
        l
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bencode::{decode, decode_with, Limits};
    use proptest::prelude::*;

    #[test]
    fn keys_come_out_sorted_whatever_order_they_went_in() {
        let mut d = Dict::new();
        d.int("y", 1)
            .bytes("b", "x")
            .int("ab", 2)
            .bytes("", "e")
            .int("a", 3);
        d.bytes([0xff], "hi").bytes("B", "upper");
        let out = d.finish();
        assert_eq!(
            out,
            b"d0:1:e1:B5:upper1:ai3e2:abi2e1:b1:x1:yi1e1:\xff2:hie".as_slice()
        );
        decode(&out).expect("strict decoder takes it");
        let mut same = Dict::new();
        same.int("a", 3).int("ab", 2).bytes("", "e").bytes("b", "x");
        same.bytes("B", "upper").bytes([0xff], "hi").int("y", 1);
        assert_eq!(same.finish(), out);
    }

    #[test]
    fn nested_dicts_and_lists() {
        let mut inner = Dict::new();
        inner.bytes("z", "1").int("m", -7);
        let mut l = List::new();
        l.int(0).bytes("s").dict(&inner).list(&List::new());
        let mut d = Dict::new();
        d.list("l", &l)
            .dict("d", &inner)
            .dict("empty", &Dict::new());
        let out = d.finish();
        assert_eq!(
            out,
            b"d1:dd1:mi-7e1:z1:1e5:emptyde1:lli0e1:sd1:mi-7e1:z1:1eleee".as_slice()
        );
        let v = decode(&out).unwrap();
        assert_eq!(v.get("l").unwrap().as_list().unwrap().len(), 4);
        assert_eq!(List::new().finish(), b"le");
        assert_eq!(Dict::new().finish(), b"de");
        let urls: List = ["a", "bc"].into_iter().collect();
        assert_eq!(urls.finish(), b"l1:a2:bce");
    }

    #[test]
    fn raw_values_are_spliced_verbatim() {
        // Unsorted keys inside: only a byte copy keeps an info-hash.
        let info = b"d4:name1:a6:lengthi3ee";
        let mut d = Dict::new();
        d.raw("info", info).bytes("announce", "http://t/");
        let out = d.finish();
        assert_eq!(out, b"d8:announce9:http://t/4:infod4:name1:a6:lengthi3eee");
        let v = decode_with(&out, Limits::TORRENT).unwrap().0;
        assert_eq!(v.entry("info").unwrap().raw, info);
        let mut l = List::new();
        l.raw(b"i5e").raw(info);
        assert_eq!(l.finish(), b"li5ed4:name1:a6:lengthi3eee");
    }

    #[test]
    fn the_first_of_duplicate_keys_wins() {
        let mut d = Dict::new();
        d.int("b", 1).int("a", 1).int("b", 2).bytes("a", "x");
        assert_eq!(d.finish(), b"d1:ai1e1:bi1ee");
    }

    #[test]
    fn ints_cover_the_whole_range() {
        let mut l = List::new();
        l.int(i64::MIN).int(-1).int(0).int(i64::MAX);
        let out = l.finish();
        assert_eq!(
            out,
            b"li-9223372036854775808ei-1ei0ei9223372036854775807ee".as_slice()
        );
        let v = decode(&out).unwrap();
        let ints: Vec<i64> = v
            .as_list()
            .unwrap()
            .iter()
            .filter_map(|v| v.as_int())
            .collect();
        assert_eq!(ints, [i64::MIN, -1, 0, i64::MAX]);
    }

    #[test]
    fn decoded_values_re_encode_through_the_writer() {
        let input = b"d1:bd1:zi0e1:yle1:xde0:i1ee1:al0:i-1eee";
        let v = decode_with(input, Limits::TORRENT).unwrap().0;
        let mut d = Dict::new();
        d.value("v", &v);
        let out = d.finish();
        assert_eq!(out, b"d1:vd1:al0:i-1ee1:bd0:i1e1:xde1:yle1:zi0eeee");
        decode(&out).expect("canonical");
    }

    /// An owned value tree; dict entries in insertion order, maybe with
    /// duplicate keys.
    #[derive(Debug, Clone)]
    enum Tree {
        Int(i64),
        Bytes(Vec<u8>),
        List(Vec<Tree>),
        Dict(Vec<(Vec<u8>, Tree)>),
    }

    fn to_list(items: &[Tree]) -> List {
        let mut l = List::new();
        for t in items {
            match t {
                Tree::Int(i) => l.int(*i),
                Tree::Bytes(b) => l.bytes(b),
                Tree::List(x) => l.list(&to_list(x)),
                Tree::Dict(x) => l.dict(&to_dict(x)),
            };
        }
        l
    }

    fn to_dict(entries: &[(Vec<u8>, Tree)]) -> Dict {
        let mut d = Dict::new();
        for (k, t) in entries {
            match t {
                Tree::Int(i) => d.int(k, *i),
                Tree::Bytes(b) => d.bytes(k, b),
                Tree::List(x) => d.list(k, &to_list(x)),
                Tree::Dict(x) => d.dict(k, &to_dict(x)),
            };
        }
        d
    }

    /// Whether `v` is `t` with every dictionary sorted and the first of
    /// duplicate keys kept.
    fn matches(v: &Value<'_>, t: &Tree) -> bool {
        match (v, t) {
            (Value::Int(a), Tree::Int(b)) => a == b,
            (Value::Bytes(a), Tree::Bytes(b)) => a == b,
            (Value::List(a), Tree::List(b)) => {
                a.len() == b.len() && a.iter().zip(b).all(|(v, t)| matches(v, t))
            }
            (Value::Dict(a), Tree::Dict(b)) => {
                let mut want: Vec<&(Vec<u8>, Tree)> = b.iter().collect();
                want.sort_by(|x, y| x.0.cmp(&y.0));
                want.dedup_by(|later, first| later.0 == first.0);
                a.len() == want.len()
                    && a.iter()
                        .zip(want)
                        .all(|(e, (k, t))| e.key == k.as_slice() && matches(&e.value, t))
            }
            _ => false,
        }
    }

    fn tree() -> impl Strategy<Value = Tree> {
        let key = proptest::collection::vec(prop_oneof![Just(b'a'), Just(b'b'), any::<u8>()], 0..3);
        let leaf = prop_oneof![
            any::<i64>().prop_map(Tree::Int),
            proptest::collection::vec(any::<u8>(), 0..8).prop_map(Tree::Bytes),
        ];
        leaf.prop_recursive(4, 48, 6, move |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Tree::List),
                proptest::collection::vec((key.clone(), inner), 0..6).prop_map(Tree::Dict),
            ]
        })
    }

    proptest! {
        #[test]
        fn written_values_decode_strictly_to_what_was_written(
            entries in proptest::collection::vec((proptest::collection::vec(any::<u8>(), 0..3), tree()), 0..8)
        ) {
            let out = to_dict(&entries).finish();
            let v = decode(&out).expect("the writer's output is canonical");
            prop_assert!(matches(&v, &Tree::Dict(entries)));
            // Canonical output is a fixed point of re-encoding.
            let mut again = Vec::new();
            v.encode(&mut again);
            prop_assert_eq!(again, out);
        }
    }
}
