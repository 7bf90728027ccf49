//! Magnet links (BEP-9, BEP-53): parsing never panics, and whatever parses
//! prints canonically to a link that parses to the same magnet.
#![no_main]

use libfuzzer_sys::fuzz_target;
use xorrent::magnet::Magnet;

fuzz_target!(|data: &[u8]| {
    // Links arrive as text; invalid UTF-8 never reaches the parser.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(m) = Magnet::parse(text) else {
        return;
    };
    let printed = m.to_string();
    let again = Magnet::parse(&printed).expect("our canonical link parses");
    assert_eq!(again, m, "{printed}");
    assert_eq!(again.to_string(), printed, "printing is canonical");
    let _ = m.peer_addrs();
    for i in 0..4 {
        let _ = m.selects(i);
    }
});
