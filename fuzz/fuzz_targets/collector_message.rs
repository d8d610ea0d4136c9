//! What a compromised collector can send an agent: `CollectorMessage`s
//! decoded, and each diagnostic request put through the agent's own checks
//! (`catalog::check`) and, when they pass, planned for every platform, as
//! the agent's executor does before it runs anything.
#![no_main]

use deskpulse_agent::diagnostics::plan::{Platform, plan};
use deskpulse_proto::catalog;
use deskpulse_proto::v1::CollectorMessage;
use deskpulse_proto::v1::collector_message::Kind;
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let Ok(message) = CollectorMessage::decode(data) else {
        return;
    };
    let Some(Kind::RunDiagnostic(run)) = message.kind else {
        return;
    };
    let Some(params) = run.params else {
        return;
    };
    let _ = catalog::describe(&params);
    if catalog::check(&params).is_err() {
        return;
    }
    let root = std::path::Path::new("/nonexistent-fuzz-root");
    for platform in [Platform::Linux, Platform::Windows, Platform::Macos] {
        let _ = plan(&params, platform, root, &|_| true);
    }
});
