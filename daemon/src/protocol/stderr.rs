//! The STDERR_* messages that precede every reply.
//!
//! After reading a request the daemon sends log messages (STDERR_NEXT), then
//! either STDERR_LAST followed by the reply, or STDERR_ERROR and no reply.
//! STDERR_ERROR has two layouts: before 1.26 a message and an exit status;
//! from 1.26 a structured error (type, level, name, message, position, traces).

use super::wire::WireBuf;
use super::ProtoVersion;

pub const STDERR_NEXT: u64 = 0x6f6c_6d67;
pub const STDERR_READ: u64 = 0x6461_7461;
pub const STDERR_WRITE: u64 = 0x6461_7416;
pub const STDERR_LAST: u64 = 0x616c_7473;
pub const STDERR_ERROR: u64 = 0x6378_7470;
pub const STDERR_START_ACTIVITY: u64 = 0x5354_5254;
pub const STDERR_STOP_ACTIVITY: u64 = 0x5354_4f50;
pub const STDERR_RESULT: u64 = 0x5253_4c54;

/// Verbosity level Nix attaches to an error (`lvlError`).
const LVL_ERROR: u64 = 0;

pub fn last(buf: &mut WireBuf) {
    buf.u64(STDERR_LAST);
}

/// A log line the client prints (it strips one trailing newline).
pub fn next(buf: &mut WireBuf, msg: &str) {
    buf.u64(STDERR_NEXT);
    let mut line = msg.to_owned();
    line.push('\n');
    buf.str(&line);
}

/// An error ending the current op, in the layout of the negotiated version.
pub fn error(buf: &mut WireBuf, version: ProtoVersion, msg: &str) {
    buf.u64(STDERR_ERROR);
    if version.at_least(26) {
        buf.str("Error").u64(LVL_ERROR).str("Error").str(msg).u64(0).u64(0);
    } else {
        buf.str(msg).u64(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(b: &[u8]) -> Vec<u64> {
        b.chunks(8).map(|c| u64::from_le_bytes(c.try_into().unwrap())).collect()
    }

    #[test]
    fn error_layout_from_1_26() {
        // Nix's `operator<<(Sink&, const Error&)`: "Error", level, "Error",
        // message, havePos=0, number of traces=0.
        let mut b = WireBuf::default();
        error(&mut b, ProtoVersion(38), "no");
        let w = words(&b.0);
        assert_eq!(w[0], STDERR_ERROR);
        assert_eq!(w[1], 5);
        assert_eq!(&b.0[16..21], b"Error");
        assert_eq!(w[3], 0);
        assert_eq!(w[4], 5);
        assert_eq!(w[6], 2);
        assert_eq!(&b.0[56..58], b"no");
        assert_eq!(&w[8..], &[0, 0]);
    }

    #[test]
    fn error_layout_before_1_26() {
        let mut b = WireBuf::default();
        error(&mut b, ProtoVersion(25), "bad");
        assert_eq!(
            words(&b.0),
            vec![STDERR_ERROR, 3, u64::from_le_bytes(*b"bad\0\0\0\0\0"), 1]
        );
    }

    #[test]
    fn next_appends_newline() {
        let mut b = WireBuf::default();
        next(&mut b, "hi");
        assert_eq!(words(&b.0)[1], 3);
    }
}
