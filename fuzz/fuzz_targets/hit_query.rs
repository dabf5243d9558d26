//! Fuzzes the query-string decoder: arbitrary bytes, made a `str` lossily as the collector's
//! request target is, must decode without panicking, one parameter per non-empty `&` piece.

#![no_main]

use backflow::collect::query::{decode_query, first, split_trailing_param};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let raw = String::from_utf8_lossy(data);
    let (params, _issues) = decode_query(&raw);
    let pieces = raw.split('&').filter(|p| !p.is_empty()).count();
    assert_eq!(params.len(), pieces, "one parameter per non-empty piece");
    if let Some(p) = params.first() {
        assert!(first(&params, &p.name).is_some());
    }
    // The landing split (Miaozhen `o=`, AdMaster `u`) on the same input.
    for name in ["o", "u"] {
        let (rest, landing) = split_trailing_param(&raw, name);
        if let Some(landing) = landing {
            assert!(rest.len() + landing.len() < raw.len());
        } else {
            assert_eq!(rest, raw.as_ref());
        }
    }
});
