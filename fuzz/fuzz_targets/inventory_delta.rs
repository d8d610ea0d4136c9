//! An inventory delta from a hostile agent applied to a stored inventory,
//! as the store does: the first frame is the base `Inventory`, the second
//! the `InventoryDelta`; the result is canonicalised and hashed like a
//! stored one.
#![no_main]

use deskpulse_proto::delta;
use deskpulse_proto::v1::{Inventory, InventoryDelta};
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let mut frames = deskpulse_fuzz::frames(data);
    let (Some(base), Some(change)) = (frames.next(), frames.next()) else {
        return;
    };
    let (Ok(mut base), Ok(change)) = (Inventory::decode(base), InventoryDelta::decode(change))
    else {
        return;
    };
    delta::canonicalize(&mut base);
    let _ = delta::snapshot_hash(&base);
    if let Ok(mut result) = delta::apply(&base, &change) {
        delta::canonicalize(&mut result);
        let _ = delta::snapshot_hash(&result);
        let _ = delta::diff(&base, &result);
    }
});
