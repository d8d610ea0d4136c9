//! Webhook delivery against a loopback receiver.
