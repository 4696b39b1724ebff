//! Fuzz target: the chunk JSON readers on arbitrary text, cut at newlines into the chunks of
//! one stream. The fast reader (scanner, remembered layout, serde fallback) and serde alone
//! give the same items and the same texts, and neither panics.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tracebench::client::chunk::{ChunkReader, JsonPath};
use tracebench::client::sse::EventRef;

fuzz_target!(|input: &str| {
    let mut fast = ChunkReader::new(JsonPath::Fast);
    let mut serde = ChunkReader::new(JsonPath::Serde);
    for data in input.split('\n') {
        let event = EventRef {
            event: "message",
            data,
        };
        let (mut fast_text, mut serde_text) = (String::new(), String::new());
        let fast_item = fast.interpret(event, &mut fast_text);
        let serde_item = serde.interpret(event, &mut serde_text);
        assert_eq!((fast_item, fast_text), (serde_item, serde_text), "{data:?}");
    }
});
