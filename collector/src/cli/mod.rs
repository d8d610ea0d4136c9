//! The technician CLI, `deskpulse`.
