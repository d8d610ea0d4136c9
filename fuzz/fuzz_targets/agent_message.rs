//! What a hostile enrolled agent can send on its session stream: a sequence
//! of `AgentMessage`s (frames), decoded as tonic decodes them, reports
//! joined from their parts by the same `Assembler` and checked by the same
//! `validate` as the collector's session (`server::agent`), including the
//! canonical form of an inventory and the facts taken from it.
#![no_main]

use deskpulse_collector::server::{MAX_AGENT_MESSAGE, agent::validate};
use deskpulse_proto::parts::Assembler;
use deskpulse_proto::v1::AgentMessage;
use deskpulse_proto::v1::agent_message::Kind;
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let mut parts = Assembler::new(MAX_AGENT_MESSAGE);
    for frame in deskpulse_fuzz::frames(data) {
        let Ok(message) = AgentMessage::decode(frame) else {
            return;
        };
        let report = match message.kind {
            Some(Kind::Report(report)) => parts.whole().map(|()| Some(report)),
            Some(Kind::ReportPart(part)) => parts.push(part),
            _ => Ok(None),
        };
        match report {
            Ok(Some(report)) => {
                let _ = validate("host-1", report);
            }
            Ok(None) => {}
            // The session ends the stream here.
            Err(_) => return,
        }
    }
});
