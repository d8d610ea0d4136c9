//! What a hostile enrolled agent can send on its session stream: a sequence
//! of `AgentMessage`s (frames), decoded as tonic decodes them, reports
//! joined from their parts by the same `Assembler` (under the default
//! inventory limits, counted on the wire) and checked by the same
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
    // The policy's default limits, as a session holds reports to them.
    let mut parts = Assembler::with_limits(
        MAX_AGENT_MESSAGE,
        deskpulse_collector::rules::policy::DEFAULT_INVENTORY_LIMITS,
    );
    for frame in deskpulse_fuzz::frames(data) {
        let Ok(message) = AgentMessage::decode(frame) else {
            return;
        };
        let report = match message.kind {
            Some(Kind::Report(report)) => parts.whole(report).map(Some),
            Some(Kind::ReportPart(part)) => parts.push(part),
            _ => Ok(None),
        };
        match report {
            Ok(Some(report)) => {
                let _ = validate("host-1", report);
            }
            Ok(None) => {}
            // Answered Rejected; the session goes on.
            Err(deskpulse_proto::parts::PartError::Refused { .. }) => {}
            // The session ends the stream here.
            Err(_) => return,
        }
    }
});
