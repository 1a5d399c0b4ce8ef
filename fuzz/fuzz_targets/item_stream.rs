//! Arbitrary bytes as an item stream, a manifest and an archive object: decoding must never
//! panic, hang or allocate without bound, and whatever decodes must survive our encoder.
#![no_main]

use libfuzzer_sys::fuzz_target;
use proxborg::format::objects::{
    decode_item_stream, ArchiveMeta, Item, ItemStreamDecoder, Manifest,
};
use proxborg::format::tam::TamKeySource;
use zeroize::Zeroizing;

/// borg's plaintext-mode TAM key (salt ‖ context): lets inputs carry a valid TAM.
struct Plain;
impl TamKeySource for Plain {
    fn tam_key(&self, salt: &[u8], context: &[u8]) -> Zeroizing<Vec<u8>> {
        Zeroizing::new([salt, context].concat())
    }
}

fuzz_target!(|data: &[u8]| {
    let whole = decode_item_stream(data);
    // the incremental decoder must agree with the one-shot one, however the input is cut
    let step = usize::from(data.first().copied().unwrap_or(1)).max(1);
    let mut d = ItemStreamDecoder::new();
    let mut got: Vec<Item> = Vec::new();
    let mut failed = false;
    for piece in data.chunks(step) {
        d.feed(piece);
        loop {
            match d.next_item() {
                Ok(Some(it)) => got.push(it),
                Ok(None) => break,
                Err(_) => {
                    failed = true;
                    break;
                }
            }
        }
        if failed {
            break;
        }
    }
    let incremental = if failed {
        None
    } else {
        d.finish().ok().map(|()| got)
    };
    assert_eq!(whole.as_ref().ok(), incremental.as_ref());
    if let Ok(items) = whole {
        let mut again = Vec::new();
        for it in &items {
            it.encode(&mut again);
        }
        assert_eq!(decode_item_stream(&again).ok().as_ref(), Some(&items));
    }

    if let Ok((m, _)) = Manifest::decode(data, &Plain, false) {
        // a decoded manifest re-encodes unless it breaks a borg 1.2 limit
        if let Ok(raw) = m.encode_with_tam(&Plain) {
            let (back, _) = Manifest::decode(&raw, &Plain, true).expect("our own manifest");
            assert_eq!(back.archives, m.archives);
        }
    }
    if let Ok((a, _)) = ArchiveMeta::decode_unverified(data, &Plain) {
        if let Ok(raw) = a.encode_with_tam(&Plain) {
            let (back, _) = ArchiveMeta::decode(&raw, &Plain).expect("our own archive");
            assert_eq!(back.items, a.items);
        }
    }
});
