//! Payload decoders, over the packet events' captured bytes: DNS messages
//! and transactions, QUIC long headers and Initials, and pcapng captures.

pub mod dns;
pub mod pcapng;
pub mod quic;
