//! Client-side helpers shared by the agent and the technician CLI: turning
//! transport errors and statuses into one readable line.
//!
//! With TLS 1.3 a client whose certificate the server refuses still
//! "connects"; its first call then fails with a vague "connection closed" or
//! "operation was canceled". [`describe_status`] says what that usually
//! means instead of passing the vague text on.

use std::error::Error;

/// The error and its whole `source()` chain as one line, without repeats.
pub fn describe_error(error: &(dyn Error + 'static)) -> String {
    let mut parts: Vec<String> = vec![error.to_string()];
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !parts.iter().any(|part| part.contains(&text)) {
            parts.push(text);
        }
        source = cause.source();
    }
    parts.join(": ").replace('\n', " ")
}

/// True when a status came from the transport rather than from the server's
/// own logic, so retrying later may help.
pub fn is_transport_failure(status: &tonic::Status) -> bool {
    if status.code() == tonic::Code::Unavailable {
        return true;
    }
    let mut source = status.source();
    while let Some(cause) = source {
        if cause.is::<tonic::transport::Error>() || cause.is::<std::io::Error>() {
            return true;
        }
        source = cause.source();
    }
    false
}

/// A status as one line, with a hint where the raw text is vague.
pub fn describe_status(status: &tonic::Status) -> String {
    let mut line = if status.message().is_empty() {
        format!("{:?}", status.code())
    } else {
        status.message().to_owned()
    };
    let mut source = status.source();
    while let Some(cause) = source {
        let text = describe_error(cause);
        if !line.contains(&text) {
            line = format!("{line}: {text}");
        }
        source = cause.source();
    }
    let lower = line.to_ascii_lowercase();
    let vague = [
        "connection closed",
        "operation was canceled",
        "broken pipe",
        "connection reset",
    ];
    if vague.iter().any(|v| lower.contains(v)) {
        line.push_str(
            " (the collector closed the connection; it may have refused this client's TLS certificate)",
        );
    }
    line.replace('\n', " ")
}
