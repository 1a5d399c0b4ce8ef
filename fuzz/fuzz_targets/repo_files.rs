//! Arbitrary bytes as the repository's derived files (index.N, hints.N, integrity.N) and
//! the chunks cache: loading must never panic; what loads must serialize again.
#![no_main]

use libfuzzer_sys::fuzz_target;
use proxborg::format::hashindex::{ChunkIndex, NsIndex};
use proxborg::format::hints;
use proxborg::format::integrity::IntegrityFile;

fuzz_target!(|data: &[u8]| {
    if let Ok(ix) = NsIndex::from_bytes(data) {
        let again = NsIndex::from_bytes(&ix.to_bytes()).expect("our own index must load");
        assert_eq!(again.len(), ix.len());
    }
    if let Ok(ix) = ChunkIndex::from_bytes(data) {
        let _ = ix.to_bytes();
    }
    if let Ok(hints::Decoded::Current(h)) = hints::decode(data) {
        let _ = hints::decode(&h.to_bytes()).expect("our own hints must load");
    }
    let _ = IntegrityFile::decode(data);
});
